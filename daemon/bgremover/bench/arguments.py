"""The arguments of `bgremover bench`; bgremover/main.py adds them to the one parser, bench/main.py runs the bench.

Only light modules here: the parser is built for every command, `--help` included.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bgremover.arguments import positive_argument
from bgremover.bench.slots import slot_counts_argument
from bgremover.formats import FORMAT_EXTENSIONS

HELP = "measure where the time goes, model to ZIP"
# The bench's own flags of these names measure something (--edges is its edge-quality measurement),
# so the settings of the same names get no flag here.
SPELLED_OTHERWISE = frozenset({"--format", "--model", "--edges"})


def add_bench_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--images", type=Path, metavar="DIR", help="use the images in DIR instead of generated ones")
    parser.add_argument(
        "--size",
        type=size_argument,
        metavar="WxH",
        help="size of the generated images (default 2000x1500; 320x240 with --soak)",
    )
    parser.add_argument(
        "--count", type=positive_argument, metavar="N", help="how many images (default 40; with --images, all of them)"
    )
    parser.add_argument(
        "-f", "--format", choices=sorted(FORMAT_EXTENSIONS), help="output format (default: the output_format setting)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as one JSON document")
    parser.add_argument(
        "--soak",
        type=positive_argument,
        metavar="N",
        help="push N small images through the daemon and watch the supervisor's memory",
    )
    parser.add_argument(
        "--options", action="store_true", help="measure each output option (background, crop, output, edges) instead"
    )
    parser.add_argument(
        "--rerender",
        action="store_true",
        help="run a session (100 images unless --count) through the daemon with one recipe, then time "
        "`bgremover rerender` of it with another, against the session's own time",
    )
    parser.add_argument(
        "--edges",
        action="store_true",
        help="measure edge quality instead: alpha and colour errors against a known truth, for each "
        "edges mode with decontamination off and on, with u2netp and isnet-small if fetched",
    )
    parser.add_argument(
        "--signals",
        action="store_true",
        help="measure the quality signals instead: each one's precision and recall on the project's labelled set; "
        "with --review-model NAME, the two models' disagreement and the escalation's quality and cost too",
    )
    parser.add_argument(
        "-m",
        "--model",
        metavar="NAME",
        help="compare model NAME with the bundled u2netp: time per image and mask agreement",
    )
    parser.add_argument(
        "--models",
        type=models_argument,
        metavar="NAME,NAME,...",
        help="each model's allowed backends and precisions through the daemon, beside `rembg p -m` the same model, "
        "on the same photos",
    )
    parser.add_argument(
        "--repeat",
        type=positive_argument,
        metavar="N",
        help="with --models: run each model's default path and rembg N times each, taking turns, and compare "
        "their medians (default 3)",
    )
    parser.add_argument("--keep", type=Path, metavar="DIR", help="work in DIR and keep it for inspection")
    parser.add_argument(
        "--slots",
        type=slot_counts_argument,
        metavar="N,N,...",
        help="run the daemon at each of these job_slots (whole numbers or auto, e.g. 1,2,auto) "
        "on the same images, beside the in-process loop",
    )
    parser.add_argument(
        "--workers",
        type=positive_argument,
        metavar="N",
        help="run the same images through one local job slot, N local slots, then the celery "
        "runner and N workers of one slot each on this machine (needs --broker or broker_url)",
    )
    parser.add_argument("--broker", metavar="URL", help="the Redis broker for --workers (default: broker_url)")


def models_argument(text: str) -> list[str]:
    """`--models u2netp,u2net`: model names, each once, in the order given."""
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    if not names:
        raise argparse.ArgumentTypeError(f"expected model names such as u2netp,u2net, got {text!r}")
    return names


def size_argument(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().replace("×", "x").partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 2000x1500, got {text!r}")
    return int(width), int(height)
