"""The persistent queue: one SQLite file holding sessions, items and their history.

All SQL of the daemon lives here. Every status change is a guarded UPDATE that
names the status it expects to find; the allowed moves of items and of sessions
are also written into the database, where triggers refuse any other UPDATE of an
item's status or a session's state, so not even a hand-written statement can
make an illegal move. Each transition is one transaction, and the database runs
in WAL mode with synchronous=FULL, so a kill -9 at any instant leaves either the
old state or the new one.

Time is always passed in (`now`, seconds since the epoch) so tests control it.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from bgremover.queue.schema import prepare
from bgremover.queue.states import SessionState, Status, allowed


class IllegalTransition(Exception):
    """A transition the table forbids, or one whose item was not in the expected status."""


@dataclass(frozen=True)
class Session:
    name: str
    source: str | None
    state: SessionState
    format: str
    created_at: float
    updated_at: float
    last_item_at: float
    zip: str | None
    options: str | None = None
    error: str | None = None
    output: str | None = None  # cutout, mask or both, fixed when it opened, like its format
    finish_error: str | None = None  # why its ZIP or archive step failed last, while it is retried
    settled_at: float | None = None  # complete, its files settled and its JSON published: a start passes it by

    @property
    def ticket(self) -> dict:
        """What the folder's job ticket set ({} without one)."""
        return json.loads(self.options) if self.options else {}


@dataclass(frozen=True)
class Item:
    id: int
    session: str
    name: str
    member: str
    ext: str
    source: bytes
    status: Status
    error: str | None
    note: str | None
    attempts: int
    job_pid: int | None
    created_at: float
    updated_at: float
    worker: str | None = None  # the worker host that ran its last job, where another host did
    job_pid_start: int | None = None  # when job_pid's process started, to tell it from a later one with its pid
    review: str | None = None  # JSON: its result's quality signals and the review's decisions (review/record.py)
    options: str | None = None  # JSON: what a review asked its next runs to change; None: its session's options

    @property
    def own_options(self) -> dict:
        """The options a review gave this item over its session's ({} without one)."""
        return json.loads(self.options) if self.options else {}


def iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _session(row: sqlite3.Row) -> Session:
    return Session(**{**dict(row), "state": SessionState(row["state"])})


def _item(row: sqlite3.Row) -> Item:
    return Item(**{**dict(row), "status": Status(row["status"]), "source": bytes(row["source"])})


class Database:
    """The connection to the queue's file, and its transactions."""

    def __init__(self, path: Path, readonly: bool = False) -> None:
        self.path = path
        if readonly:
            # A reader never writes, so `status` is safe beside a running daemon.
            self.db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
        else:
            self.db = sqlite3.connect(path, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA busy_timeout = 5000")
        if not readonly:
            prepare(self.db, self.transaction)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock at BEGIN, so a transaction never fails half-way
        # because another connection (a `status` reader upgrading) holds it.
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """Several reads that see one moment of the queue: a commit between them cannot make them disagree."""
        self.db.execute("BEGIN DEFERRED")
        try:
            yield self.db
        finally:
            self.db.execute("COMMIT")


class SessionQueries(Database):
    """The queries on sessions: opening, finding, closing and completing them."""

    def create_session(
        self,
        name: str,
        source: str | None,
        fmt: str,
        now: float,
        ticket: dict | None = None,
        error: str | None = None,
        output: str | None = None,
    ) -> Session:
        with self.transaction():
            self.db.execute(
                "INSERT INTO sessions"
                " (name, source, state, format, output, created_at, updated_at, last_item_at, options, error)"
                " VALUES (?, ?, 'open', ?, ?, ?, ?, ?, ?, ?)",
                (name, source, fmt, output, now, now, now, json.dumps(ticket) if ticket else None, error),
            )
        return self.session(name)

    def set_ticket(
        self, name: str, fmt: str, output: str, ticket: dict | None, error: str | None, members: dict[int, str]
    ) -> None:
        """A session's job ticket read again: its format, output, options and error, and its items' ZIP names."""
        with self.transaction():
            self.db.execute(
                "UPDATE sessions SET format = ?, output = ?, options = ?, error = ? WHERE name = ?",
                (fmt, output, json.dumps(ticket) if ticket else None, error, name),
            )
            # Two steps, so no name is briefly held twice under UNIQUE (session, member).
            self.db.executemany("UPDATE items SET member = '#' || id WHERE id = ?", [(i,) for i in members])
            self.db.executemany("UPDATE items SET member = ? WHERE id = ?", [(m, i) for i, m in members.items()])

    def forget_empty_session(self, name: str) -> bool:
        """Drop a session that never got an item (its only file vanished before the take)."""
        with self.transaction():
            cursor = self.db.execute(
                "DELETE FROM sessions WHERE name = ? AND NOT EXISTS (SELECT 1 FROM items WHERE session = ?)",
                (name, name),
            )
        return cursor.rowcount == 1

    def session(self, name: str) -> Session | None:
        row = self.db.execute("SELECT * FROM sessions WHERE name = ?", (name,)).fetchone()
        return _session(row) if row else None

    def sessions(self, *states: SessionState) -> list[Session]:
        sql = "SELECT * FROM sessions"
        if states:
            sql += f" WHERE state IN ({','.join('?' * len(states))})"
        rows = self.db.execute(sql + " ORDER BY created_at, name", [s.value for s in states])
        return [_session(row) for row in rows]

    def unsettled_sessions(self) -> list[Session]:
        """Every session not yet remembered as settled: the open, the processing, and the complete not yet settled.

        Only these can need anything of a start, and a reader shows them whatever
        their age; the rest is history, read a page at a time (settled_sessions).
        """
        rows = self.db.execute("SELECT * FROM sessions WHERE settled_at IS NULL ORDER BY created_at, name")
        return [_session(row) for row in rows]

    def settled_sessions(self, limit: int, offset: int = 0) -> list[Session]:
        """One page of the settled sessions, newest first: `offset` newer ones are passed over."""
        rows = self.db.execute(
            "SELECT * FROM sessions WHERE settled_at IS NOT NULL ORDER BY created_at DESC, name DESC LIMIT ? OFFSET ?",
            (limit, offset),
        )
        return [_session(row) for row in rows]

    def settled_count(self) -> int:
        return self.db.execute("SELECT COUNT(*) FROM sessions WHERE settled_at IS NOT NULL").fetchone()[0]

    def sessions_in_each_state(self) -> dict[str, int]:
        """How many sessions are in each state (zero included), counted on the state index."""
        counts = {state.value: 0 for state in SessionState}
        counts.update({state: n for state, n in self.db.execute("SELECT state, COUNT(*) FROM sessions GROUP BY state")})
        return counts

    def mark_settled(self, name: str, now: float) -> bool:
        """Remember a complete session as settled; False if it is not complete (a retry reopened it meanwhile)."""
        with self.transaction():
            cursor = self.db.execute(
                "UPDATE sessions SET settled_at = ? WHERE name = ? AND state = 'complete' AND settled_at IS NULL",
                (now, name),
            )
        return cursor.rowcount == 1

    def open_session(self, source: str | None) -> Session | None:
        """The newest session still taking files from this source (None: loose files)."""
        row = self.db.execute(
            "SELECT * FROM sessions WHERE state = 'open' AND source IS ? ORDER BY created_at DESC, rowid DESC LIMIT 1",
            (source,),
        ).fetchone()
        return _session(row) if row else None

    def set_session_state(
        self, name: str, src: set[SessionState], dst: SessionState, now: float, zip_name: str | None = None
    ) -> bool:
        """Guarded like item transitions; False when the session was not in one of `src`.

        Every move from `src` to `dst` must be in SESSION_TRANSITIONS: asking for
        another is a programming error, refused before anything changes. A move
        forgets that the session was settled: whatever it reaches, the next start
        looks at it again until it is complete and settled anew (mark_settled).
        """
        refused = sorted(state.value for state in src if not allowed(state, dst))
        if refused:
            raise IllegalTransition(f"session {name}: {'|'.join(refused)} -> {dst.value} is not an allowed transition")
        with self.transaction():
            cursor = self.db.execute(
                f"UPDATE sessions SET state = ?, updated_at = ?, zip = COALESCE(?, zip), settled_at = NULL"
                f" WHERE name = ? AND state IN ({','.join('?' * len(src))})",
                (dst.value, now, zip_name, name, *[s.value for s in src]),
            )
        return cursor.rowcount == 1

    def set_finish_error(self, name: str, error: str | None) -> None:
        with self.transaction():
            self.db.execute("UPDATE sessions SET finish_error = ? WHERE name = ?", (error, name))

    # -- retention (supervisor/retention.py) --

    def complete_before(self, before: float, limit: int) -> list[Session]:
        """The oldest sessions complete since before `before`, at most `limit` of them (index sessions_by_state)."""
        rows = self.db.execute(
            "SELECT * FROM sessions WHERE state = 'complete' AND updated_at < ? ORDER BY updated_at, name LIMIT ?",
            (before, limit),
        )
        return [_session(row) for row in rows]

    def holding_files(self, names: list[str]) -> set[str]:
        """Those of `names` whose outbox and archive files a session still needs: unfinished, or with a retry left."""
        held = set()
        for name in names:  # one indexed look-up each: the callers pass a bounded few
            row = self.db.execute(
                "SELECT state != 'complete' OR EXISTS (SELECT 1 FROM items WHERE session = sessions.name"
                " AND status IN ('failed', 'cancelled')) FROM sessions WHERE name = ?",
                (name,),
            ).fetchone()
            if row is not None and row[0]:
                held.add(name)
        return held

    def forget_session(self, name: str) -> int | None:
        """Delete a complete session with its items and their events, in one transaction.

        None when it is not complete (a retry reopened it meanwhile): then nothing changes.
        Otherwise the number of items it had.
        """
        with self.transaction():
            if (
                self.db.execute("SELECT 1 FROM sessions WHERE name = ? AND state = 'complete'", (name,)).fetchone()
                is None
            ):
                return None
            # The rows that point at others go first, so no foreign key is ever left dangling.
            self.db.execute("DELETE FROM events WHERE item IN (SELECT id FROM items WHERE session = ?)", (name,))
            count = self.db.execute("DELETE FROM items WHERE session = ?", (name,)).rowcount
            self.db.execute("DELETE FROM sessions WHERE name = ?", (name,))
        return count


class ItemQueries(Database):
    """The queries on items: adding them, finding them, their guarded transitions and the event log."""

    def add_item(self, session: str, name: str, member: str, ext: str, source: bytes, now: float) -> Item:
        with self.transaction():
            cursor = self.db.execute(
                "INSERT INTO items (session, name, member, ext, source, status, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, 'queued', ?, ?)",
                (session, name, member, ext, source, now, now),
            )
            self.db.execute("UPDATE sessions SET last_item_at = ?, updated_at = ? WHERE name = ?", (now, now, session))
            self._record(cursor.lastrowid, None, Status.QUEUED, now, "taken")
        return self.item(cursor.lastrowid)

    def withdraw(self, item_id: int) -> bool:
        """Undo add_item for a file that vanished before it could be taken (never started)."""
        with self.transaction():
            cursor = self.db.execute(
                "DELETE FROM items WHERE id = ? AND status = 'queued' AND attempts = 0", (item_id,)
            )
            self.db.execute("DELETE FROM events WHERE item = ?", (item_id,))
        return cursor.rowcount == 1

    def item(self, item_id: int) -> Item | None:
        row = self.db.execute("SELECT * FROM items WHERE id = ?", (item_id,)).fetchone()
        return _item(row) if row else None

    def item_named(self, session: str, name: str) -> Item | None:
        row = self.db.execute("SELECT * FROM items WHERE session = ? AND name = ?", (session, name)).fetchone()
        return _item(row) if row else None

    def items(self, session: str | None = None, *statuses: Status) -> list[Item]:
        sql, args = "SELECT * FROM items WHERE 1", []
        if session is not None:
            sql, args = sql + " AND session = ?", [session]
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += [s.value for s in statuses]
        return [_item(row) for row in self.db.execute(sql + " ORDER BY id", args)]

    def names(self, session: str) -> tuple[set[str], set[str]]:
        """The item names and ZIP member names already used in a session."""
        rows = self.db.execute("SELECT name, member FROM items WHERE session = ?", (session,)).fetchall()
        return {row["name"] for row in rows}, {row["member"] for row in rows}

    def count(self, session: str) -> int:
        return self.db.execute("SELECT COUNT(*) FROM items WHERE session = ?", (session,)).fetchone()[0]

    def counts(self, session: str) -> dict[str, int]:
        counts = {status.value: 0 for status in Status}
        rows = self.db.execute("SELECT status, COUNT(*) FROM items WHERE session = ? GROUP BY status", (session,))
        counts.update({status: n for status, n in rows})
        return counts

    def counts_of(self, sessions: list[str]) -> dict[str, dict[str, int]]:
        """Each named session's items in each status (zero included), counted by SQLite, not read."""
        counts = {name: {status.value: 0 for status in Status} for name in sessions}
        rows = self.db.execute(
            "SELECT session, status, COUNT(*) FROM items WHERE session IN (SELECT value FROM json_each(?))"
            " GROUP BY session, status",
            (json.dumps(sessions),),
        )
        for session, status, n in rows:
            counts[session][status] = n
        return counts

    def items_in_each_status(self) -> dict[str, int]:
        """The whole queue's items in each status (zero included), counted on the status index, not read."""
        counts = {status.value: 0 for status in Status}
        counts.update(
            {status: n for status, n in self.db.execute("SELECT status, COUNT(*) FROM items GROUP BY status")}
        )
        return counts

    def items_of(self, sessions: list[str], *statuses: Status) -> list[Item]:
        """The items of the named sessions (of `statuses` only, if given), oldest first."""
        sql = "SELECT * FROM items WHERE session IN (SELECT value FROM json_each(?))"
        args: list = [json.dumps(sessions)]
        if statuses:
            sql += f" AND status IN ({','.join('?' * len(statuses))})"
            args += [s.value for s in statuses]
        return [_item(row) for row in self.db.execute(sql + " ORDER BY id", args)]

    def flagged_items(self, sessions: list[str] | None = None) -> list[Item]:
        """The done items a quality signal flagged and no one has decided on yet (of `sessions`, if given)."""
        sql = "SELECT * FROM items WHERE status = 'done' AND json_extract(review, '$.state') = 'flagged'"
        args: list = []
        if sessions is not None:
            sql, args = sql + " AND session IN (SELECT value FROM json_each(?))", [json.dumps(sessions)]
        return [_item(row) for row in self.db.execute(sql + " ORDER BY id", args)]

    def pending(self) -> list[sqlite3.Row]:
        """(id, session, status) of every queued or processing item, lowest id first: the work under way."""
        return self.db.execute(
            "SELECT id, session, status FROM items WHERE status IN ('queued', 'processing') ORDER BY id"
        ).fetchall()

    def finished_since(self, since: float) -> list[sqlite3.Row]:
        """(session, updated_at) of the items done or failed at `since` or later: the work of the last minutes."""
        return self.db.execute(
            "SELECT session, updated_at FROM items WHERE status IN ('done', 'failed') AND updated_at >= ?", (since,)
        ).fetchall()

    def transition(
        self,
        item_id: int,
        src: Status,
        dst: Status,
        now: float,
        error: str | None = None,
        reason: str | None = None,
        note: str | None = None,
        attempt: int | None = None,
        worker: str | None = None,
    ) -> Item:
        """Move one item from `src` to `dst`, or raise IllegalTransition and change nothing.

        `error`, `note` and `worker` describe the new status, so all are replaced on every move.
        With `attempt`, the move is made only if the item is still at that attempt:
        the outcome of a job is recorded for the attempt that ran it, never a later one.
        """
        if not allowed(src, dst):
            raise IllegalTransition(f"item {item_id}: {src.value} -> {dst.value} is not an allowed transition")
        with self.transaction():
            cursor = self.db.execute(
                "UPDATE items SET status = ?, error = ?, note = ?, worker = ?, updated_at = ?,"
                " attempts = attempts + (? = 'processing'), job_pid = NULL, job_pid_start = NULL"
                " WHERE id = ? AND status = ? AND (? IS NULL OR attempts = ?)",
                (dst.value, error, note, worker, now, dst.value, item_id, src.value, attempt, attempt),
            )
            if cursor.rowcount != 1:
                at = f" at attempt {attempt}" if attempt is not None else ""
                raise IllegalTransition(f"item {item_id} is not {src.value}{at}; {src.value} -> {dst.value} refused")
            self._record(item_id, src, dst, now, reason)
        return self.item(item_id)

    def next_queued(self) -> Item | None:
        """The oldest queued item: first in, first out across sessions."""
        row = self.db.execute("SELECT * FROM items WHERE status = 'queued' ORDER BY id LIMIT 1").fetchone()
        return _item(row) if row else None

    def recover(self, now: float, keep: frozenset[int] = frozenset()) -> list[Item]:
        """Items a previous life left in processing go back to queued, but those in `keep`; returns them as they were."""
        stranded = [item for item in self.items(None, Status.PROCESSING) if item.id not in keep]
        for item in stranded:
            # PROCESSING -> QUEUED (recovery after a crash)
            self.transition(item.id, Status.PROCESSING, Status.QUEUED, now, reason="recovered")
        return stranded

    def set_job_pid(self, item_id: int, pid: int, started: int | None = None) -> None:
        """The running job's pid and its process's start time, for the next start's recovery to end it by."""
        with self.transaction():
            self.db.execute(
                "UPDATE items SET job_pid = ?, job_pid_start = ? WHERE id = ? AND status = 'processing'",
                (pid, started, item_id),
            )

    def events(self, item_id: int | None = None) -> list[sqlite3.Row]:
        if item_id is None:
            return self.db.execute("SELECT * FROM events ORDER BY id").fetchall()
        return self.db.execute("SELECT * FROM events WHERE item = ? ORDER BY id", (item_id,)).fetchall()

    def set_review(
        self, item_id: int, review: str | None, options: str | None = None, keep_options: bool = True
    ) -> None:
        """Record an item's review (JSON), and with `keep_options` False its own options too; no status changes."""
        with self.transaction():
            if keep_options:
                self.db.execute("UPDATE items SET review = ? WHERE id = ?", (review, item_id))
            else:
                self.db.execute("UPDATE items SET review = ?, options = ? WHERE id = ?", (review, options, item_id))

    def retryable_since(self, since: float) -> list[Item]:
        """The failed and cancelled items of unfinished sessions and of those complete since `since`: what retention keeps."""
        rows = self.db.execute(
            "SELECT items.* FROM items JOIN sessions ON sessions.name = items.session"
            " WHERE items.status IN ('failed', 'cancelled') AND (sessions.state != 'complete' OR sessions.updated_at >= ?)"
            " ORDER BY items.id",
            (since,),
        )
        return [_item(row) for row in rows]

    def _record(self, item_id: int, src: Status | None, dst: Status, now: float, reason: str | None) -> None:
        self.db.execute(
            "INSERT INTO events (item, src, dst, at, reason) VALUES (?, ?, ?, ?, ?)",
            (item_id, src.value if src else None, dst.value, now, reason),
        )


class Store(SessionQueries, ItemQueries):
    """The persistent queue: every query the daemon makes, on one SQLite file."""
