"""Sessions from open to complete: closing them, writing their ZIP, settling their files.

A session closes when it is full, idle or cancelled (OPEN -> PROCESSING); once
every item is terminal its ZIP is written, its results leave the spool and its
originals go to the archive, and only then is it complete (PROCESSING ->
COMPLETE) and its hook started.
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from bgremover.backoff import is_storage_error
from bgremover.formats import FORMAT_EXTENSIONS
from bgremover.outbox import zips
from bgremover.queue.spool import Spool, remove_empty_dirs
from bgremover.queue.states import TERMINAL, SessionState, Status
from bgremover.queue.store import Session, Store
from bgremover.settings import Settings
from bgremover.supervisor.hooks import Hooks
from bgremover.supervisor.options import SessionOptions
from bgremover.supervisor.publishing import Publisher

log = structlog.get_logger()

# An empty inbox folder is left alone this long past stable_seconds: a copy may be about to write into it.
FOLDER_QUIET_SECONDS = 5.0
# A take records its time, then moves the file: the folder's mtime lands a moment later than the record.
TAKE_SLACK_SECONDS = 1.0


class Sessions:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        spool: Spool,
        options: SessionOptions,
        publisher: Publisher,
        hooks: Hooks,
    ) -> None:
        self.settings = settings
        self.store = store
        self.spool = spool
        self.options = options
        self.publisher = publisher
        self.refusals = publisher.refusals
        self.hooks = hooks
        self.unfinished: set[str] = set()  # sessions that may be ready for their ZIP
        # Each open session's last take, on the monotonic clock: an NTP step of the
        # wall clock must not make every open session look idle at once.
        self.last_taken: dict[str, float] = {}
        self.to_tidy: dict[str, float] = {}  # closed sessions' inbox folders -> their last take (wall clock)

    def close_session(self, session: Session, reason: str) -> None:
        # OPEN -> PROCESSING: no new files join it from now on.
        if self.store.set_session_state(session.name, {SessionState.OPEN}, SessionState.PROCESSING, time.time()):
            log.info("session_closed", session=session.name, reason=reason)
            self.last_taken.pop(session.name, None)
            self.unfinished.add(session.name)
            self.publisher.publish(session.name)
            if session.source is not None and reason != "full":
                self.to_tidy[session.source] = session.last_item_at
                self.tidy_inbox()

    def item_taken(self, name: str, now: float) -> None:
        """A file joined the open session `name` at `now` (monotonic): its idle wait starts over."""
        self.last_taken[name] = now

    def close_idle_sessions(self, now: float) -> None:
        for session in self.store.sessions(SessionState.OPEN):
            if now - self.taken_last(session, now) >= self.settings.session_idle_seconds:
                self.close_session(session, "idle")
        self.tidy_inbox()

    def tidy_inbox(self) -> None:
        """Remove the empty folders closed sessions left in the inbox, once no writer can still be using them.

        A folder is removed only when it is empty, unchanged since the
        session's last take (one changed later was made by a copy still under
        way) and quiet for stable_seconds plus a margin, and never under a
        session that is open. A source is forgotten once its quiet time has
        passed its last take: nothing in it can become removable later.
        """
        wall = time.time()
        quiet_by = wall - self.settings.stable_seconds - FOLDER_QUIET_SECONDS
        for source, last_take in list(self.to_tidy.items()):
            if self.store.open_session(source) is not None:
                continue  # its own close tidies it again
            settled_by = last_take + TAKE_SLACK_SECONDS
            remove_empty_dirs(self.settings.inbox / source, self.settings.inbox, min(settled_by, quiet_by))
            if quiet_by >= settled_by:
                del self.to_tidy[source]

    def taken_last(self, session: Session, now: float) -> float:
        """When the session last took a file, on the monotonic clock.

        A session left open by a previous life has only its stored wall-clock
        time: its age is read from it once, and never counted as more than the
        idle wait, so a clock that moved while the daemon was down closes it at
        once at worst, and never keeps it open longer.
        """
        if session.name not in self.last_taken:
            age = min(max(time.time() - session.last_item_at, 0.0), self.settings.session_idle_seconds)
            self.last_taken[session.name] = now - age
        return self.last_taken[session.name]

    def forget_if_empty(self, name: str) -> None:
        """Drop a session that never kept an item, and the status JSON it may have shown already."""
        if self.store.forget_empty_session(name):
            (self.settings.outbox / f"{name}.json").unlink(missing_ok=True)
            self.publisher.stale.discard(name)
            self.unfinished.discard(name)
            self.last_taken.pop(name, None)

    def finish_sessions(self, now: float) -> None:
        for name in sorted(self.unfinished):
            if not self.refusals.outbox.due(now):
                return  # the outbox refused the last write: wait before the next ZIP
            self.unfinished.discard(name)  # complete() puts it back if its ZIP must wait
            session = self.store.session(name)
            if session.state is SessionState.PROCESSING:
                try:
                    self.complete(session, now)
                except BaseException:
                    self.unfinished.add(name)  # tried again on a later pass
                    raise

    def complete(self, session: Session, now: float) -> None:
        items = self.store.items(session.name)
        if any(item.status not in TERMINAL for item in items):
            return
        zip_name = f"{session.name}.zip"
        ext = FORMAT_EXTENSIONS[session.format]
        done = [item for item in items if item.status is Status.DONE]
        members = [(item.member, existing(self.spool.result(item, ext))) for item in done]
        if self.options.with_masks(session):
            members += [(zips.mask_member(item.member), existing(self.spool.mask_result(item))) for item in done]
        previous = self.settings.outbox / zip_name
        try:
            zips.write_zip(previous, members, previous if previous.exists() else None)
        except OSError as exc:
            if is_storage_error(exc):
                self.refusals.outbox_refused(exc, now)
            else:  # a ZIP we cannot build (a result gone missing): tried again after the same waits
                self.refusals.outbox.failed(now)
                log.error(
                    "zip_write_failed", session=session.name, error=str(exc), retry_in_s=self.refusals.outbox.delay
                )
            self.unfinished.add(session.name)
            return
        self.refusals.outbox_accepted(now)
        # Tidy up before saying "complete", so a reader who sees it finds the archive in place.
        # A crash in between is safe: the next life rewrites the ZIP from the previous one.
        self.settle(session)
        # PROCESSING -> COMPLETE: every item terminal and the ZIP current.
        self.store.set_session_state(
            session.name, {SessionState.PROCESSING}, SessionState.COMPLETE, time.time(), zip_name
        )
        counts = self.store.counts(session.name)
        log.info("session_complete", session=session.name, zip=zip_name, **counts)
        self.publisher.publish(session.name)
        self.hooks.start_hook(session.name, zip_name)

    def settle(self, session: Session) -> None:
        """After the ZIP is safely written: results leave the spool, originals go to the archive."""
        ext = FORMAT_EXTENSIONS[session.format]
        for item in self.store.items(session.name):
            if item.status is Status.DONE:
                self.spool.discard(self.spool.result(item, ext), self.spool.mask_result(item))
            if self.settings.keep_originals:
                self.spool.archive_original(item)
            elif item.status is Status.DONE:
                # Only now that its cutout is in the ZIP; failed ones stay for their retry.
                self.spool.delete_original(item)


def existing(path: Path) -> Path | None:
    return path if path.is_file() else None
