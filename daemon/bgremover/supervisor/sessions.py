"""Sessions from open to complete: closing them, writing their ZIP, settling their files.

A session closes when it is full, idle or cancelled (OPEN -> PROCESSING); once
every item is terminal its ZIP is written, its results leave the spool and its
originals go to the archive, and only then is it complete (PROCESSING ->
COMPLETE) and its hook started. A ZIP or archive step that fails holds back
only its own session, which is tried again after a growing wait and says why
in its status JSON (`finish_error`); a full or read-only outbox holds back all.

The ZIP is written by the builder (outbox/builder.py) while the loop goes on:
here it is only decided (which members, from where) and, once written, judged.
Items may change meanwhile (a retry marker queues a failed item again), so a
ZIP completes its session only if it holds exactly the done items the session
has when the build ends; otherwise it is written again.
"""

from __future__ import annotations

import time
import zipfile
from pathlib import Path

import structlog

from bgremover.backoff import Backoff, describe, is_storage_error
from bgremover.formats import FORMAT_EXTENSIONS
from bgremover.outbox import zips
from bgremover.outbox.builder import Build, Built, ZipBuilder
from bgremover.outbox.status import output_member
from bgremover.queue.spool import Spool, remove_empty_dirs
from bgremover.queue.states import RETRYABLE, TERMINAL, SessionState, Status
from bgremover.queue.store import Item, Session, Store
from bgremover.review import record
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
        builder: ZipBuilder,
    ) -> None:
        self.settings = settings
        self.store = store
        self.spool = spool
        self.options = options
        self.publisher = publisher
        self.refusals = publisher.refusals
        self.hooks = hooks
        self.builder = builder  # writes the ZIPs off the loop's thread
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
        """Conclude the ZIP builds that ended since the last pass, then start those of sessions that may be done."""
        ended = self.builder.collect()
        # Until each is concluded, its session may still need a ZIP: a failure below leaves it to a later pass.
        self.unfinished.update(built.build.session for built in ended)
        for built in ended:
            self.conclude(built, now)
        for name in sorted(self.unfinished):
            if not self.refusals.outbox.due(now):
                return  # the outbox refused the last write: wait before the next ZIP
            if self.builder.building(name) or not self.builder.has_room():
                continue  # one build per session at once; looked at again once its build has ended
            if name in self.waits and not self.waits[name].due(now):
                continue  # this session's own last try failed: only it waits
            self.unfinished.discard(name)  # put back when its build ends
            session = self.store.session(name)
            if session is not None and session.state is SessionState.PROCESSING:
                try:
                    self.start_build(session)
                except BaseException:
                    self.unfinished.add(name)  # tried again on a later pass
                    raise

    def start_build(self, session: Session) -> None:
        """Hand the session's ZIP to the builder, once every item is terminal; the loop does not wait for it."""
        items = self.store.items(session.name)
        if any(item.status not in TERMINAL for item in items):
            return
        previous = self.settings.outbox / f"{session.name}.zip"
        members = self.members(session, items)
        self.builder.submit(Build(session.name, previous, members, previous if previous.exists() else None))
        log.debug("zip_build_started", session=session.name, members=len(members))

    def members(self, session: Session, items: list[Item]) -> tuple[tuple[str, Path | None], ...]:
        """The ZIP's members as the items stand now: each done item's cutout (and its mask).

        A source of None: the cutout is gone from the spool, and only the last ZIP holds it.
        """
        ext = FORMAT_EXTENSIONS[session.format]
        done = [item for item in items if item.status is Status.DONE]
        named = [(output_member(item, self.settings.review_folder), item) for item in done]
        members = [(member, existing(self.spool.result(item, ext))) for member, item in named]
        if self.options.with_masks(session):
            members += [(zips.mask_member(member), existing(self.spool.mask_result(item))) for member, item in named]
        members += [
            (entry["file"], existing(path))
            for item in done
            for entry, path in zip((e for e in item.recipes if e.get("file")), self.spool.render_files(item))
        ]
        return tuple(members)

    def conclude(self, built: Built, now: float) -> None:
        """A build ended: the session completes only if its ZIP holds exactly the done items it has now."""
        session = self.store.session(built.build.session)
        if session is None or session.state is not SessionState.PROCESSING:
            return
        if built.error is not None:
            self.build_failed(session, built.error, now, built.submitted)
            return
        self.refusals.outbox_accepted(now, built.submitted)
        log.info("zip_written", session=session.name, seconds=round(built.seconds, 2), members=len(built.build.members))
        items = self.store.items(session.name)
        # A retry or a cancel marker may have changed the items while the ZIP was written: that ZIP is not
        # the session's, and it is written again once its items are all terminal (it stays in `unfinished`).
        if any(item.status not in TERMINAL for item in items) or self.members(session, items) != built.build.members:
            log.info("zip_outdated", session=session.name, reason="its items changed while it was written")
            return
        try:
            # Tidy up before saying "complete", so a reader who sees it finds the archive in place.
            # A crash in between is safe: the next life rewrites the ZIP from the previous one.
            self.settle(session)
        except FinishFailed as failure:
            self.finish_failed(session, failure, now)
            return
        self.complete(session)

    def complete(self, session: Session) -> None:
        self.finish_succeeded(session)
        zip_name = f"{session.name}.zip"
        # PROCESSING -> COMPLETE: every item terminal and the ZIP current.
        self.store.set_session_state(
            session.name, {SessionState.PROCESSING}, SessionState.COMPLETE, time.time(), zip_name
        )
        counts = self.store.counts(session.name)
        log.info("session_complete", session=session.name, zip=zip_name, **counts)
        self.publisher.publish(session.name)
        self.hooks.start_hook(session.name, zip_name)

    def build_failed(self, session: Session, exc: Exception, now: float, submitted: float) -> None:
        """A full or read-only outbox holds back every session; any other failure only this one."""
        if isinstance(exc, zips.Abandoned):
            return  # only at stop: the next life builds it again
        if isinstance(exc, OSError) and is_storage_error(exc):
            self.refusals.outbox_refused(exc, now, submitted)  # the shared wait; the session stays unfinished
            return
        if isinstance(exc, (OSError, ValueError, zipfile.BadZipFile)):  # BadZipFile: a previous ZIP that is not one
            self.finish_failed(session, FinishFailed("its ZIP could not be written", exc), now)
            return
        raise exc  # a fault of ours: the loop logs it, and the session is tried again

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
        until the session has none left to retry or to review, so the ZIP can always be rebuilt.
        """
        ext = FORMAT_EXTENSIONS[session.format]
        items = self.store.items(session.name)
        final = not may_rebuild(items)
        for item in items:
            if item.status is Status.DONE and final:
                self.spool.discard(
                    self.spool.result(item, ext), self.spool.mask_result(item), *self.spool.render_files(item)
                )
            if self.settings.keep_originals:
                self.spool.archive_original(item)  # found there by a review's rerun too
            elif item.status is Status.DONE and not record.pending(item.review):
                # Only now that its cutout is in the ZIP; failed ones stay for their retry.
                self.spool.delete_original(item)


class FinishFailed(Exception):
    """A session's ZIP or archive step failed for this session alone: `step` says which, `cause` why."""

    def __init__(self, step: str, exc: BaseException) -> None:
        super().__init__(step)
        self.step = step
        self.cause = f"{describe(exc)}: {exc.filename}" if isinstance(exc, OSError) and exc.filename else str(exc)


def may_rebuild(items: list[Item]) -> bool:
    """Whether the session's ZIP may be written again: some item can still be retried, or waits for a review."""
    return any(item.status in RETRYABLE or record.pending(item.review) for item in items)


def existing(path: Path) -> Path | None:
    return path if path.is_file() else None
