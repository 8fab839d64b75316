"""A root with a long past, as the daemon leaves it: complete sessions, done items, their events and status JSON.

Written straight into the queue's file, in a few big transactions, because a
year of work cannot be replayed through a daemon in a test. The schema and its
triggers are the daemon's own (a Store opened on the file makes them), and the
rows take the moves the daemon's would: a session is created open, then closed,
then completed; an item is created queued, then taken, then finished. So the
database refuses this history just as it would refuse a daemon's wrong move.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from bgremover.outbox.status import session_document
from bgremover.queue.store import Store
from bgremover.settings import Settings

DAY = 86400.0
FAILED_EVERY = 1000  # one item in a thousand failed, and was never retried


@dataclass(frozen=True)
class History:
    sessions: int
    items_per_session: int
    days: float = 365.0
    published: int = 200  # the newest sessions whose status JSON is left in outbox/

    @property
    def items(self) -> int:
        return self.sessions * self.items_per_session


def session_name(index: int) -> str:
    return f"shoot-{index:06d}"


def prepare(root: Path, history: History, now: float) -> None:
    """`history` ended just before `now` under `root`: its database, its retry folders and the newest status JSONs."""
    for name in ("inbox", "outbox", "retry", "cancel", "state"):
        (root / name).mkdir(parents=True, exist_ok=True)
    settings = Settings(root=root)
    Store(settings.database).close()  # the daemon's schema, triggers and state tables
    db = sqlite3.connect(settings.database, isolation_level=None)
    try:
        fill(db, history, now)
    finally:
        db.close()
    make_retry_folders(settings, history)
    publish_newest(settings, history)


def fill(db: sqlite3.Connection, history: History, now: float) -> None:
    """The rows, made by SQLite itself from two counters: a Python loop would take most of the time."""
    # A scratch file's settings: a crash here loses only the fixture. The daemon puts WAL back at its open.
    for pragma in ("synchronous = OFF", "journal_mode = OFF", "cache_size = -262144"):
        db.execute(f"PRAGMA {pragma}")
    step = history.days * DAY / history.sessions
    counts = {"sessions": history.sessions, "per": history.items_per_session}
    db.execute("BEGIN")
    db.execute(SESSIONS, {**counts, "start": now - history.days * DAY, "step": step})
    db.execute(ITEMS, counts)
    db.execute(EVENTS, {"failed_every": FAILED_EVERY})
    db.execute("COMMIT")
    db.execute("BEGIN")
    moves(db, history)
    db.execute("COMMIT")
    db.execute("PRAGMA journal_mode = WAL")


COUNTER = "{name}(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM {name} WHERE i + 1 < :{limit})"
SESSIONS = f"""WITH RECURSIVE {COUNTER.format(name="s", limit="sessions")}
INSERT INTO sessions (name, source, state, format, output, created_at, updated_at, last_item_at)
SELECT printf('shoot-%06d', i), printf('shoot-%06d', i), 'open', 'png', 'cutout',
       :start + i * :step, :start + i * :step, :start + i * :step
FROM s"""
# One item a second within its session; the ids in order, as the daemon hands them out.
ITEMS = f"""WITH RECURSIVE {COUNTER.format(name="n", limit="per")}
INSERT INTO items (id, session, name, member, ext, source, status, created_at, updated_at)
SELECT (s.rowid - 1) * :per + n.i + 1, s.name, printf('IMG_%04d.jpg', n.i), printf('IMG_%04d.png', n.i), '.jpg',
       CAST('inbox/' || s.name || printf('/IMG_%04d.jpg', n.i) AS BLOB), 'queued',
       s.created_at + n.i, s.created_at + n.i
FROM sessions AS s, n
ORDER BY s.rowid, n.i"""
# The three moves of each item's life, in the order they happened: taken, its job started, its verdict.
EVENTS = """INSERT INTO events (item, src, dst, at, reason)
SELECT id, src, dst, at, reason FROM (
    SELECT id, NULL AS src, 'queued' AS dst, created_at AS at, 'taken' AS reason FROM items
    UNION ALL SELECT id, 'queued', 'processing', created_at + 0.1, NULL FROM items
    UNION ALL SELECT id, 'processing', CASE WHEN id % :failed_every = 0 THEN 'failed' ELSE 'done' END,
                     created_at + 0.5, NULL FROM items
)
ORDER BY at, id"""


def moves(db: sqlite3.Connection, history: History) -> None:
    """Every row moved along the daemon's edges, in bulk: the triggers check each one."""
    # OPEN -> PROCESSING -> COMPLETE, each with its ZIP written after its last item.
    db.execute("UPDATE sessions SET state = 'processing'")
    db.execute(
        "UPDATE sessions SET state = 'complete', zip = name || '.zip', updated_at = updated_at + ?",
        (history.items_per_session + 1.0,),
    )
    # QUEUED -> PROCESSING -> DONE | FAILED, at the times of their events.
    db.execute("UPDATE items SET status = 'processing', attempts = 1")
    db.execute(
        "UPDATE items SET status = 'failed', error = 'bad input', updated_at = updated_at + 0.5 WHERE id % ? = 0",
        (FAILED_EVERY,),
    )
    db.execute("UPDATE items SET status = 'done', updated_at = updated_at + 0.5 WHERE status = 'processing'")
    # Each complete session's files settled and its JSON published, as the daemon records it.
    db.execute("UPDATE sessions SET settled_at = updated_at")


def make_retry_folders(settings: Settings, history: History) -> None:
    """The daemon makes retry/SESSION/ for each failed item, so a user can touch its marker."""
    failed = range(FAILED_EVERY, history.items + 1, FAILED_EVERY)
    for session in {(item_id - 1) // history.items_per_session for item_id in failed}:
        (settings.retry_dir / session_name(session)).mkdir(parents=True, exist_ok=True)


def publish_newest(settings: Settings, history: History) -> None:
    """The newest sessions' status JSON, as the daemon wrote it (older ones a user has long collected)."""
    store = Store(settings.database, readonly=True)
    try:
        for s in range(max(0, history.sessions - history.published), history.sessions):
            session = store.session(session_name(s))
            document = session_document(session, store.items(session.name), settings)
            (settings.outbox / f"{session.name}.json").write_text(json.dumps(document, indent=2), "utf-8")
    finally:
        store.close()
