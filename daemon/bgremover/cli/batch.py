"""`bgremover remove IN... -o OUTDIR`: every image named or found under IN cut out into OUTDIR, without the daemon.

A folder is walked recursively, as the inbox is (images by their extension;
dot-folders and temporary names skipped), and each image keeps its path
relative to the folder named: photos/a/b.jpg -> OUTDIR/a/b.png. Outputs are
named as the daemon names its ZIP members (outbox/zips.py), so two inputs
never write one output. Each image runs as a JobSpec (runners/isolated.py, cli/jobs.py): in a fresh
process by default, or all in this process. A failure is one line naming the
image and why; the others go on, and the exit code is 1 if any failed.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from bgremover.cli.jobs import InProcessJobs, failure
from bgremover.contract import JobSpec, read_report
from bgremover.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from bgremover.formats import FORMAT_EXTENSIONS
from bgremover.intake.watcher import is_image_name, is_temporary_name
from bgremover.models.manifest import ModelError, ModelSpec, find_model_spec, subject_note
from bgremover.options import ImageOptions, values_of
from bgremover.outbox.zips import mask_member, member_name, member_with_mask
from bgremover.runners.api import RunnerError
from bgremover.runners.isolated import Ended, IsolatedJobs
from bgremover.settings import Settings
from bgremover.status import progress


@dataclass(frozen=True)
class Planned:
    """One image of the batch and where its outputs go."""

    source: Path  # as the user can find it: under the folder as they named it
    output: Path
    mask: Path | None  # with output "both", the mask beside the cutout
    member: str = ""  # the output's name under OUTDIR, as the daemon's ZIP would name it


def output_format(settings: Settings) -> str:
    """A mask alone is always a PNG (a matte must be lossless), as in the daemon."""
    return "png" if settings.output == "mask" else settings.output_format


def images_under(folder: Path, leave_out: Path) -> list[Path]:
    """The images in `folder` and its subfolders, sorted; `leave_out` (the output folder, if inside) is not walked."""
    found = []
    for top, folders, files in os.walk(folder):
        folders[:] = [
            name for name in folders if not name.startswith(".") and (Path(top) / name).resolve() != leave_out
        ]
        found += [Path(top) / name for name in files if is_image_name(name) and not is_temporary_name(name)]
    return sorted(found)


def gather(paths: list[Path], outdir: Path) -> tuple[list[tuple[Path, str]], list[Path]]:
    """(image, its name relative to what was named) for every input, and the paths that do not exist."""
    images, missing = [], []
    for path in paths:
        if path.is_dir():
            images += [(found, found.relative_to(path).as_posix()) for found in images_under(path, outdir.resolve())]
        elif path.exists():
            images.append((path, path.name))  # named on the command line: taken whatever its extension
        else:
            missing.append(path)
    return images, missing


def plan(images: list[tuple[Path, str]], outdir: Path, fmt: str, with_masks: bool) -> list[Planned]:
    """Where each image's outputs go: distinct names, in the order given (so the same inputs get the same names)."""
    extension, taken, planned = FORMAT_EXTENSIONS[fmt], set(), []
    for source, name in images:
        member = member_with_mask(name, extension, taken) if with_masks else member_name(name, extension, taken)
        mask = mask_member(member) if with_masks else None
        taken.update(filter(None, (member, mask)))
        planned.append(Planned(source, outdir / member, outdir / mask if mask else None, member))
    return planned


def job_spec(settings: Settings, model: ModelSpec, item: Planned, fmt: str, work: Path, index: int) -> JobSpec:
    options = ImageOptions(**{**values_of(settings), "output_format": fmt, "model": model.name})
    return JobSpec(
        input=item.source.absolute(), output=item.output.absolute(), report=work / f"{index}.json",
        log=work / f"{index}.log", options=options, mask=item.mask.absolute() if item.mask else None,
        models_dir=model.path.parent, threads=settings.threads, providers=tuple(settings.providers),
        **recipe_files(settings, item, work, index),
    )  # fmt: skip


def recipe_files(settings: Settings, item: Planned, work: Path, index: int) -> dict:
    """With recipes: each recipe's file into OUTDIR as the daemon's ZIP names it (RECIPE/FOLDER/NAME)."""
    if not settings.recipes:
        return {}
    outdir = item.output.absolute().parents[len(item.member.split("/")) - 1]
    return {"renders": work / f"{index}.render", "member": item.member, "index": index + 1, "loose": outdir}


class Progress:
    """The bar on a terminal's stderr, redrawn after each image; failure lines print above it."""

    def __init__(self, total: int, stream: TextIO, started: float) -> None:
        self.total, self.stream, self.started = total, stream, started
        self.finished_at: list[float] = []
        self.failed = 0
        self.drawn = False

    def finished(self, now: float, failed: bool) -> None:
        self.finished_at.append(now)
        self.failed += failed
        self.draw(now)

    def draw(self, now: float) -> None:
        self.stream.write(
            "\r"
            + progress_line(len(self.finished_at), self.total, self.failed, [self.started, *self.finished_at], now)
            + "\x1b[K"
        )
        self.stream.flush()
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")

    def end(self) -> None:
        if self.drawn:
            self.stream.write("\n")


def progress_line(finished: int, total: int, failed: int, moments: list[float], now: float) -> str:
    """`[#####...............]  10/40  1 failed  rate 1.2/s  ETA 25s`.

    `moments` starts with the batch's start: unlike a daemon's session, the
    batch is worked on from its first moment, so the rate counts from there.
    """
    rate = progress.rate_per_second(moments, now)
    eta = progress.eta_seconds(total - finished, rate)
    failures = f"  {failed} failed" if failed else ""
    return (
        f"{progress.bar(finished, total)}  {finished}/{total}{failures}  rate {progress.rate_text(rate)}  "
        f"ETA {progress.duration_text(eta)}"
    )


def remove_all(settings: Settings, paths: list[Path], outdir: Path, in_process: bool) -> int:
    """The `remove IN... -o OUTDIR` command."""
    from bgremover.supervisor.dispatch import variant_request

    try:
        model = find_model_spec(settings.model, settings.models_folder)
    except ModelError as exc:
        return fail(str(exc), EXIT_USAGE)
    if note := subject_note(model):
        print(f"note: {note}", file=sys.stderr)  # before any image, as the daemon's log says it at a session's start
    fmt = output_format(settings)
    images, missing = gather(paths, outdir)
    for path in missing:
        fail(f"{path}: no such file or folder", EXIT_FAILED)
    planned = plan(images, outdir, fmt, settings.output == "both")
    jobs = InProcessJobs(settings) if in_process else IsolatedJobs(settings)
    try:
        jobs.start(variant_request(model, values_of(settings)))
    except RunnerError as exc:  # a provider, an encoder, the model: nothing could run here
        jobs.close()
        return fail(f"cannot start: {exc}", EXIT_USAGE)
    try:
        failed = run_all(settings, model, planned, fmt, jobs)
    except RunnerError as exc:
        return fail(f"stopped: {exc}", EXIT_FAILED)
    except KeyboardInterrupt:
        return fail("interrupted; the images not yet cut out were left as they are", EXIT_FAILED)
    finally:
        jobs.close()
    print(
        f"{len(planned) - failed} of {len(planned)} images cut out into {outdir}"
        + (f"; {failed} failed" if failed else "")
    )
    return EXIT_FAILED if failed or missing else EXIT_OK


def run_all(settings: Settings, model: ModelSpec, planned: list[Planned], fmt: str, jobs) -> int:
    """Each image in turn; returns how many failed."""
    bar = Progress(len(planned), sys.stderr, time.monotonic()) if sys.stderr.isatty() and planned else None
    failed = 0
    if bar:
        bar.draw(time.monotonic())
    with tempfile.TemporaryDirectory(prefix="bgremover-batch-") as work:
        try:
            for index, item in enumerate(planned):
                reason = run_one(settings, job_spec(settings, model, item, fmt, Path(work), index), jobs)
                if reason is not None:
                    failed += 1
                    if bar:
                        bar.clear()
                    fail(f"{item.source}: {reason}", EXIT_FAILED)
                if bar:
                    bar.finished(time.monotonic(), reason is not None)
        finally:
            if bar:
                bar.end()
    return failed


def run_one(settings: Settings, spec: JobSpec, jobs) -> str | None:
    """Why this image failed, or None once its outputs are written."""
    try:
        spec.output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return f"cannot make the folder {spec.output.parent}: {exc.strerror or exc}"
    ended: Ended = jobs.run(spec)
    return failure(ended, spec, read_report(spec.report), settings)
