"""The status JSON of each session, written to the outbox whenever something about it changes.

A write the outbox refuses is not lost: the session is marked stale and written
again once the outbox takes writes (flush_outbox), after the refusals' wait.
A complete session whose JSON is current is remembered as settled (a session
becomes complete only once its files are settled), so later starts pass it by.
"""

from __future__ import annotations

import json
import time

from bgremover.outbox import zips
from bgremover.outbox.status import session_document
from bgremover.queue.states import SessionState
from bgremover.queue.store import Session, Store
from bgremover.settings import Settings
from bgremover.supervisor.options import SessionOptions
from bgremover.supervisor.refusals import Refusals


class Publisher:
    def __init__(self, settings: Settings, store: Store, refusals: Refusals, options: SessionOptions) -> None:
        self.settings = settings
        self.store = store
        self.refusals = refusals
        self.options = options
        self.stale: set[str] = set()  # sessions whose status JSON the outbox refused; written again later

    def status_document(self, session: Session) -> dict:
        note = self.options.subject_note(session)
        return session_document(session, self.store.items(session.name), self.settings, note)

    def publish(self, name: str) -> None:
        """Write a session's status JSON; if the outbox refuses, it is written again after a wait."""
        now = time.monotonic()
        if not self.refusals.outbox.due(now):
            self.stale.add(name)
            return
        session = self.store.session(name)
        try:
            zips.write_status(self.settings.outbox / f"{name}.json", self.status_document(session))
        except OSError as exc:
            self.stale.add(name)
            self.refusals.outbox_refused(exc, now)
            return
        self.stale.discard(name)
        self.refusals.outbox_accepted(now)
        self.remember_settled(session)

    def publish_if_stale(self, session: Session) -> None:
        path = self.settings.outbox / f"{session.name}.json"
        try:
            if json.loads(path.read_text("utf-8")) == self.status_document(session):
                self.remember_settled(session)
                return
        except (OSError, ValueError):
            pass
        self.publish(session.name)

    def remember_settled(self, session: Session) -> None:
        """Its JSON is current: a complete session needs nothing more of a start until it leaves complete."""
        if session.state is SessionState.COMPLETE and session.settled_at is None:
            self.store.mark_settled(session.name, time.time())

    def flush_outbox(self, now: float) -> None:
        """Write the status JSONs the outbox refused before, once the wait is over."""
        if not self.stale or not self.refusals.outbox.due(now):
            return
        self.settings.outbox.mkdir(parents=True, exist_ok=True)  # someone may have removed it
        for name in sorted(self.stale):
            self.publish(name)
            if self.refusals.outbox.failing:
                return
