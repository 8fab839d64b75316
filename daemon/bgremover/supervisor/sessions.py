"""Sessions from open to complete: closing them, writing their ZIP, settling their files.

A session closes when it is full, idle or cancelled (OPEN -> PROCESSING); once
every item is terminal its ZIP is written, its results leave the spool and its
originals go to the archive, and only then is it complete (PROCESSING ->
COMPLETE) and its hook started. A ZIP or archive step that fails holds back
only its own session, which is tried again after a growing wait and says why
in its status JSON (`finish_error`); a full or read-only outbox holds back all.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import structlog

from bgremover.backoff import Backoff, describe, is_storage_error
from bgremover.formats import FORMAT_EXTENSIONS
from bgremover.outbox import zips
from bgremover.queue.spool import Spool, remove_empty_dirs
from bgremover.queue.states import RETRYABLE, TERMINAL, SessionState, Status
from bgremover.queue.store import Item, Session, Store
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
        self.waits: dict[str, Backoff] = {}  # sessions whose own ZIP or archive step failed, until it works

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
            if name in self.waits and not self.waits[name].due(now):
                continue  # this session's own last try failed: only it waits
            self.unfinished.discard(name)  # put back if its ZIP must wait
            session = self.store.session(name)
            if session is not None and session.state is SessionState.PROCESSING:
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
        try:
            if not self.write_zip(session, items, now):
                self.unfinished.add(session.name)
                return
            # Tidy up before saying "complete", so a reader who sees it finds the archive in place.
            # A crash in between is safe: the next life rewrites the ZIP from the previous one.
            self.settle(session)
        except FinishFailed as failure:
            self.finish_failed(session, failure, now)
            return
        self.finish_succeeded(session)
        # PROCESSING -> COMPLETE: every item terminal and the ZIP current.
        self.store.set_session_state(
            session.name, {SessionState.PROCESSING}, SessionState.COMPLETE, time.time(), zip_name
        )
        counts = self.store.counts(session.name)
        log.info("session_complete", session=session.name, zip=zip_name, **counts)
        self.publisher.publish(session.name)
        self.hooks.start_hook(session.name, zip_name)

    def write_zip(self, session: Session, items: list[Item], now: float) -> bool:
        """The session's ZIP, current; False when the outbox as a whole refused it (its shared wait)."""
        ext = FORMAT_EXTENSIONS[session.format]
        done = [item for item in items if item.status is Status.DONE]
        members = [(item.member, existing(self.spool.result(item, ext))) for item in done]
        if self.options.with_masks(session):
            members += [(zips.mask_member(item.member), existing(self.spool.mask_result(item))) for item in done]
        previous = self.settings.outbox / f"{session.name}.zip"
        try:
            zips.write_zip(previous, members, previous if previous.exists() else None)
        except OSError as exc:
            if not is_storage_error(exc):
                raise FinishFailed("its ZIP could not be written", exc) from exc
            self.refusals.outbox_refused(exc, now)  # a full or read-only outbox: every session waits
            return False
        except (ValueError, zipfile.BadZipFile) as exc:  # a previous ZIP that is not one any more
            raise FinishFailed("its ZIP could not be written", exc) from exc
        self.refusals.outbox_accepted(now)
        return True

    def finish_failed(self, session: Session, failure: FinishFailed, now: float) -> None:
        """This session alone waits, ever longer, with the reason in its status JSON; others go on."""
        wait = self.waits.setdefault(session.name, Backoff())
        wait.failed(now)
        self.unfinished.add(session.name)
        reason = f"{failure.step} ({failure.cause}); it is tried again after a growing wait"
        if reason == session.finish_error:
            log.debug("session_finish_retry_failed", session=session.name, retry_in_s=wait.delay)
            return
        log.error("session_finish_failed", session=session.name, error=reason, retry_in_s=wait.delay)
        self.store.set_finish_error(session.name, reason)
        self.publisher.publish(session.name)

    def finish_succeeded(self, session: Session) -> None:
        self.waits.pop(session.name, None)
        if session.finish_error is not None:
            self.store.set_finish_error(session.name, None)
            log.info("session_finish_recovered", session=session.name)

    def settle(self, session: Session) -> None:
        try:
            self.settle_files(session)
        except OSError as exc:
            raise FinishFailed("its originals could not be moved to the archive", exc) from exc

    def settle_files(self, session: Session) -> None:
        """After the ZIP is safely written: results leave the spool, originals go to the archive.

        While an item can still be retried, the ZIP will be written again, and
        the user may have moved the last one away: the done items' results stay
        until the session has none left to retry, so the ZIP can always be rebuilt.
        """
        ext = FORMAT_EXTENSIONS[session.format]
        items = self.store.items(session.name)
        final = not may_rebuild(items)
        for item in items:
            if item.status is Status.DONE and final:
                self.spool.discard(self.spool.result(item, ext), self.spool.mask_result(item))
            if self.settings.keep_originals:
                self.spool.archive_original(item)
            elif item.status is Status.DONE:
                # Only now that its cutout is in the ZIP; failed ones stay for their retry.
                self.spool.delete_original(item)


class FinishFailed(Exception):
    """A session's ZIP or archive step failed for this session alone: `step` says which, `cause` why."""

    def __init__(self, step: str, exc: BaseException) -> None:
        super().__init__(step)
        self.step = step
        self.cause = f"{describe(exc)}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else str(exc)


def may_rebuild(items: list[Item]) -> bool:
    """Whether the session's ZIP may be written again: some item can still be retried."""
    return any(item.status in RETRYABLE for item in items)


def existing(path: Path) -> Path | None:
    return path if path.is_file() else None
