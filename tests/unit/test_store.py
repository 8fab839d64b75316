"""The queue's contract: only the state table's moves happen, each one durable and logged."""

from __future__ import annotations

import itertools
import sqlite3

import pytest

from bgremover.queue.states import TRANSITIONS, SessionState, Status
from bgremover.queue.store import IllegalTransition, Store

NOW = 1_700_000_000.0


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "queue.sqlite3")
    yield store
    store.close()


def put_item_in(store: Store, status: Status, name: str = "a.jpg"):
    """An item driven along allowed edges until it reaches `status`."""
    if store.session("s") is None:
        store.create_session("s", None, "png", NOW)
    item = store.add_item("s", name, name + ".png", ".jpg", name.encode(), NOW)
    path = {
        Status.QUEUED: [],
        Status.PROCESSING: [Status.PROCESSING],
        Status.DONE: [Status.PROCESSING, Status.DONE],
        Status.FAILED: [Status.PROCESSING, Status.FAILED],
        Status.CANCELLED: [Status.CANCELLED],
    }[status]
    for dst in path:
        item = store.transition(item.id, item.status, dst, NOW)
    assert item.status is status
    return item


@pytest.mark.parametrize("src,dst", list(itertools.product(Status, Status)))
def test_every_pair_of_the_state_table(store, src, dst):
    item = put_item_in(store, src)
    if dst in TRANSITIONS[src]:
        assert store.transition(item.id, src, dst, NOW + 1).status is dst
        assert store.events(item.id)[-1]["dst"] == dst.value
    else:
        with pytest.raises(IllegalTransition):
            store.transition(item.id, src, dst, NOW + 1)
        assert store.item(item.id).status is src


@pytest.mark.parametrize("src,dst", [(s, d) for s in Status for d in Status if d not in TRANSITIONS[s] and d != s])
def test_the_database_itself_refuses_an_illegal_raw_update(store, src, dst):
    item = put_item_in(store, src)
    with pytest.raises(sqlite3.IntegrityError, match="illegal status transition"):
        store.db.execute("UPDATE items SET status = ? WHERE id = ?", (dst.value, item.id))
    assert store.item(item.id).status is src


def test_a_transition_from_the_wrong_status_changes_nothing(store):
    item = put_item_in(store, Status.QUEUED)
    with pytest.raises(IllegalTransition):
        store.transition(item.id, Status.PROCESSING, Status.DONE, NOW)
    assert store.item(item.id).status is Status.QUEUED


def claim(store: Store):
    """What the supervisor does to start a job: the oldest queued item, moved to processing."""
    item = store.next_queued()
    return item and store.transition(item.id, Status.QUEUED, Status.PROCESSING, NOW)


def test_claim_takes_the_oldest_queued_item_and_counts_the_attempt(store):
    first = put_item_in(store, Status.QUEUED, "1.jpg")
    put_item_in(store, Status.QUEUED, "2.jpg")
    claimed = claim(store)
    assert (claimed.id, claimed.status, claimed.attempts) == (first.id, Status.PROCESSING, 1)


def test_claim_returns_none_when_nothing_is_queued(store):
    put_item_in(store, Status.DONE)
    assert claim(store) is None


def test_recover_requeues_what_a_previous_life_left_processing(tmp_path):
    path = tmp_path / "queue.sqlite3"
    first = Store(path)
    item = put_item_in(first, Status.PROCESSING)
    first.set_job_pid(item.id, 4242, started=123456)
    first.db.close()  # the process dies without cleaning up

    second = Store(path)
    stranded = second.recover(NOW)
    assert [(i.id, i.job_pid, i.job_pid_start) for i in stranded] == [(item.id, 4242, 123456)]
    assert second.item(item.id).status is Status.QUEUED
    assert (second.item(item.id).job_pid, second.item(item.id).job_pid_start) == (None, None)
    assert second.events(item.id)[-1]["reason"] == "recovered"
    second.close()


def test_new_items_must_start_queued(store):
    store.create_session("s", None, "png", NOW)
    with pytest.raises(sqlite3.IntegrityError):
        store.db.execute(
            "INSERT INTO items (session, name, member, ext, source, status, created_at, updated_at)"
            " VALUES ('s', 'x', 'x.png', '.jpg', x'00', 'done', 0, 0)"
        )


def test_counts_and_withdraw(store):
    put_item_in(store, Status.DONE, "a.jpg")
    put_item_in(store, Status.FAILED, "b.jpg")
    vanished = put_item_in(store, Status.QUEUED, "c.jpg")
    assert store.withdraw(vanished.id)
    assert store.counts("s") == {"queued": 0, "processing": 0, "done": 1, "failed": 1, "cancelled": 0}
    assert store.count("s") == 2


def test_session_state_changes_are_guarded(store):
    store.create_session("s", "catalog", "png", NOW)
    assert store.open_session("catalog").name == "s"
    assert store.open_session(None) is None
    assert store.set_session_state("s", {SessionState.OPEN}, SessionState.PROCESSING, NOW)
    assert not store.set_session_state("s", {SessionState.OPEN}, SessionState.PROCESSING, NOW)
    assert store.set_session_state("s", {SessionState.PROCESSING}, SessionState.COMPLETE, NOW, "s.zip")
    assert store.session("s").zip == "s.zip"
    assert store.open_session("catalog") is None


def test_a_readonly_reader_sees_committed_rows_and_cannot_write(tmp_path, store):
    put_item_in(store, Status.QUEUED)
    reader = Store(store.path, readonly=True)
    assert [i.name for i in reader.items("s")] == ["a.jpg"]
    with pytest.raises(sqlite3.OperationalError):
        reader.db.execute("DELETE FROM items")
    reader.close()


def test_only_a_session_without_items_can_be_forgotten(store):
    put_item_in(store, Status.QUEUED)
    store.create_session("empty", None, "png", NOW)
    assert not store.forget_empty_session("s")
    assert store.forget_empty_session("empty")
    assert [session.name for session in store.sessions()] == ["s"]


# -------------------------------------------------------------- settled sessions, and history read a page at a time


def complete(store: Store, name: str, at: float) -> None:
    store.create_session(name, None, "png", at)
    store.set_session_state(name, {SessionState.OPEN}, SessionState.PROCESSING, at)
    store.set_session_state(name, {SessionState.PROCESSING}, SessionState.COMPLETE, at, f"{name}.zip")


def test_a_complete_session_is_remembered_as_settled_until_it_leaves_complete(store):
    complete(store, "s", NOW)
    assert [s.name for s in store.unsettled_sessions()] == ["s"]
    assert store.mark_settled("s", NOW + 1)
    assert store.session("s").settled_at == NOW + 1 and store.unsettled_sessions() == []
    assert not store.mark_settled("s", NOW + 2), "settled once"
    # COMPLETE -> PROCESSING (a retry marker): the next start looks at it again.
    store.set_session_state("s", {SessionState.COMPLETE}, SessionState.PROCESSING, NOW + 3)
    assert store.session("s").settled_at is None and [s.name for s in store.unsettled_sessions()] == ["s"]
    assert not store.mark_settled("s", NOW + 4), "only a complete session is settled"


def test_settled_sessions_are_read_a_page_at_a_time_newest_first(store):
    for n in range(5):
        complete(store, f"s{n}", NOW + n)
        store.mark_settled(f"s{n}", NOW + n)
    store.create_session("open", None, "png", NOW - 10)
    assert [s.name for s in store.settled_sessions(2)] == ["s4", "s3"]
    assert [s.name for s in store.settled_sessions(2, 4)] == ["s0"]
    assert store.settled_count() == 5
    assert [s.name for s in store.unsettled_sessions()] == ["open"]


def test_counts_and_items_are_read_for_the_named_sessions_only(store):
    put_item_in(store, Status.DONE, "a.jpg")
    put_item_in(store, Status.FAILED, "b.jpg")
    store.create_session("other", None, "png", NOW)
    store.add_item("other", "c.jpg", "c.png", ".jpg", b"c.jpg", NOW)
    assert store.counts_of(["s"])["s"] == {"queued": 0, "processing": 0, "done": 1, "failed": 1, "cancelled": 0}
    assert [i.name for i in store.items_of(["s"], Status.FAILED)] == ["b.jpg"]
    assert [(row["session"], row["status"]) for row in store.pending()] == [("other", "queued")]
    assert [row["session"] for row in store.finished_since(NOW)] == ["s", "s"]
    assert store.finished_since(NOW + 1) == []


def test_a_database_of_an_older_version_gains_the_settled_column_with_every_session_unsettled(tmp_path):
    path = tmp_path / "queue.sqlite3"
    Store(path).close()
    older = sqlite3.connect(path)
    older.executescript(
        "DROP INDEX sessions_unsettled; DROP INDEX sessions_settled; ALTER TABLE sessions DROP COLUMN settled_at;"
        "INSERT INTO sessions (name, state, format, created_at, updated_at, last_item_at)"
        " VALUES ('old', 'open', 'png', 1, 1, 1);"
    )
    older.close()
    store = Store(path)
    try:
        assert store.session("old").settled_at is None
        assert [s.name for s in store.unsettled_sessions()] == ["old"], "looked at once more by the next start"
    finally:
        store.close()


@pytest.mark.parametrize(
    "query,args,index",
    [
        ("SELECT * FROM sessions WHERE settled_at IS NULL ORDER BY created_at, name", (), "sessions_unsettled"),
        (
            "SELECT * FROM sessions WHERE settled_at IS NOT NULL ORDER BY created_at DESC, name DESC LIMIT 20",
            (),
            "sessions_settled",
        ),
        ("SELECT * FROM sessions WHERE state IN (?) ORDER BY created_at, name", ("open",), "sessions_by_state"),
        (
            "SELECT session, updated_at FROM items WHERE status IN ('done', 'failed') AND updated_at >= ?",
            (NOW,),
            "items_by_finish",
        ),
        (
            "SELECT id, session, status FROM items WHERE status IN ('queued', 'processing') ORDER BY id",
            (),
            "items_by_",  # by status: either index that starts with it
        ),
        (
            "SELECT session, status, COUNT(*) FROM items WHERE session IN (SELECT value FROM json_each(?))"
            " GROUP BY session, status",
            ('["s"]',),
            "sqlite_autoindex_items_",  # UNIQUE (session, name) or (session, member): both lead with the session
        ),
    ],
)
def test_each_read_that_must_not_grow_with_history_has_its_index(store, query, args, index):
    """SQLite's plan names the index: none of these reads walks the sessions or items of every day ever.

    A partial index holds only what its query wants (the unsettled sessions), so walking it is no walk of history.
    """
    plan = [row["detail"] for row in store.db.execute(f"EXPLAIN QUERY PLAN {query}", args)]
    assert any(f"INDEX {index}" in step for step in plan), plan
    whole_tables = [step for step in plan if step in ("SCAN items", "SCAN sessions")]
    assert not whole_tables, plan
