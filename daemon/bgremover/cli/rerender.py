"""`bgremover rerender SESSION --recipe NAMES [-o OUTDIR]`: new recipes for a whole session, with no model.

Each done item of a session run with recipes keeps its matte (the photo and its
mask, state/mattes/ID.png) for as long as the session is kept. A rerender reads
those and renders the recipes named into OUTDIR (by default the session's loose
tree, outbox/SESSION/, which goes with the session's ZIP), named as the
daemon's ZIP names recipe files: RECIPE/FOLDER/NAME, each renamed into place
whole. It only reads the queue, so it runs beside the daemon, or without it.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from functools import cache
from pathlib import Path

from bgremover.exits import EXIT_FAILED, EXIT_OK, EXIT_USAGE, fail
from bgremover.job import renders
from bgremover.queue.spool import Spool
from bgremover.queue.states import Status
from bgremover.queue.store import Store
from bgremover.settings import Settings


def rerender(settings: Settings, args: argparse.Namespace) -> int:
    if not settings.recipes:
        return fail("rerender needs the recipes to render: --recipe NAMES (comma-separated)", EXIT_USAGE)
    try:
        renders.load(settings.recipes, settings.recipes_file)  # a typo is said once, before any work
    except renders.Unusable as exc:
        return fail(str(exc), EXIT_USAGE)
    work = mattes_of(settings, args.session)
    if isinstance(work, str):
        return fail(work, EXIT_FAILED)
    outdir = args.output_dir or settings.outbox / args.session
    started = time.perf_counter()
    entries = render_all(work, settings, args.session, outdir, args.jobs or os.cpu_count() or 1)
    return summary(entries, len(work), outdir, time.perf_counter() - started)


def mattes_of(settings: Settings, name: str) -> list[tuple[Path, str, int]] | str:
    """(matte, ZIP member, place in the session) of each done item, or why the session cannot be rerendered."""
    if not settings.database.exists():
        return f"no sessions yet under {settings.root}"
    store = Store(settings.database, readonly=True)
    try:
        session = store.session(name)
        items = store.items(name) if session is not None else []
    finally:
        store.close()
    if session is None:
        return f"no session named '{name}'"
    spool = Spool(settings.root)
    done = [(spool.matte(item), item.member, n) for n, item in enumerate(items, 1) if item.status is Status.DONE]
    kept = [one for one in done if one[0].is_file()]
    if not kept:
        return (
            f"session '{name}' has no kept mattes to render from: only a session run with recipes keeps them, "
            "and only as long as the session is kept (keep_sessions_days)"
        )
    return kept


def render_all(work: list, settings: Settings, session: str, outdir: Path, jobs: int) -> list[list[dict]]:
    """Each item's entries, in the session's order; on `jobs` processes (the renderer is numpy and Pillow)."""
    tasks = [
        (matte, member, index, session, settings.recipes, settings.recipes_file, outdir)
        for matte, member, index in work
    ]
    if jobs <= 1 or len(tasks) <= 1:
        return [render_one(*task) for task in tasks]
    with ProcessPoolExecutor(min(jobs, len(tasks))) as pool:
        return list(pool.map(render_one, *zip(*tasks), chunksize=max(1, len(tasks) // (jobs * 4))))


@cache
def recipes_named(names: str, user_file: str | None) -> list:
    return renders.load(names, user_file)


def render_one(matte: Path, member: str, index: int, session: str, names: str, user_file, outdir: Path) -> list[dict]:
    rgba, icc = renders.read_matte(matte)

    def write(number: int, name: str, data: bytes) -> None:
        renders.deliver(outdir, name, data)

    return renders.render_each(
        rgba, icc, recipes_named(names, user_file), renders.Naming(member, session, index), write
    )


def summary(entries: list[list[dict]], images: int, outdir: Path, seconds: float) -> int:
    """One line per file that failed or is not compliant, then one line for the whole; 1 if any failed."""
    files = [entry for per_item in entries for entry in per_item]
    failed = [entry for entry in files if entry["file"] is None]
    refused = [entry for entry in files if entry["file"] and not (entry["report"] or {}).get("compliant", False)]
    for entry in failed:
        fail(entry["error"], EXIT_FAILED)
    for entry in refused:
        print(f"bgremover: {entry['file']}: not compliant: {entry['report'].get('reason')}", file=sys.stderr)
    per_image = seconds * 1000 / images if images else 0.0
    print(
        f"rerendered {images} images into {outdir}: {len(files) - len(failed)} files, {len(refused)} not compliant, "
        f"{len(failed)} failed, in {seconds:.2f} s ({per_image:.0f} ms an image); no inference"
    )
    return EXIT_FAILED if failed else EXIT_OK
