"""Session ZIPs written on threads of their own, so the supervisor's loop never waits for one.

A ZIP of large cutouts is gigabytes: written on the loop, it would hold every
job's reaping and starting, and the watchdog's ping, for as long as the disk
takes. So the loop hands a Build (what to write, decided already) to the
builder and comes back for the Built on a later pass; a finished build wakes
it. A build thread only writes, through zips.write_zip (temp file, fsync,
rename, fsync of the folder): it reads no database and decides nothing.

A stop abandons the builds in flight within one chunk, and their temp files
are removed; after a kill -9 the next start removes them (recovery's
durable.remove_temp_files), and the session, still processing, is built again.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from bgremover.outbox import zips

log = structlog.get_logger()

BUILDS_AT_ONCE = 2  # a small session's ZIP need not wait behind a gigabyte one; more would only share one disk
STOP_WAIT_SECONDS = 10.0  # an abandoned build stops within a chunk, unless the disk itself hangs


@dataclass(frozen=True)
class Build:
    """One session's ZIP as the loop decided it: its members (arcname, source) and the ZIP they may come from."""

    session: str
    path: Path
    members: tuple[tuple[str, Path | None], ...]
    previous: Path | None


@dataclass(frozen=True)
class Built:
    """A build's end: `error` is None when the ZIP is in place."""

    build: Build
    error: Exception | None
    seconds: float
    submitted: float  # when the loop handed it over (monotonic): what its outcome says of the outbox dates from then


class ZipBuilder:
    """Writes each Build on a thread of its own, at most BUILDS_AT_ONCE at a time, one per session."""

    def __init__(self, wake: Callable[[], None]) -> None:
        self._wake = wake
        self._abandon = threading.Event()
        self._threads: dict[str, threading.Thread] = {}  # by session; touched only by the caller's thread
        self._finished: queue.SimpleQueue[Built] = queue.SimpleQueue()

    def building(self, session: str) -> bool:
        return session in self._threads

    def busy(self) -> bool:
        """Whether any ZIP is being written (or has ended and is not yet collected)."""
        return bool(self._threads)

    def has_room(self) -> bool:
        return len(self._threads) < BUILDS_AT_ONCE

    def submit(self, build: Build) -> None:
        if build.session in self._threads:
            raise RuntimeError(f"the ZIP of {build.session} is being written already")
        # A daemon thread: a disk that hangs must not keep the process from exiting at stop.
        thread = threading.Thread(
            target=self._write, args=(build, time.monotonic()), name=f"zip-{build.session}", daemon=True
        )
        self._threads[build.session] = thread
        thread.start()

    def collect(self) -> list[Built]:
        """The builds that ended since the last call; never waits."""
        ended = []
        while True:
            try:
                built = self._finished.get_nowait()
            except queue.Empty:
                return ended
            self._threads.pop(built.build.session).join()  # it has put its last word: the join is immediate
            ended.append(built)

    def wait(self) -> bool:
        """Until every build not yet collected has ended (False if there was none); never called by the loop."""
        for thread in list(self._threads.values()):
            thread.join()
        return bool(self._threads)

    def close(self) -> None:
        """At stop: builds in flight are abandoned, their temp files removed; what they were is forgotten."""
        self._abandon.set()
        deadline = time.monotonic() + STOP_WAIT_SECONDS
        for session, thread in self._threads.items():
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                log.warning("zip_build_left", session=session, note="its temp file is removed at the next start")
        for built in self.collect():
            if isinstance(built.error, zips.Abandoned):
                log.info("zip_build_abandoned", session=built.build.session, note="written again at the next start")
        self._threads.clear()

    def _write(self, build: Build, submitted: float) -> None:
        """On the build's own thread: the ZIP, then the outcome for the loop, then the loop woken."""
        started = time.monotonic()
        error: Exception | None = None
        try:
            zips.write_zip(build.path, build.members, build.previous, self._abandon.is_set)
        except Exception as exc:  # noqa: BLE001 - every failure is the loop's to judge
            error = exc
        self._finished.put(Built(build, error, time.monotonic() - started, submitted))
        self._wake()
