"""The bodies of this client's `bgremover` commands; cli/arguments.py declares their arguments, these act.

`retry` and `cancel` only touch the marker files the daemon watches, so they
work the same whether the daemon runs now or starts later.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import time
import tomllib
from pathlib import Path

from bgremover import durable
from bgremover.cli.flags import given
from bgremover.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from bgremover.queue.store import Store
from bgremover.review import record, requests
from bgremover.settings import Settings
from bgremover.status.markers import cancel_marker, retry_marker, retry_targets, touch


def run(settings: Settings, args: argparse.Namespace) -> int:
    # Only light modules here: the supervisor never imports numpy or onnxruntime
    # itself (the fork server does), which keeps its own memory small.
    from bgremover.models.manifest import ModelError, find_model_spec
    from bgremover.runners.api import RunnerError
    from bgremover.service.metrics import MetricsUnavailable
    from bgremover.service.rootlock import RootLocked
    from bgremover.supervisor.loop import Supervisor

    try:
        model = find_model_spec(settings.model, settings.models_folder)
    except ModelError as exc:
        return fail(str(exc), EXIT_USAGE)

    def say_where() -> None:
        print(f"bgremover: drop images into {settings.inbox}; results appear in {settings.outbox}", file=sys.stderr)

    try:
        return Supervisor(settings, model).run(on_ready=say_where)
    except RunnerError as exc:  # the job processes cannot start: a provider, an encoder, the model
        return fail(f"cannot start: {exc}", EXIT_USAGE)
    except RootLocked as exc:
        return fail(f"{exc}; stop it first, or give this one another --root", EXIT_USAGE)
    except MetricsUnavailable as exc:  # metrics_port taken, or metrics_textfile not writable
        return fail(str(exc), EXIT_USAGE)


def open_store(settings: Settings) -> Store | None:
    if not settings.database.exists():
        return None
    return Store(settings.database, readonly=True)


def status(settings: Settings, args: argparse.Namespace) -> int:
    from bgremover.status import view as statusview

    def frame() -> str:
        every = args.interval if args.follow else None
        return statusview.frame(settings, args.session, args.json, every, time.time(), args.page)

    try:
        if not args.follow:
            sys.stdout.write(frame())
            return EXIT_OK
        # JSON lines are a stream for scripts: never redrawn, one document per line.
        redraw = sys.stdout.isatty() and not args.json
        statusview.follow(
            frame,
            sys.stdout,
            args.interval,
            redraw=redraw,
            separator="" if args.json else "\n",
            screen=shutil.get_terminal_size,
        )
    except statusview.UnknownSession as exc:
        return fail(str(exc), EXIT_FAILED)
    except sqlite3.Error as exc:
        return fail(f"cannot read {settings.database}: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:  # Ctrl-C is how --follow ends, not a failure
        return EXIT_OK
    except BrokenPipeError:  # `status --follow | head`: the reader has seen enough
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so the flush at exit cannot fail again
        return EXIT_OK
    return EXIT_OK


def retry(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings)
    if store is None:
        return fail(f"no sessions yet under {settings.root}", EXIT_FAILED)
    try:
        session, items = retry_targets(store, args.session, args.name)
    finally:
        store.close()
    if session is None:
        return fail(f"no session named '{args.session}'", EXIT_FAILED)
    if items is None:
        return fail(f"session '{args.session}' has no item named '{args.name}'", EXIT_FAILED)
    if not items:
        return fail("nothing to retry: only failed or cancelled items can be retried", EXIT_FAILED)
    for item in items:
        touch(retry_marker(settings, item))
        print(f"retry requested: {item.session}/{item.name}")
    return EXIT_OK


def review(settings: Settings, args: argparse.Namespace) -> int:
    """`review list|approve|retry|mask`: the flagged items, or a decision written as a marker the daemon reads."""
    store = open_store(settings)
    if store is None:
        return fail(f"no sessions yet under {settings.root}", EXIT_FAILED)
    try:
        if args.action == "list":
            return list_flagged(store, args)
        return decide(settings, store, args)
    except requests.ReviewRefused as exc:
        return fail(str(exc), EXIT_FAILED)
    finally:
        store.close()


def list_flagged(store: Store, args: argparse.Namespace) -> int:
    if args.session is not None and store.session(args.session) is None:
        return fail(f"no session named '{args.session}'", EXIT_FAILED)
    items = requests.flagged(store, None if args.session is None else [args.session])
    if args.json:
        print(json.dumps([{"session": i.session, "name": i.name, **record.loaded(i.review)} for i in items], indent=1))
        return EXIT_OK
    for item in items:
        print(f"{item.session}/{item.name}")
        for reason in record.loaded(item.review)["reasons"]:
            print(f"  {reason['code']}: {reason['reason']}")
    if not items:
        print("no flagged items wait for a review")
    return EXIT_OK


def decide(settings: Settings, store: Store, args: argparse.Namespace) -> int:
    if args.action == "approve":
        requests.approve(settings, store, args.session, args.name, args.by)
    elif args.action == "retry":
        options = dict(parsed_option(text) for text in args.options)
        options.update({key: value for key, value in (("model", args.model), ("edges", args.edges)) if value})
        requests.retry(settings, store, args.session, args.name, options, args.by)
    else:
        try:
            mask = args.file.read_bytes()
        except OSError as exc:
            return fail(f"cannot read the mask {args.file}: {exc.strerror or exc}", EXIT_FAILED)
        requests.correct(settings, store, args.session, args.name, mask)
    print(f"{args.action} requested: {args.session}/{args.name}")
    return EXIT_OK


def parsed_option(text: str) -> tuple[str, object]:
    """KEY=VALUE as a ticket's TOML would read VALUE: true, false, a number, else the text itself."""
    key, equals, value = text.partition("=")
    if not equals or not key.strip():
        raise requests.ReviewRefused(f"--set takes KEY=VALUE, got {text!r}")
    try:
        return key.strip(), tomllib.loads(f"value = {value.strip()}")["value"]
    except tomllib.TOMLDecodeError:
        return key.strip(), value.strip()


def cancel(settings: Settings, args: argparse.Namespace) -> int:
    store = open_store(settings)
    known = store is not None and store.session(args.session) is not None
    if store is not None:
        store.close()
    if not known:
        return fail(f"no session named '{args.session}'", EXIT_FAILED)
    touch(cancel_marker(settings, args.session))
    print(f"cancel requested: {args.session}")
    return EXIT_OK


def remove(settings: Settings, args: argparse.Namespace) -> int:
    """One image (INPUT OUTPUT, either may be -), or many (IN... -o OUTDIR, cli/batch.py)."""
    if args.output_dir is not None:
        from bgremover.cli import batch

        return batch.remove_all(settings, [Path(path) for path in args.paths], args.output_dir, args.in_process)
    if len(args.paths) != 2:
        return fail("remove takes INPUT OUTPUT for one image, or IN... -o OUTDIR for many", EXIT_USAGE)
    source, target = args.paths
    if "-" in (source, target):
        return remove_streamed(settings, source, target)
    if given(args, "output_format"):
        from bgremover.formats import format_for_path

        with contextlib.suppress(ValueError):  # an unknown extension is refused below, as always
            if format_for_path(target) != settings.output_format:
                return fail(
                    f"-f {settings.output_format} and OUTPUT {target} name different formats: "
                    "OUTPUT's extension picks the format of one image",
                    EXIT_USAGE,
                )
    return remove_one(settings, Path(source), Path(target))


def remove_streamed(settings: Settings, source: str, target: str) -> int:
    """`remove - -` and the like: the image from stdin, or the cutout to stdout (a PNG unless -f says otherwise)."""
    from bgremover.cli.batch import output_format
    from bgremover.formats import FORMAT_EXTENSIONS

    if target == "-" and settings.output == "both":
        return fail("output both writes two files, which stdout cannot hold: give OUTPUT a file name", EXIT_USAGE)
    with tempfile.TemporaryDirectory(prefix="bgremover-") as folder:
        src = Path(source) if source != "-" else Path(folder) / "stdin"
        if source == "-":
            src.write_bytes(sys.stdin.buffer.read())
        dst = Path(target) if target != "-" else Path(folder) / f"stdout{FORMAT_EXTENSIONS[output_format(settings)]}"
        code = remove_one(settings, src, dst, shown="stdin" if source == "-" else None, announce=target != "-")
        if code != EXIT_OK or target != "-":
            return code
        try:
            sys.stdout.buffer.write(dst.read_bytes())
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # the reader has gone: nothing more to say to it
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_FAILED
    return EXIT_OK


def remove_one(settings: Settings, source: Path, output: Path, shown: str | None = None, announce: bool = True) -> int:
    """One image in this process; OUTPUT's extension picks the format. `shown` names the input in messages."""
    from bgremover.imaging import matting
    from bgremover.job.renders import Unusable
    from bgremover.outbox import zips as outbox

    shown = shown or str(source)
    try:
        fmt = matting.format_for_path(output)
        matting.ensure_encoder(fmt)
        model = matting.find_model_spec(settings.model, settings.models_folder)
    except (ValueError, matting.ModelError, matting.EncoderUnavailable) as exc:
        return fail(str(exc), EXIT_USAGE)
    # Written beside OUTPUT and renamed last: OUTPUT is never a half-written image, even after a power cut.
    temp = durable.temp_path(output)
    options = matting.Options.from_settings(settings, fmt)
    mask = output.with_name(outbox.mask_member(output.name)) if options.output == "both" else None
    mask_temp = durable.temp_path(mask) if mask else None
    entries: list[dict] = []
    try:
        then = recipes_beside(settings, output, entries)
        session = matting.create_session(model, settings.threads, settings.providers)
        outcome = matting.remove_background(source, temp, session, model, options, mask_temp, then)
        if mask:
            durable.publish(mask_temp, mask)
            if announce:
                print(f"wrote {mask}")
        durable.publish(temp, output)
        if outcome.note:
            print(f"bgremover: {shown}: {outcome.note}", file=sys.stderr)
    except matting.BadInput as exc:
        return fail(f"{shown}: {exc}", EXIT_FAILED)
    except (matting.ModelError, matting.EncoderUnavailable, Unusable) as exc:
        return fail(str(exc), EXIT_USAGE)
    except OSError as exc:
        return fail(f"{exc.filename or shown}: {exc.strerror or exc}", EXIT_FAILED)
    finally:
        temp.unlink(missing_ok=True)
        if mask_temp:
            mask_temp.unlink(missing_ok=True)
    if announce:
        print(f"wrote {output}")
    return said_recipes(entries, output.parent, shown, announce)


def recipes_beside(settings: Settings, output: Path, entries: list[dict]):
    """With recipes: each one rendered from the same cutout, its file beside OUTPUT as its template names it."""
    from bgremover.job import renders
    from bgremover.settings import usable_cores

    if not settings.recipes:
        return None
    recipes = renders.load(settings.recipes, settings.recipes_file)  # before the model runs: a typo costs nothing

    def write(number: int, member: str, data: bytes) -> None:
        renders.deliver(output.parent, member.rpartition("/")[2], data)

    def then(rgba, icc, lap) -> None:
        threads = settings.threads or usable_cores()
        entries.extend(renders.render_each(rgba, icc, recipes, renders.Naming(output.name), write, threads))

    return then


def said_recipes(entries: list[dict], folder: Path, shown: str, announce: bool) -> int:
    """A line per recipe's file (and why one is not compliant); 1 if a recipe could not be rendered."""
    for entry in entries:
        if entry["file"] is None:
            fail(f"{shown}: {entry['error']}", EXIT_FAILED)
            continue
        path = folder / entry["file"].rpartition("/")[2]
        if announce:
            print(f"wrote {path}")
        report = entry["report"] or {}
        if not report.get("compliant", False):
            print(f"bgremover: {path}: not compliant with {entry['recipe']}: {report.get('reason')}", file=sys.stderr)
    return EXIT_FAILED if any(entry["file"] is None for entry in entries) else EXIT_OK


def rerender(settings: Settings, args: argparse.Namespace) -> int:
    from bgremover.cli.rerender import rerender as run_rerender

    return run_rerender(settings, args)


def import_models(folder: Path, args: argparse.Namespace) -> int:
    """`models import`: 1 if any file was refused (each said in one line), the others imported all the same."""
    from bgremover.models import importing, rembg

    if not args.paths and not args.from_rembg:
        return fail("models import needs model files (PATH...) or --from-rembg", EXIT_USAGE)
    paths = [*args.paths, *(importing.rembg_files(rembg.home()) if args.from_rembg else [])]
    if not paths:
        return fail(f"there are no files in {rembg.home()} to import", EXIT_FAILED)
    refused = importing.import_files(paths, folder, args.trust_name, refuse=lambda line: fail(line, EXIT_FAILED))
    return EXIT_FAILED if refused else EXIT_OK


def check_model(settings: Settings, args: argparse.Namespace) -> int:
    """`models verify` and `models quantize` (which verifies what it registered): 1 if no variant passed."""
    from bgremover.tuning import agreement, quantizing

    folder = settings.models_folder
    if args.action == "quantize" and quantizing.quantize(args.name, folder) is None:
        return EXIT_FAILED
    agreement.verify(args.name, folder, cache_dir=settings.compile_cache)
    return EXIT_OK


def models(settings: Settings, args: argparse.Namespace) -> int:
    from bgremover.models import fetch
    from bgremover.models.manifest import ModelError

    folder = settings.models_folder
    try:
        if args.action == "list":
            sys.stdout.write(fetch.listing(folder))
        elif args.action == "fetch":
            fetch.fetch(args.name, folder, args.given)
        elif args.action == "import":
            return import_models(folder, args)
        elif args.action in ("verify", "quantize"):
            return check_model(settings, args)
        else:
            fetch.remove(args.name, folder)
            if settings.model == args.name:
                print(
                    f"note: the model setting still names {args.name}; choose another model before the daemon "
                    "next starts, or fetch this one again"
                )
    except ModelError as exc:  # an unknown or bundled name, a broken manifest: the user's to fix
        return fail(str(exc), EXIT_USAGE)
    except fetch.FetchError as exc:
        return fail(str(exc), EXIT_FAILED)
    except OSError as exc:  # the models folder cannot be written
        return fail(f"{exc.filename or folder}: {exc.strerror or exc}", EXIT_FAILED)
    return EXIT_OK


def worker(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.broker_url:
        return fail(
            "bgremover worker needs the broker: broker_url_file, BGREMOVER_BROKER_URL or --broker URL, "
            "say redis://host:6379/0",
            EXIT_USAGE,
        )
    try:
        from bgremover.runners.celery.worker import WorkerRefused, serve
    except ImportError as exc:
        return fail(f"bgremover worker needs Celery: pip install 'bgremover[cluster]' ({exc})", EXIT_USAGE)
    try:
        serve(settings, args.slots, args.name)
    except WorkerRefused as exc:
        return fail(str(exc), EXIT_USAGE)
    return EXIT_OK
