"""The queue's two state tables, held to by the store and by the database itself.

Every (src, dst) pair of both tables, items' and sessions': an allowed pair
succeeds through the store, any other is refused by the store's one function
and, as a raw UPDATE, by the trigger. On a real SQLite file in tmp_path.
"""

from __future__ import annotations

import itertools
import re
import sqlite3
from collections import deque
from pathlib import Path

import pytest

from bgremover.queue.states import (
    RETRYABLE,
    SESSION_TRANSITIONS,
    TRANSITIONS,
    SessionState,
    Status,
    allowed,
)
from bgremover.queue.store import IllegalTransition, Store

NOW = 1_700_000_000.0
PACKAGE = Path(__file__).resolve().parents[2] / "daemon" / "bgremover"


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "queue.sqlite3")
    yield store
    store.close()


def path_to(table: dict, start, goal) -> list:
    """The shortest walk along `table`'s allowed edges from `start` to `goal`, without `start`."""
    came_from, todo = {start: None}, deque([start])
    while todo:
        state = todo.popleft()
        for dst in sorted(table[state], key=lambda s: s.value):
            if dst not in came_from:
                came_from[dst] = state
                todo.append(dst)
    assert goal in came_from, f"{goal.value} cannot be reached from {start.value}"
    walk = []
    while goal != start:
        walk.append(goal)
        goal = came_from[goal]
    return walk[::-1]


def item_in(store: Store, status: Status):
    """A new item driven along allowed edges until it is `status`."""
    store.create_session("s", None, "png", NOW)
    item = store.add_item("s", "a.jpg", "a.png", ".jpg", b"a.jpg", NOW)
    for dst in path_to(TRANSITIONS, Status.QUEUED, status):
        item = store.transition(item.id, item.status, dst, NOW)
    assert item.status is status
    return item


def session_in(store: Store, state: SessionState, name: str = "s"):
    """A new session driven along allowed edges until it is `state`."""
    session = store.create_session(name, "catalog", "png", NOW)
    for dst in path_to(SESSION_TRANSITIONS, SessionState.OPEN, state):
        assert store.set_session_state(name, {session.state}, dst, NOW)
        session = store.session(name)
    assert session.state is state
    return session


ITEM_PAIRS = list(itertools.product(Status, Status))
SESSION_PAIRS = list(itertools.product(SessionState, SessionState))


def pair_id(pair) -> str:
    return f"{pair[0].value}->{pair[1].value}"


# -- the tables themselves --------------------------------------------------------


@pytest.mark.parametrize("table,start", [(TRANSITIONS, Status.QUEUED), (SESSION_TRANSITIONS, SessionState.OPEN)])
def test_each_table_names_every_state_and_reaches_it_from_the_start(table, start):
    assert set(table) == set(type(start))
    for state in type(start):
        path_to(table, start, state)


def test_allowed_is_the_tables_and_never_mixes_an_item_status_with_a_session_state():
    for src, dst in ITEM_PAIRS:
        assert allowed(src, dst) == (dst in TRANSITIONS[src])
    for src, dst in SESSION_PAIRS:
        assert allowed(src, dst) == (dst in SESSION_TRANSITIONS[src])
    # Both enums are str-valued and share "processing": equal as strings, never as states.
    assert not allowed(Status.QUEUED, SessionState.PROCESSING)
    assert not allowed(SessionState.OPEN, Status.PROCESSING)


def test_what_a_retry_marker_may_send_back_is_failed_or_cancelled():
    assert RETRYABLE == {Status.FAILED, Status.CANCELLED}
    assert all(allowed(status, Status.QUEUED) for status in RETRYABLE)


def test_every_session_move_the_daemon_asks_for_is_in_the_table():
    """Read from the source: each set_session_state({sources}, dst) call names only allowed edges."""
    call = re.compile(r"set_session_state\(\s*[^,]+,\s*\{([^}]*)\},\s*SessionState\.(\w+)")
    found = []
    for module in sorted(PACKAGE.rglob("*.py")):
        for sources, dst in call.findall(module.read_text()):
            for src in re.findall(r"SessionState\.(\w+)", sources):
                found.append((SessionState[src], SessionState[dst]))
    assert found, "no set_session_state call found to check"
    refused = [pair_id(pair) for pair in found if not allowed(*pair)]
    assert not refused, f"the daemon asks for moves the table forbids: {refused}"


# -- items ------------------------------------------------------------------------


@pytest.mark.parametrize("src,dst", ITEM_PAIRS, ids=map(pair_id, ITEM_PAIRS))
def test_every_item_pair_through_the_store(store, src, dst):
    item = item_in(store, src)
    if dst in TRANSITIONS[src]:
        assert store.transition(item.id, src, dst, NOW + 1).status is dst
    else:
        with pytest.raises(IllegalTransition):
            store.transition(item.id, src, dst, NOW + 1)
        assert store.item(item.id).status is src


@pytest.mark.parametrize("src,dst", ITEM_PAIRS, ids=map(pair_id, ITEM_PAIRS))
def test_every_item_pair_as_a_raw_update(store, src, dst):
    item = item_in(store, src)
    update = "UPDATE items SET status = ? WHERE id = ?", (dst.value, item.id)
    if dst in TRANSITIONS[src]:
        store.db.execute(*update)
        assert store.item(item.id).status is dst
    else:
        with pytest.raises(sqlite3.IntegrityError, match="illegal status transition"):
            store.db.execute(*update)
        assert store.item(item.id).status is src


# -- sessions ---------------------------------------------------------------------


@pytest.mark.parametrize("src,dst", SESSION_PAIRS, ids=map(pair_id, SESSION_PAIRS))
def test_every_session_pair_through_the_store(store, src, dst):
    session_in(store, src)
    if dst in SESSION_TRANSITIONS[src]:
        assert store.set_session_state("s", {src}, dst, NOW + 1, "s.zip")
        assert store.session("s").state is dst
        assert store.session("s").updated_at == NOW + 1
    else:
        with pytest.raises(IllegalTransition):
            store.set_session_state("s", {src}, dst, NOW + 1)
        assert store.session("s").state is src
        assert store.session("s").updated_at == NOW


@pytest.mark.parametrize("src,dst", SESSION_PAIRS, ids=map(pair_id, SESSION_PAIRS))
def test_every_session_pair_as_a_raw_update(store, src, dst):
    session_in(store, src)
    update = "UPDATE sessions SET state = ? WHERE name = 's'", (dst.value,)
    if dst in SESSION_TRANSITIONS[src]:
        store.db.execute(*update)
        assert store.session("s").state is dst
    else:
        with pytest.raises(sqlite3.IntegrityError, match="illegal state transition"):
            store.db.execute(*update)
        assert store.session("s").state is src


def test_a_session_not_in_any_of_the_sources_is_left_alone(store):
    session_in(store, SessionState.OPEN)
    # OPEN -> PROCESSING is allowed, but asked of a complete session: the guard, not the table, says no.
    assert not store.set_session_state("s", {SessionState.COMPLETE}, SessionState.PROCESSING, NOW + 1)
    assert store.session("s").state is SessionState.OPEN


@pytest.mark.parametrize("actual", list(SessionState), ids=lambda s: s.value)
def test_sources_that_include_a_forbidden_move_are_refused_whatever_the_session_is_in(store, actual):
    session_in(store, actual)
    with pytest.raises(IllegalTransition, match="open -> complete"):
        store.set_session_state("s", {SessionState.OPEN, SessionState.PROCESSING}, SessionState.COMPLETE, NOW + 1)
    assert store.session("s").state is actual


def test_a_new_session_must_start_open(store):
    with pytest.raises(sqlite3.IntegrityError, match="a new session must start open"):
        store.db.execute(
            "INSERT INTO sessions (name, state, format, created_at, updated_at, last_item_at)"
            " VALUES ('s', 'complete', 'png', 0, 0, 0)"
        )
    assert store.session("s") is None


# -- a database made by an earlier version ----------------------------------------

SESSION_GUARDS = {"sessions_only_start_open", "sessions_only_allowed_transitions"}


def triggers(db: sqlite3.Connection) -> set[str]:
    return {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}


def test_a_database_from_before_the_session_table_gets_its_triggers_on_open(tmp_path):
    path = tmp_path / "queue.sqlite3"
    first = Store(path)
    session_in(first, SessionState.COMPLETE, "old")
    first.close()
    # What the previous version left: the item guards only, no session table or triggers.
    old = sqlite3.connect(path, isolation_level=None)
    for name in SESSION_GUARDS:
        old.execute(f"DROP TRIGGER {name}")
    old.execute("DROP TABLE allowed_session_transitions")
    assert triggers(old) == {"items_only_start_queued", "items_only_allowed_transitions"}
    old.close()

    store = Store(path)
    try:
        assert SESSION_GUARDS <= triggers(store.db)
        assert store.session("old").state is SessionState.COMPLETE  # its rows as they were
        with pytest.raises(sqlite3.IntegrityError, match="illegal state transition"):
            store.db.execute("UPDATE sessions SET state = 'open' WHERE name = 'old'")
        # COMPLETE -> PROCESSING (a retry reopens it)
        assert store.set_session_state("old", {SessionState.COMPLETE}, SessionState.PROCESSING, NOW)
    finally:
        store.close()


def test_the_databases_copy_of_each_table_is_the_table_exactly(tmp_path):
    path = tmp_path / "queue.sqlite3"
    Store(path).close()
    stale = sqlite3.connect(path, isolation_level=None)
    stale.execute("INSERT INTO allowed_transitions VALUES ('done', 'failed')")  # a move some version allowed
    stale.execute("DELETE FROM allowed_session_transitions WHERE src = 'complete'")
    stale.close()

    store = Store(path)
    try:
        for moves, table in (
            ("allowed_transitions", TRANSITIONS),
            ("allowed_session_transitions", SESSION_TRANSITIONS),
        ):
            rows = {tuple(row) for row in store.db.execute(f"SELECT src, dst FROM {moves}")}
            assert rows == {(src.value, dst.value) for src, dsts in table.items() for dst in dsts}
    finally:
        store.close()
