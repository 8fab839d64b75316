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
        self.waits: dict[str, Backoff] = {}  # sessions whose own ZIP or archive step failed, until it works

    def close_session(self, session: Session, reason: str) -> None:
        # OPEN -> PROCESSING: no new files join it from now on.
        if self.store.set_session_state(session.name, {SessionState.OPEN}, SessionState.PROCESSING, time.time()):
            log.info("session_closed", session=session.name, reason=reason)
            self.unfinished.add(session.name)
            self.publisher.publish(session.name)
            if session.source is not None and reason != "full":
                remove_empty_dirs(self.settings.inbox / session.source, self.settings.inbox)

    def close_idle_sessions(self, now: float) -> None:
        wall = time.time()
        for session in self.store.sessions(SessionState.OPEN):
            if wall - session.last_item_at >= self.settings.session_idle_seconds:
                self.close_session(session, "idle")

    def forget_if_empty(self, name: str) -> None:
        """Drop a session that never kept an item, and the status JSON it may have shown already."""
        if self.store.forget_empty_session(name):
            (self.settings.outbox / f"{name}.json").unlink(missing_ok=True)
            self.publisher.stale.discard(name)
            self.unfinished.discard(name)

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
