"""Every change of an item's status, in one place: recorded, logged, and shown in its session's status JSON."""

from __future__ import annotations

import os
import time
from pathlib import Path

import structlog

from bgremover.backoff import describe
from bgremover.queue.states import RETRYABLE, Status
from bgremover.queue.store import IllegalTransition, Item, Store
from bgremover.settings import Settings
from bgremover.supervisor.sessions import Sessions

log = structlog.get_logger()


class ItemMoves:
    def __init__(self, settings: Settings, store: Store, sessions: Sessions) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.publisher = sessions.publisher

    def move(
        self,
        item: Item,
        dst: Status,
        reason: str,
        error: str | None = None,
        note: str | None = None,
        attempt: int | None = None,
        worker: str | None = None,
        renders: str | None = None,
    ) -> Item:
        """The one place the supervisor changes an item's status; every change is logged.

        `attempt`: only if the item is still at this attempt (a job's outcome is its own attempt's).
        """
        now = time.time()
        try:
            moved = self.store.transition(
                item.id, item.status, dst, now, error=error, reason=reason, note=note, attempt=attempt, worker=worker,
                renders=renders,
            )  # fmt: skip
        except IllegalTransition as exc:
            log.error("transition_refused", session=item.session, item=item.name, error=str(exc))
            raise
        log.info(
            "item_transition",
            session=item.session,
            item=item.name,
            status=dst.value,
            previous=item.status.value,
            reason=reason,
            duration_ms=round((now - item.updated_at) * 1000),
        )
        return moved

    def finish(self, item: Item, status: Status, error: str | None, note: str | None = None, **fields) -> None:
        # PROCESSING -> DONE | FAILED | CANCELLED, or -> QUEUED when the daemon is stopping
        item = self.move(
            item,
            status,
            fields.get("reason", "finished"),
            error,
            note,
            attempt=fields.get("attempt"),
            worker=fields.get("worker"),
            renders=fields.pop("renders", None),
        )
        if status in RETRYABLE:
            self.ensure_retry_folder(item)
        elif status is Status.DONE:
            self.drop_retry_folder_if_unused(item.session)
        level = log.info if status in (Status.DONE, Status.QUEUED) else log.warning
        level(
            "job_finished",
            session=item.session,
            item=item.name,
            status=status.value,
            error=error,
            attempts=item.attempts,
            **fields,
        )
        self.sessions.unfinished.add(item.session)
        self.publisher.publish(item.session)

    def ensure_retry_folder(self, item: Item) -> None:
        # The item's status is recorded already: a folder we cannot make now must not undo that.
        try:
            (self.settings.retry_dir / item.session / item.name).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("retry_folder_not_made", session=item.session, item=item.name, error=describe(exc))

    def drop_retry_folder_if_unused(self, session: str) -> None:
        """A retried item is done: its session's retry folder goes once none of its items can be retried."""
        # The stat first: most sessions never had a retry folder, and then no query is made.
        if (self.settings.retry_dir / session).is_dir():
            counts = self.store.counts(session)
            if not any(counts[status.value] for status in RETRYABLE):
                self.drop_retry_folder(session)

    def drop_retry_folder(self, session: str) -> None:
        """retry/SESSION/ and its empty subfolders; a marker a user left there keeps them (and is reported)."""
        folder = self.settings.retry_dir / session
        if not remove_empty_tree(folder):
            log.warning("retry_folder_kept", session=session, reason="it holds files nothing can be retried by")


def remove_empty_tree(folder: Path) -> bool:
    """Remove `folder` and the folders below it, deepest first, by rmdir alone: a file anywhere keeps its parents.

    Never unlinks: a file is a user's, and rmdir refuses a folder that still
    holds one, even one written an instant ago. True when nothing is left.
    """
    if not folder.is_dir() or folder.is_symlink():
        return not folder.exists()
    for parent, _, _ in sorted(os.walk(folder), key=lambda entry: entry[0].count(os.sep), reverse=True):
        try:
            os.rmdir(parent)
        except FileNotFoundError:
            pass
        except OSError:
            continue
    return not folder.exists()
