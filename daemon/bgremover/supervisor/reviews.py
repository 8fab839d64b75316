"""The review markers: a person's decision on a done item, read from review/ and acted on.

review/approve/SESSION/NAME records an approval; review/retry/SESSION/NAME
runs a done item again with other options; review/mask/SESSION/NAME runs it
again on a person's mask instead of the model's (review/requests.py writes
them). A decision is recorded in the item's review (review/record.py), its
session reopened so its ZIP and JSON are written again, and the marker
removed. A marker naming nothing that can be reviewed is a warning in the
log, never an error; a name starting with a dot is still being written.

review/ is walked on every pass: it holds nothing but markers not yet read,
and the session folders they were in are removed once empty.
"""

from __future__ import annotations

import time
from pathlib import Path

import structlog

from bgremover.backoff import describe, is_storage_error
from bgremover.intake.names import display
from bgremover.intake.tickets import TicketError, validated
from bgremover.queue.states import REVIEWABLE, SessionState, Status
from bgremover.queue.store import Item, Store, iso
from bgremover.review import record
from bgremover.review.requests import FOLDERS, read_marker
from bgremover.settings import Settings
from bgremover.supervisor.items import ItemMoves, remove_empty_tree
from bgremover.supervisor.markers import markers_in
from bgremover.supervisor.sessions import Sessions

log = structlog.get_logger()


class Reviews:
    def __init__(self, settings: Settings, store: Store, sessions: Sessions, moves: ItemMoves) -> None:
        self.settings = settings
        self.store = store
        self.sessions = sessions
        self.moves = moves
        self.spool = sessions.spool
        self.publisher = sessions.publisher

    def read_reviews(self, now: float) -> None:
        for decision, folder_name in FOLDERS.items():
            folder = self.settings.review_dir / folder_name
            if not folder.is_dir():
                folder.mkdir(parents=True, exist_ok=True)
                continue
            for session_folder in sorted(folder.iterdir()):
                self.read_session_folder(decision, folder, session_folder)

    def read_session_folder(self, decision: str, folder: Path, session_folder: Path) -> None:
        for marker in sorted(markers_in(session_folder)):
            parts = marker.relative_to(folder).parts
            if len(parts) < 2:
                log.warning("review_marker_ignored", marker=display(parts[0]), reason="not inside a session's folder")
            else:
                self.decide(decision, display(parts[0]), display("/".join(parts[1:])), marker)
            marker.unlink(missing_ok=True)
        if session_folder.is_dir() and not session_folder.is_symlink():
            remove_empty_tree(session_folder)

    def decide(self, decision: str, session: str, name: str, marker: Path) -> None:
        item = self.store.item_named(session, name)
        if item is None or item.status not in REVIEWABLE:
            reason = "no such item" if item is None else f"item is {item.status.value}"
            log.warning("review_marker_ignored", session=session, item=name, decision=decision, reason=reason)
            return
        try:
            if decision == "approved":
                self.approve(item, read_marker(marker))
            elif decision == "retried":
                self.retry(item, read_marker(marker))
            else:
                self.correct(item, marker)
        except (ValueError, TicketError) as exc:  # a marker that says nothing we can act on
            log.warning("review_marker_ignored", session=session, item=name, decision=decision, reason=str(exc))
        except OSError as exc:  # a marker that cannot be read (a dangling link, no permission)
            if decision == "corrected" and is_storage_error(exc):
                raise  # the state folder refused the mask's copy: the marker stays, and is read again later
            log.warning("review_marker_ignored", session=session, item=name, decision=decision, reason=describe(exc))

    def approve(self, item: Item, content: dict) -> None:
        by = who(content)
        self.store.set_review(item.id, record.decided(item.review, "approved", iso(time.time()), by))
        log.info("item_reviewed", session=item.session, item=item.name, decision="approved", by=by)
        self.reopen(item.session)

    def retry(self, item: Item, content: dict) -> None:
        options = validated(content.get("options") or {})
        if not options:
            raise ValueError("a retry names no option to change")
        if not self.has_original(item):
            return
        self.spool.discard(self.spool.corrected_mask(item))  # the model decides the alpha again
        review = record.decided(item.review, "retried", iso(time.time()), who(content), options)
        self.store.set_review(item.id, review, record.dumped({**item.own_options, **options}), keep_options=False)
        self.requeue(item, "retried", options=options)

    def correct(self, item: Item, marker: Path) -> None:
        if not self.has_original(item):
            return
        try:
            self.spool.replace_mask(item, marker)
        except OSError as exc:
            if is_storage_error(exc):
                raise  # the state folder refuses writes: the loop waits, and the marker is read again
            log.warning("review_mask_refused", session=item.session, item=item.name, error=describe(exc))
            return
        self.store.set_review(item.id, record.decided(item.review, "corrected", iso(time.time())))
        self.requeue(item, "corrected")

    def has_original(self, item: Item) -> bool:
        if self.spool.original(item) is not None:
            return True
        log.warning(
            "review_marker_ignored", session=item.session, item=item.name,
            reason="its original is no longer kept (keep_originals = false, and it was not flagged)",
        )  # fmt: skip
        return False

    def requeue(self, item: Item, decision: str, **fields) -> None:
        log.info("item_reviewed", session=item.session, item=item.name, decision=decision, **fields)
        # Reopen first, as a retry marker does: a kill between the two leaves a processing session, never a
        # complete one with a queued item.
        self.store.set_session_state(item.session, {SessionState.COMPLETE}, SessionState.PROCESSING, time.time())
        self.moves.move(self.store.item(item.id), Status.QUEUED, f"review: {decision}")  # DONE -> QUEUED
        self.sessions.unfinished.add(item.session)
        self.publisher.publish(item.session)

    def reopen(self, session: str) -> None:
        """Its ZIP and JSON are written again, to say what was decided (a flagged item leaves _review/)."""
        self.store.set_session_state(session, {SessionState.COMPLETE}, SessionState.PROCESSING, time.time())
        self.sessions.unfinished.add(session)
        self.publisher.publish(session)


def who(content: dict) -> str | None:
    by = content.get("by")
    if by is not None and not isinstance(by, str):
        raise ValueError("'by' must be a name")
    return by.strip()[:200] or None if by else None
