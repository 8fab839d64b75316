"""The queue's SQLite schema: its tables, and the triggers that hold items and sessions to their state tables.

Applied every time the file is opened for writing, so a database made by an
older version gains what was added since (IF NOT EXISTS, missing columns),
and the database's copy of each state table is exactly the one in states.py.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from contextlib import AbstractContextManager as ContextManager
from dataclasses import dataclass

from bgremover.queue.states import SESSION_TRANSITIONS, TRANSITIONS, SessionState, Status

# The items table, under the name given: created under its own name, or beside an older
# one that must be copied into it.
ITEMS = """CREATE TABLE IF NOT EXISTS {name} (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,  -- never used twice: an id names files in state/
    session    TEXT NOT NULL REFERENCES sessions(name),
    name       TEXT NOT NULL,       -- relative name as dropped, valid UTF-8
    member     TEXT NOT NULL,       -- its name in the session's ZIP
    ext        TEXT NOT NULL,       -- the original's extension, lower case
    source     BLOB NOT NULL,       -- where it was dropped, relative to the root, as raw bytes
    status     TEXT NOT NULL,
    error      TEXT,
    note       TEXT,                -- what the user should know about a result, e.g. it was reduced
    attempts   INTEGER NOT NULL DEFAULT 0,
    job_pid    INTEGER,
    job_pid_start INTEGER,          -- when that pid's process started (clock ticks since boot): a reused pid is not the job
    worker     TEXT,                -- the worker host that made a done item's result (the celery runner)
    review     TEXT,                -- JSON: the quality signals of its result and the decisions taken on it
    options    TEXT,                -- JSON: the options a review asked for, over its session's, for its next runs
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    UNIQUE (session, name),
    UNIQUE (session, member)
);"""

SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    name         TEXT PRIMARY KEY,
    source       TEXT,              -- the inbox folder it came from; NULL for loose files
    state        TEXT NOT NULL,
    format       TEXT NOT NULL,
    output       TEXT,              -- cutout, mask or both, as it started (NULL in older rows: the setting's)
    created_at   REAL NOT NULL,
    updated_at   REAL NOT NULL,
    last_item_at REAL NOT NULL,     -- drives the idle close
    zip          TEXT,              -- the ZIP's file name once one was written
    options      TEXT,              -- JSON: what the folder's job ticket set, if it had one
    error        TEXT,              -- why the whole session is refused (an invalid job ticket)
    finish_error TEXT,              -- why its ZIP or archive step failed last; tried again after a wait
    settled_at   REAL               -- when, complete, its files were settled and its JSON published; NULL otherwise
);
{items}
CREATE INDEX IF NOT EXISTS items_by_status ON items (status, id);
-- Every status change, old -> new, with its reason: an audit log of the queue.
CREATE TABLE IF NOT EXISTS events (
    id     INTEGER PRIMARY KEY,
    item   INTEGER NOT NULL,
    src    TEXT,
    dst    TEXT NOT NULL,
    at     REAL NOT NULL,
    reason TEXT
);
-- An item's history is read by its id (its last attempt, a retry's events): without this,
-- every such read scans the whole log, which only grows.
CREATE INDEX IF NOT EXISTS events_by_item ON events (item, id);
-- Retention reads the oldest complete sessions first, a few at a time: without this,
-- each of its steps would scan every session ever kept.
CREATE INDEX IF NOT EXISTS sessions_by_state ON sessions (state, updated_at);
"""

# Made after the columns they name, which a file of an older version gains only in add_missing_columns.
# One index per query shape, so that a start, a pass or a read costs the work under way, not the history:
INDEXES = """
-- the sessions a start still has to look at, and a reader shows whatever their age (Store.unsettled_sessions)
CREATE INDEX IF NOT EXISTS sessions_unsettled ON sessions (created_at, name) WHERE settled_at IS NULL;
-- the pages of settled sessions, newest first (Store.settled_sessions)
CREATE INDEX IF NOT EXISTS sessions_settled ON sessions (created_at, name) WHERE settled_at IS NOT NULL;
-- the open sessions every pass looks at for the idle close (Store.sessions with states)
CREATE INDEX IF NOT EXISTS sessions_by_state ON sessions (state, created_at, name);
-- the items finished in the last minutes, from which a rate is figured (Store.finished_since)
CREATE INDEX IF NOT EXISTS items_by_finish ON items (status, updated_at);
"""


@dataclass(frozen=True)
class Machine:
    """Where one state table of states.py lives in the database, and the name of its copy there."""

    table: str  # the rows that move: items or sessions
    column: str  # their state
    noun: str
    start: Status | SessionState  # what a new row must start in
    moves: str  # the database's copy of `transitions`, read by the trigger
    transitions: dict


MACHINES = (
    Machine("items", "status", "item", Status.QUEUED, "allowed_transitions", TRANSITIONS),
    Machine("sessions", "state", "session", SessionState.OPEN, "allowed_session_transitions", SESSION_TRANSITIONS),
)


def guards(machine: Machine) -> str:
    """The table of allowed moves and the two triggers that hold every row of `machine.table` to it.

    IF NOT EXISTS, like the rest of the schema: a database made by a version
    without them gets them when it is next opened.
    """
    table, column, start, moves = machine.table, machine.column, machine.start.value, machine.moves
    return f"""
CREATE TABLE IF NOT EXISTS {moves} (
    src TEXT NOT NULL,
    dst TEXT NOT NULL,
    PRIMARY KEY (src, dst)
);
CREATE TRIGGER IF NOT EXISTS {table}_only_start_{start}
BEFORE INSERT ON {table} WHEN NEW.{column} != '{start}'
BEGIN SELECT RAISE(ABORT, 'a new {machine.noun} must start {start}'); END;
CREATE TRIGGER IF NOT EXISTS {table}_only_allowed_transitions
BEFORE UPDATE OF {column} ON {table}
WHEN NOT EXISTS (SELECT 1 FROM {moves} WHERE src = OLD.{column} AND dst = NEW.{column})
BEGIN SELECT RAISE(ABORT, 'illegal {column} transition'); END;
"""


SCHEMA = SCHEMA.replace("{items}", ITEMS.format(name="items")) + "".join(guards(machine) for machine in MACHINES)


def prepare(db: sqlite3.Connection, transaction: Callable[[], ContextManager]) -> None:
    """Make the file a queue of this version: its pragmas, tables, triggers and the copies of the state tables."""
    db.execute("PRAGMA journal_mode = WAL")
    # FULL: a committed transition survives a power cut, not just a kill -9.
    db.execute("PRAGMA synchronous = FULL")
    # executescript commits whatever is pending, so it runs on its own; the
    # schema is idempotent (IF NOT EXISTS) and safe to replay on every start.
    db.executescript(SCHEMA)
    add_missing_columns(db)
    if not never_reuses_ids(db):
        number_items_once(db, transaction)
        db.executescript(SCHEMA)  # the index and triggers went with the older table
    db.executescript(INDEXES)
    with transaction():
        for machine in MACHINES:
            # The database's copy is the table, exactly: a move dropped from states.py goes from here too.
            db.execute(f"DELETE FROM {machine.moves}")
            db.executemany(
                f"INSERT INTO {machine.moves} (src, dst) VALUES (?, ?)",
                [(src.value, dst.value) for src, dsts in machine.transitions.items() for dst in dsts],
            )


def add_missing_columns(db: sqlite3.Connection) -> None:
    # A database from an older version lacks columns added since; CREATE
    # TABLE IF NOT EXISTS leaves it as it is, so add them here.
    columns = {row["name"] for row in db.execute("PRAGMA table_info(items)")}
    for column in ("note", "worker", "review", "options"):
        if column not in columns:
            db.execute(f"ALTER TABLE items ADD COLUMN {column} TEXT")
    if "job_pid_start" not in columns:
        db.execute("ALTER TABLE items ADD COLUMN job_pid_start INTEGER")
    columns = {row["name"] for row in db.execute("PRAGMA table_info(sessions)")}
    for column in ("options", "error", "finish_error", "output"):
        if column not in columns:
            db.execute(f"ALTER TABLE sessions ADD COLUMN {column} TEXT")
    if "settled_at" not in columns:
        # NULL for every session: the first start of this version settles each complete one once more, and remembers.
        db.execute("ALTER TABLE sessions ADD COLUMN settled_at REAL")


def never_reuses_ids(db: sqlite3.Connection) -> bool:
    """Whether the items table hands out each id once (AUTOINCREMENT), as tables made by this version do."""
    [sql] = db.execute("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'items'").fetchone()
    return "AUTOINCREMENT" in sql.upper()


def number_items_once(db: sqlite3.Connection, transaction: Callable[[], ContextManager]) -> None:
    """Copy an older items table into one that never reuses an id.

    Without AUTOINCREMENT, SQLite gives a new row the highest id plus one, so
    the id of a withdrawn last item came back, and with it the paths in state/
    named by that id: a file left there would be overwritten by the next one.
    SQLite cannot add AUTOINCREMENT to a table, so the rows move, once.
    """
    columns = ", ".join(row["name"] for row in db.execute("PRAGMA table_info(items)"))
    with transaction():
        db.execute(ITEMS.format(name="items_numbered"))
        db.execute(f"INSERT INTO items_numbered ({columns}) SELECT {columns} FROM items")
        db.execute("DROP TABLE items")
        db.execute("ALTER TABLE items_numbered RENAME TO items")
