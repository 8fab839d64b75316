"""Dropped files become items: recorded in a session, then moved out of the inbox into the spool.

The watcher only says which files are stable; everything after that happens
here, on the loop's thread: which session a file joins (a folder is its own
session, with its job ticket), the item's distinct name and ZIP member, the
record, then the move. A file is recorded before it is moved, so a crash in
between is finished at the next start (finish_take) and nothing is lost.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import structlog

from bgremover.backoff import describe, is_storage_error
from bgremover.formats import FORMAT_EXTENSIONS
from bgremover.intake.names import display, fitted_path, session_name, twin
from bgremover.intake.tickets import TICKET_NAME, TicketError, read_ticket
from bgremover.intake.watcher import Intake
from bgremover.models.manifest import ModelError
from bgremover.outbox import zips
from bgremover.queue.spool import NotSynced, Spool
from bgremover.queue.store import Item, Session, Store
from bgremover.settings import Settings
from bgremover.supervisor.sessions import Sessions

log = structlog.get_logger()

PATH_MAX = 4096  # bytes in a whole path on Linux, its closing NUL included
# A take costs a database commit and a folder fsync (milliseconds; far more on a NAS), so
# thousands dropped at once would hold one pass for many seconds: no job reaped or started,
# no watchdog ping. Each pass takes at most this many files, for at most this long; the
# rest stay due, so the next pass follows at once, after the other steps had their turn.
TAKES_PER_PASS = 200
TAKE_SECONDS_PER_PASS = 0.5


class Taking:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        spool: Spool,
        intake: Intake,
        sessions: Sessions,
        stopping: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.store = store
        self.spool = spool
        self.intake = intake
        self.sessions = sessions
        self.options = sessions.options
        self.publisher = sessions.publisher
        self.stopping = stopping

    def take_ready_files(self, now: float) -> None:
        ready = self.intake.ready(now, TAKES_PER_PASS)
        touched: set[str] = set()  # each session's status JSON is written once per pass, not once per file
        until = time.monotonic() + TAKE_SECONDS_PER_PASS
        try:
            for index, path in enumerate(ready):
                if self.stopping():
                    return
                if index and time.monotonic() >= until:  # at least one a pass, however slow the disk
                    self.intake.watch_again(ready[index:])  # due at once: the next pass takes them
                    return
                try:
                    touched.add(self.take(path))
                except Exception as exc:  # one odd file must not hold back the others
                    if is_storage_error(exc):
                        self.intake.watch_again(ready[index:])  # still in the inbox: taken once the state works
                        raise
                    log.exception("take_failed", path=str(path))
        finally:
            for name in sorted(touched - {None}):
                self.publisher.publish(name)

    def take(self, path: Path) -> str | None:
        """Record and move one dropped file; the session it joined, or None if it was skipped."""
        if not self.intake.still_as_seen(path):
            log.debug("file_still_changing", path=str(path))
            return None  # watched again: taken once it holds still
        now = time.time()
        relative = path.relative_to(self.settings.inbox)
        parts = [display(part) for part in relative.parts]
        source = parts[0] if len(parts) > 1 else None
        session = self.session_for(source, now, self.settings.inbox / relative.parts[0] if source else None)
        names, members = self.store.names(session.name)
        name = unused_name(fitted_path("/".join(parts[1:] if source else parts)), names)
        too_long = self.path_too_long(session.name, name)
        if too_long is not None:
            self.sessions.forget_if_empty(session.name)  # opened for this file alone
            log.warning("file_refused", path=str(path), reason=too_long)
            return None
        member = self.member(session, name, members)
        ext = path.suffix.lower()
        item = self.store.add_item(
            session.name, name, member, ext, os.fsencode(path.relative_to(self.settings.root)), now
        )
        self.sessions.item_taken(session.name, time.monotonic())
        try:
            self.spool.take(path, item)
        except NotSynced as exc:
            # The file has left the inbox: withdrawing the item now would lose it. If the
            # move is undone by a power cut, the next start finds the record and takes it again.
            log.warning("take_not_synced", session=session.name, item=name, reason=describe(exc))
        except OSError as exc:
            self.store.withdraw(item.id)
            self.sessions.forget_if_empty(session.name)  # opened for this file alone
            if is_storage_error(exc):
                raise
            log.warning("file_skipped", path=str(path), reason=describe(exc))
            return None
        log.info("item_queued", session=session.name, item=name, status="queued")
        if self.store.count(session.name) >= self.settings.max_session_items:
            self.sessions.close_session(session, "full")
        return session.name

    def path_too_long(self, session: str, name: str) -> str | None:
        """Why the item's archive or retry path could never be made, or None.

        Checked before the take, not when the session is archived: there the
        file could only wait forever. Its name parts are fitted to 255 bytes
        already; the whole path grows with every %XX shown for a byte that is
        not UTF-8, so a path that fits in the inbox may not fit in the archive.
        """
        root = self.settings.root
        for path in (root / "archive" / session / name, self.settings.retry_dir / session / name):
            if len(os.fsencode(path)) >= PATH_MAX:
                return (
                    f"its path in {path.relative_to(root).parts[0]}/ would be {len(os.fsencode(path))} bytes, "
                    f"over the {PATH_MAX}-byte limit: move it to a shorter folder, or rename it, and drop it again"
                )
        return None

    def session_for(self, source: str | None, now: float, folder: Path | None = None) -> Session:
        """The open session for this source with room left, or a new one (with the folder's job ticket)."""
        session = self.store.open_session(source)
        if session is not None and self.store.count(session.name) < self.settings.max_session_items:
            return session
        if session is not None:
            self.sessions.close_session(session, "full")
        base = source or "batch-" + datetime.fromtimestamp(now, UTC).strftime("%Y%m%d-%H%M%S")
        n = 1
        while self.store.session(name := session_name(base, n)) or left_files(self.settings, name):
            n += 1
        ticket, error = self.read_ticket(folder)
        fmt, output = self.options.format_for(ticket), self.options.output_for(ticket)
        session = self.store.create_session(name, source, fmt, now, ticket, error, output)
        log.info("session_opened", session=name, **({"ticket": ticket} if ticket else {}))
        if error:
            log.error("ticket_refused", session=name, error=error)
        elif note := self.options.subject_note(session):
            model = self.options.options_for(ticket)["model"]
            log.warning("model_made_for_people", session=name, model=model, note=note)
        return session

    def member(self, session: Session, name: str, members: set[str]) -> str:
        """The new item's ZIP name: distinct from every cutout, and from every mask when there are masks."""
        ext = FORMAT_EXTENSIONS[session.format]
        if not self.options.with_masks(session):
            return zips.member_name(name, ext, members)
        return zips.member_with_mask(name, ext, members | {zips.mask_member(m) for m in members})

    def read_ticket(self, folder: Path | None) -> tuple[dict, str | None]:
        """The folder's job ticket, or the sentence saying why it cannot be used."""
        if folder is None:
            return {}, None
        try:
            ticket = read_ticket(folder, self.options.options_for(None)) or {}
            if "model" in ticket:
                self.options.model_named(ticket["model"])
            return ticket, None
        except TicketError as exc:
            return {}, str(exc)
        except ModelError as exc:
            return {}, f"the job ticket {TICKET_NAME} names a model this daemon cannot use: {exc}"

    def reread_ticket(self, session: Session) -> None:
        """A refused ticket is read again on a retry: once fixed, the session runs with it."""
        ticket, error = self.read_ticket(self.settings.inbox / session.source if session.source else None)
        if error:
            return
        fmt, output = self.options.format_for(ticket), self.options.output_for(ticket)
        renamed = dataclasses.replace(
            session, format=fmt, output=output, options=json.dumps(ticket) if ticket else None
        )
        members: dict[int, str] = {}
        for item in self.store.items(session.name):
            members[item.id] = self.member(renamed, item.name, set(members.values()))
        self.store.set_ticket(session.name, fmt, output, ticket, None, members)
        log.info("ticket_applied", session=session.name, ticket=ticket)

    def finish_take(self, item: Item) -> None:
        """A crash between recording an item and moving its file: finish the move, or forget it."""
        if self.spool.original(item) is not None:
            return
        dropped = self.spool.dropped(item)
        if dropped.is_file():
            try:
                self.spool.take(dropped, item)
            except NotSynced as exc:  # moved all the same: the item keeps it
                log.warning("take_not_synced", session=item.session, item=item.name, reason=describe(exc))
            log.info("take_completed", session=item.session, item=item.name)
        elif self.store.withdraw(item.id):
            self.sessions.forget_if_empty(item.session)
            log.warning("file_vanished", session=item.session, item=item.name)


def left_files(settings: Settings, name: str) -> bool:
    """Whether a session of this name left files a new one would mix with; its rows may be forgotten already."""
    paths = (settings.outbox / f"{name}.json", settings.outbox / f"{name}.zip", settings.archive_dir / name)
    return any(os.path.lexists(path) for path in (*paths, settings.retry_dir / name))


def unused_name(name: str, names: set[str]) -> str:
    # The same name dropped twice into one open session: keep both, like a browser's downloads.
    candidate, n = name, 1
    while candidate in names:
        n += 1
        candidate = twin(name, n)
    return candidate
