"""The inbox watcher: it records what changed and wakes the supervisor; it decides nothing.

Watchdog runs its handlers on the observer's thread, so the handler here only
records paths and calls wake(). The supervisor's loop calls ready(now), which
turns those records into files that have stopped changing. A `created` event
fires before the file is written (watchdog issue #586), so no event is taken to
mean "complete": only a size and mtime that hold still for stable_seconds, in a
file that no process holds open for writing, are. A writer may pause longer
than stable_seconds (an SMB client that preallocates, a Wi-Fi stall), so the
open file is asked for a read lease, which the kernel refuses while anyone has
it open for writing; and the (inode, size, mtime) seen stable is checked again
at the take.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import math
import os
import signal
import stat
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import NamedTuple

import structlog
from watchdog.events import (
    EVENT_TYPE_CLOSED_NO_WRITE,
    EVENT_TYPE_MODIFIED,
    EVENT_TYPE_OPENED,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer

from bgremover.intake.tickets import TICKET_NAME

log = structlog.get_logger()
# Where watchdog reports that the kernel's inotify queue overflowed.
WATCHDOG_INOTIFY_LOG = logging.getLogger("watchdog.observers.inotify_c")

# Content decides how a file is decoded; the name only decides whether it is
# taken. ".hif" is what Canon's cameras name their HEIF files; pillow-heif
# reads them like a phone's .heic.
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".webp", ".avif", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif", ".hif"}
)
TEMPORARY_SUFFIXES = (".part", ".crdownload", ".tmp")

# Opening or reading a file changes nothing in it, and our own jobs read inbox
# files: recording those events would put a finished file back on the watch list.
READ_ONLY_EVENTS = frozenset({EVENT_TYPE_OPENED, EVENT_TYPE_CLOSED_NO_WRITE})


def is_temporary_name(name: str) -> bool:
    """A name that browsers, rsync, Office or editors use while a file is still being written."""
    lowered = name.lower()
    return name.startswith((".", "~$")) or lowered.endswith(TEMPORARY_SUFFIXES)


def is_image_name(name: str) -> bool:
    return os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS


# A lease held for the instant of a probe can still be broken by a writer opening
# the file then; the kernel signals the holder, with SIGIO (which kills) unless
# told otherwise. SIGURG is ignored by default and this daemon has no other use for it.
F_SETSIG = getattr(fcntl, "F_SETSIG", 10)
LEASE_BREAK_SIGNAL = signal.SIGURG


def open_for_writing(path: Path) -> bool:
    """Whether some process holds the file open for writing, as far as the kernel's leases tell.

    A read lease is refused (EAGAIN) while any process has the file open for
    writing. Where leases cannot be had (a network filesystem, a file of
    another user without CAP_LEASE) the answer is False: only stability counts.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        return exc.errno == errno.EWOULDBLOCK  # another holder's lease: someone is working on it
    try:
        fcntl.fcntl(fd, F_SETSIG, LEASE_BREAK_SIGNAL)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_RDLCK)
        fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    except OSError as exc:
        return exc.errno == errno.EAGAIN
    finally:
        os.close(fd)  # releases a lease still held
    return False


def _identity(info: os.stat_result) -> tuple[int, int, int, int]:
    return (info.st_dev, info.st_ino, info.st_size, info.st_mtime_ns)


class _Candidate(NamedTuple):
    size: int
    mtime_ns: int
    since: float  # monotonic time at which this size and mtime were first seen


class _Recorder(FileSystemEventHandler):
    """Runs on the observer's thread: records the paths an event names, then wakes the loop."""

    def __init__(self, record: Callable[..., None], wake: Callable[[], None]) -> None:
        self._record = record
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in READ_ONLY_EVENTS:
            return
        # A folder's own "modified" fires for every file added to it; the file has
        # its own event, and recording the folder would make each tick walk all of it.
        if event.is_directory and event.event_type == EVENT_TYPE_MODIFIED:
            return
        self._record(event.src_path, event.dest_path)
        self._wake()


class _Waker(FileSystemEventHandler):
    """For the marker folders: a change there is noted by its path and wakes the loop, which reads the markers itself."""

    def __init__(self, note: Callable[..., None], wake: Callable[[], None]) -> None:
        self._note = note
        self._wake = wake

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in READ_ONLY_EVENTS:
            self._note(event.src_path, event.dest_path)
            self._wake()


class _OverflowAlarm(logging.Handler):
    """Hears watchdog say the kernel's inotify queue overflowed (events were lost).

    Watchdog tells no handler about an overflow; it only logs it. The loop then
    walks the inbox at once instead of at its next periodic rescan.
    """

    def __init__(self, raised: threading.Event, wake: Callable[[], None]) -> None:
        super().__init__(logging.WARNING)
        self._raised = raised
        self._wake = wake

    def emit(self, record: logging.LogRecord) -> None:
        if "overflow" in record.getMessage().lower():
            self._raised.set()
            self._wake()


class Intake:
    """Finds files in the inbox that have stopped changing.

    Only the recorded-path set is shared with the observer's thread (under a
    lock); everything else belongs to the thread that calls ready() and rescan().
    """

    def __init__(
        self,
        inbox: Path,
        stable_seconds: float,
        wake: Callable[[], None],
        also_watch: Sequence[Path] = (),
    ) -> None:
        # abspath, not resolve(): watchdog reports paths under the name it was
        # given, and resolving would follow a symlinked inbox to another name.
        self.inbox = Path(os.path.abspath(inbox))
        self.stable_seconds = stable_seconds
        self._wake = wake
        self._also_watch = [Path(os.path.abspath(folder)) for folder in also_watch]
        self._lock = threading.Lock()
        self._recorded: set[Path] = set()
        self._noted: set[Path] = set()  # paths changed in the also-watched folders, under the same lock
        self._candidates: dict[Path, _Candidate] = {}
        self._reported: set[Path] = set()  # paths already warned about, so a rescan stays quiet
        self._seen_stable: dict[Path, tuple[int, int, int, int]] = {}  # ready() returned them as these
        self._observer: Observer | None = None
        self._overflowed = threading.Event()
        self._alarm = _OverflowAlarm(self._overflowed, wake)

    def start(self) -> None:
        if self._observer is not None:
            raise RuntimeError("intake already started")  # a second observer would leak the first
        WATCHDOG_INOTIFY_LOG.addHandler(self._alarm)
        observer = Observer()
        observer.schedule(_Recorder(self._record, self._wake), str(self.inbox), recursive=True)
        waker = _Waker(self._note, self._wake)
        for folder in self._also_watch:
            observer.schedule(waker, str(folder), recursive=True)
        try:
            observer.start()
        except BaseException:
            # Emitters started before the failing one are running threads; stop()
            # joins them. The observer's own thread never started, so no join().
            observer.stop()
            raise
        self._observer = observer

    def stop(self) -> None:
        WATCHDOG_INOTIFY_LOG.removeHandler(self._alarm)
        observer, self._observer = self._observer, None
        if observer is not None:
            observer.stop()
            observer.join()

    def rescan(self) -> None:
        """Record every file in the inbox, for files no event told us about."""
        self._record(*_walk(self.inbox))

    def events_lost(self) -> bool:
        """Whether the kernel dropped events since the last call (its inotify queue overflowed)."""
        lost = self._overflowed.is_set()
        self._overflowed.clear()
        return lost

    def changed_in_watched(self) -> set[Path]:
        """The paths in the also-watched folders that events named since the last call."""
        with self._lock:
            noted, self._noted = self._noted, set()
        return noted

    def ready(self, now: float, limit: int | None = None) -> list[Path]:
        """Files unchanged for stable_seconds, sorted; each is returned once and then forgotten.

        At most `limit` of them: the others stay watched, and seconds_until_due
        says they are due, so the caller's next call returns them.
        """
        # In name order, so that batches follow it too: a folder's first files by name fill its first session.
        for path in sorted(self._drain(), key=str):
            self._consider(path, now)
        return self._settled(now, limit)

    def watch_again(self, paths: Iterable[Path]) -> None:
        """Put files ready() returned back, still counted as stable: they could not be taken yet.

        They are due again at once, so a folder whose take had to wait for the
        disk is not split into two sessions. A file that changes meanwhile
        starts its stable wait over, as any watched file does.
        """
        for path in paths:
            try:
                info = os.lstat(path)
            except OSError:
                continue
            self._candidates[path] = _Candidate(info.st_size, info.st_mtime_ns, -math.inf)  # stable already

    def still_as_seen(self, path: Path) -> bool:
        """Whether a file ready() returned is still the one seen stable, and closed by its writer.

        Checked right before the take: a writer may have come back since. A
        file that changed is watched again from the start; one that is gone is
        left to the take to report.
        """
        seen = self._seen_stable.pop(path, None)
        try:
            info = os.lstat(path)
        except OSError:
            return True
        if seen is None or (_identity(info) == seen and not open_for_writing(path)):
            return True
        self._record(path)
        return False

    def pending(self) -> int:
        return len(self._candidates)

    def seconds_until_due(self, now: float) -> float | None:
        """How long until the first watched file may be stable; None when none is watched.

        The loop sleeps no longer than this, so a file is taken when it has held
        still for stable_seconds, not at the loop's next regular tick.
        """
        if not self._candidates:
            return None
        return max(0.0, min(seen.since for seen in self._candidates.values()) + self.stable_seconds - now)

    def _record(self, *paths: str | bytes | Path) -> None:
        found = {Path(os.fsdecode(path)) for path in paths if path}
        with self._lock:
            self._recorded |= found

    def _note(self, *paths: str | bytes | Path) -> None:
        found = {Path(os.fsdecode(path)) for path in paths if path}
        with self._lock:
            self._noted |= found

    def _drain(self) -> set[Path]:
        with self._lock:
            drained, self._recorded = self._recorded, set()
        return drained

    def _consider(self, path: Path, now: float) -> None:
        """Start watching a recorded path, expand a folder, or say once why not."""
        if path in self._candidates or not self._visible(path):
            return
        try:
            info = os.lstat(path)
        except OSError:  # gone already: forget we ever warned about it
            self._reported.discard(path)
            return
        if stat.S_ISDIR(info.st_mode):
            # A folder moved in may come as one event for the folder alone.
            for found in sorted(_walk(path), key=str):
                self._consider(found, now)
            return
        if path.name == TICKET_NAME:
            return  # a job ticket: read by the supervisor when the folder's session opens, never taken
        reason = _refusal(path, info)
        if reason is None:
            self._candidates[path] = _Candidate(info.st_size, info.st_mtime_ns, now)
        else:
            self._report(path, reason)

    def _visible(self, path: Path) -> bool:
        """Under the inbox, and neither a temporary name nor inside a dot-folder."""
        if not path.is_relative_to(self.inbox):
            return False
        parts = path.relative_to(self.inbox).parts
        if any(part.startswith(".") for part in parts[:-1]):
            return False
        if parts and is_temporary_name(parts[-1]):
            log.debug("file_ignored", path=str(path), reason="temporary name")
            return False
        return True

    def _settled(self, now: float, limit: int | None = None) -> list[Path]:
        settled = []
        for path, seen in list(self._candidates.items()):
            if limit is not None and len(settled) >= limit:
                break  # the rest are looked at on the next call, not probed twice
            try:
                info = os.lstat(path)
            except OSError:  # vanished, or its folder did
                del self._candidates[path]
                continue
            if not stat.S_ISREG(info.st_mode):  # replaced by a symlink or a folder
                del self._candidates[path]
                self._report(path, _refusal(path, info) or "not a regular file")
            elif (info.st_size, info.st_mtime_ns) != (seen.size, seen.mtime_ns):
                self._candidates[path] = _Candidate(info.st_size, info.st_mtime_ns, now)
            elif now - seen.since < self.stable_seconds:
                continue
            elif open_for_writing(path):  # a writer paused: asked again a stable_seconds later
                self._candidates[path] = seen._replace(since=now)
            else:
                del self._candidates[path]
                self._seen_stable[path] = _identity(info)
                settled.append(path)
        return sorted(settled)

    def _report(self, path: Path, reason: str) -> None:
        if path not in self._reported:
            self._reported.add(path)
            log.warning("file_ignored", path=str(path), reason=reason)


def _refusal(path: Path, info: os.stat_result) -> str | None:
    """Why a path is not an image to process, or None if it is one."""
    if stat.S_ISLNK(info.st_mode):
        return "symlink"  # never followed: it could point anywhere on the machine
    if not stat.S_ISREG(info.st_mode):
        return "not a regular file"
    if not is_image_name(path.name):
        return "not an image extension"
    return None


def _walk(top: Path) -> Iterator[Path]:
    """Every non-folder entry under top, symlinks included but not followed; skips dot-folders."""
    folders = [top]
    while folders:
        for entry in _entries(folders.pop()):
            if not entry.is_dir(follow_symlinks=False):
                yield Path(entry.path)
            elif not entry.name.startswith("."):
                folders.append(Path(entry.path))


def _entries(folder: Path) -> Iterable[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):  # moved away since it was recorded
        return []
