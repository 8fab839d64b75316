"""The user's markers: touch cancel/SESSION to cancel a session, retry/SESSION/NAME to retry an item, and
uploaded/ID, listing inbox paths, to say those files are all there is of an upload.

Read on every pass, acted on, then removed. A marker naming nothing the daemon
knows is a warning in the log, never an error. A retry marker that is a file
with content is the item's fixed original: the item runs again on it. A name
starting with a dot is a marker still being written (no item's name starts
with one: intake never takes such a file), and is left for a later pass.

An upload marker waits until none of the files it lists is left in the inbox
(each taken, or gone); then the open sessions they joined close at once, as if
idle: whoever wrote the files knows better than a timer that no more are coming.
"""

from __future__ import annotations

import os
import stat
import time
from pathlib import Path

import structlog

from bgremover.backoff import describe, is_storage_error
from bgremover.intake.names import display
from bgremover.queue.states import RETRYABLE, SessionState, Status
from bgremover.queue.store import Item, Session, Store
from bgremover.settings import Settings
from bgremover.supervisor.dispatch import Dispatch
from bgremover.supervisor.items import ItemMoves
from bgremover.supervisor.retention import kept_since
from bgremover.supervisor.sessions import Sessions
from bgremover.supervisor.taking import Taking

log = structlog.get_logger()

MARKER_WALK_SECONDS = 30.0  # as the inbox's rescan: catches what no event told of
# An upload marker whose files are still in the inbox after this long names files the daemon cannot
# take: it is dropped, and their sessions close by the idle rule.
UPLOAD_MARKER_SECONDS = 3600.0
UPLOAD_MARKER_BYTES = 4 * 1024 * 1024  # a thousand files of 4 KB paths each; a longer marker is read that far


class Markers:
    def __init__(
        self, settings: Settings, store: Store, sessions: Sessions, moves: ItemMoves, taking: Taking, dispatch: Dispatch
    ) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.moves = moves
        self.taking = taking
        self.dispatch = dispatch
        self.publisher = sessions.publisher
        self.next_walk = 0.0  # monotonic: when all of retry/ is walked next; the first pass walks it
        self.watched = True  # whether the watcher still watches the retry/ it was started on

    def read_markers(self, now: float) -> None:
        if not (self.settings.cancel_dir.is_dir() and self.settings.retry_dir.is_dir()):
            self.ensure_marker_folders()  # someone removed them: put back what users rely on
            # The watcher's watch went with the old folder: from now on only a walk sees a marker.
            self.watched = False
        for marker in sorted(self.settings.cancel_dir.iterdir()):
            if marker.is_file() or marker.is_symlink():
                self.cancel_session(display(marker.name))
                marker.unlink(missing_ok=True)
        for marker in self.retry_markers(now):
            relative = marker.relative_to(self.settings.retry_dir)
            self.retry_item(display(relative.parts[0]), display("/".join(relative.parts[1:])), fixed_file(marker))
            marker.unlink(missing_ok=True)
        self.read_upload_markers()

    def read_upload_markers(self) -> None:
        """Close the sessions of each upload none of whose files is left in the inbox."""
        try:
            markers = sorted(m for m in self.settings.uploaded_dir.iterdir() if not m.name.startswith("."))
        except FileNotFoundError:
            self.settings.uploaded_dir.mkdir(parents=True, exist_ok=True)
            return
        for marker in markers:
            names = upload_names(marker)
            waiting = [name for name in names if os.path.lexists(self.settings.inbox / name)]
            if waiting and not marker_older_than(marker, UPLOAD_MARKER_SECONDS):
                continue  # not all taken yet: the next pass looks again
            if waiting:
                log.warning("upload_marker_expired", marker=marker.name, waiting=len(waiting))
            else:
                self.close_upload({name.split("/")[0] if "/" in name else None for name in names}, marker.name)
            marker.unlink(missing_ok=True)

    def close_upload(self, sources: set[str | None], marker: str) -> None:
        for source in sorted(sources, key=lambda s: s or ""):
            session = self.store.open_session(source)
            if session is not None:
                self.sessions.close_session(session, "uploaded")  # OPEN -> PROCESSING
        log.info("upload_marker_read", marker=marker, sources=len(sources))

    def retry_markers(self, now: float) -> list[Path]:
        """The retry markers to act on this pass, without walking every session's folder on every pass.

        Only the session folders the watcher saw change are read; all of
        retry/ is walked at the first pass (markers touched while the daemon
        was down) and every MARKER_WALK_SECONDS after, for changes no event
        told of (a lost inotify event, a network filesystem's remote writes).
        """
        retry_dir = Path(os.path.abspath(self.settings.retry_dir))
        changed = self.taking.intake.changed_in_watched()
        if now >= self.next_walk or not self.watched:
            self.next_walk = now + MARKER_WALK_SECONDS
            folders = [retry_dir]
        else:
            # The session's folder, below retry/, of each path an event named.
            below = [path.relative_to(retry_dir).parts for path in changed if path.is_relative_to(retry_dir)]
            folders = sorted({retry_dir / parts[0] for parts in below if parts})
        found = [marker for folder in folders for marker in markers_in(folder)]
        return [self.settings.retry_dir / marker.relative_to(retry_dir) for marker in sorted(found)]

    def cancel_session(self, name: str) -> None:
        session = self.store.session(name)
        if session is None:
            log.warning("cancel_marker_ignored", session=name, reason="no such session")
            return
        if session.state is SessionState.OPEN:
            self.sessions.close_session(session, "cancelled")
        for item in self.store.items(name, Status.QUEUED):
            self.moves.move(item, Status.CANCELLED, "cancel marker")  # QUEUED -> CANCELLED
            self.moves.ensure_retry_folder(item)
        self.dispatch.cancel_jobs_of(name)
        log.info("session_cancelled", session=name)
        self.sessions.unfinished.add(name)
        self.publisher.publish(name)

    def retry_item(self, session_name: str, name: str, fixed: Path | None = None) -> None:
        item = self.store.item_named(session_name, name)
        if item is None or item.status not in RETRYABLE:
            reason = "no such item" if item is None else f"item is {item.status.value}"
            log.warning("retry_marker_ignored", session=session_name, item=name, reason=reason)
            return
        if fixed is not None and not self.replace_original(item, fixed):
            return
        session = self.store.session(session_name)
        if session.error:
            self.taking.reread_ticket(session)
        # Reopen first: a kill between the two steps then leaves a processing session
        # whose items are all finished (completed again at start-up), never a
        # complete session with a queued item, whose new cutout no ZIP would take.
        self.store.set_session_state(session_name, {SessionState.COMPLETE}, SessionState.PROCESSING, time.time())
        self.moves.move(item, Status.QUEUED, "retry marker")  # FAILED | CANCELLED -> QUEUED
        self.publisher.publish(session_name)

    def replace_original(self, item: Item, fixed: Path) -> bool:
        """The marker's content becomes the item's original; False (and the item stays as it is) if it cannot."""
        try:
            self.taking.spool.replace_original(item, fixed)
        except OSError as exc:
            if is_storage_error(exc):
                raise  # the state folder refuses writes: the marker stays, and is read again once it takes them
            log.warning("retry_file_refused", session=item.session, item=item.name, error=describe(exc))
            return False
        log.info("original_replaced", session=item.session, item=item.name, bytes=fixed.stat().st_size)
        return True

    def ensure_marker_folders(self) -> None:
        """cancel/, retry/, and the retry folder of each item of an unsettled session that can be retried.

        Where retry/ itself was removed, of every session retention keeps: an
        older one's folder would name items about to be forgotten.
        """
        self.settings.cancel_dir.mkdir(parents=True, exist_ok=True)
        self.settings.uploaded_dir.mkdir(parents=True, exist_ok=True)
        kept = kept_since(self.settings, time.time())
        if self.settings.retry_dir.is_dir():
            # Only an unsettled session can lack an item's folder (a kill between its failure and the
            # folder): a start must not cost a check per item that ever failed.
            unsettled = [s.name for s in self.store.unsettled_sessions() if kept_by_retention(s, kept)]
            retryable = self.store.items_of(unsettled, *RETRYABLE)
        else:
            # Someone removed retry/: every folder retention keeps comes back, once.
            retryable = self.store.retryable_since(kept)
        for item in retryable:
            self.moves.ensure_retry_folder(item)
        self.settings.retry_dir.mkdir(parents=True, exist_ok=True)


def kept_by_retention(session: Session, kept: float) -> bool:
    """Unfinished, or complete since `kept` (see retention.kept_since)."""
    return session.state is not SessionState.COMPLETE or session.updated_at >= kept


def markers_in(folder: Path) -> list[Path]:
    """The files and links under `folder`, at any depth, but those whose name starts with a dot (still being written).

    os.walk, not rglob: one scandir per folder and no stat per entry, since
    retry/ holds a folder for every session with an item to retry.
    """
    if not folder.is_dir() or folder.is_symlink():  # a marker itself, or gone: never followed
        return [folder] if os.path.lexists(folder) and not folder.name.startswith(".") else []
    found = []
    for parent, folders, files in os.walk(folder):
        links = [name for name in folders if os.path.islink(os.path.join(parent, name))]
        found += [Path(parent, name) for name in files + links if not name.startswith(".")]
    return found


def fixed_file(marker: Path) -> Path | None:
    """The marker itself when it is a regular file with content (a fixed original), else None (a plain retry)."""
    try:
        info = marker.lstat()
    except FileNotFoundError:
        return None
    return marker if stat.S_ISREG(info.st_mode) and info.st_size > 0 else None


def upload_names(marker: Path) -> list[str]:
    """The inbox paths an upload marker lists, one a line; none from one that is no readable text file."""
    try:
        if not stat.S_ISREG(marker.lstat().st_mode):
            return []
        text = marker.read_bytes()[:UPLOAD_MARKER_BYTES].decode("utf-8", "surrogateescape")
    except OSError:
        return []
    names = [line.strip().strip("/") for line in text.splitlines()]
    # Only names inside the inbox: a line that climbs out of it names nothing an upload placed.
    return [name for name in names if name and ".." not in name.split("/")]


def marker_older_than(marker: Path, seconds: float) -> bool:
    try:
        return time.time() - marker.lstat().st_mtime > seconds
    except OSError:
        return True
