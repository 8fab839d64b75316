"""systemd notifications: READY, STATUS, WATCHDOG and STOPPING over a real NOTIFY_SOCKET.

The service manager's end is played by a datagram socket bound in the test, as
systemd binds /run/systemd/notify; nothing here needs systemd to be PID 1. The
last test runs the real daemon, wedges it with SIGSTOP and shows that a
watchdog like systemd's notices.
"""

from __future__ import annotations

import os
import time
import uuid

import pytest
from structlog.testing import capture_logs

from bgremover.queue.states import SessionState, Status
from bgremover.queue.store import Store
from bgremover.service.notify import Notifier, progress_summary
from tests.support.notify import (
    STATUS_LINE,
    ServiceManager,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def notifier_for(manager: ServiceManager, clock: Clock, **environ: str) -> Notifier:
    return Notifier.from_environment({"NOTIFY_SOCKET": manager.socket.getsockname(), **environ}, clock=clock)


# ---------------------------------------------------------------- the protocol


def test_ready_carries_the_first_status_line_and_stopping_ends_the_conversation(manager):
    notifier = notifier_for(manager, Clock())
    notifier.ready(lambda: "idle, 0 sessions complete")
    notifier.stopping()
    assert manager.pending() == ["READY=1\nSTATUS=idle, 0 sessions complete", "STOPPING=1"]
    assert notifier.socket is None, "stopping closes the socket"


def test_a_status_line_is_sent_only_when_it_changed_and_at_most_once_a_second(manager):
    clock = Clock()
    notifier = notifier_for(manager, clock)
    notifier.ready(lambda: "idle, 0 sessions complete")
    line = "idle, 0 sessions complete"
    described = []

    def describe() -> str:
        described.append(line)
        return line

    for step in range(24):  # 6 s of a loop passing four times a second; the work starts at step 6
        clock.now += 0.25
        line = "idle, 0 sessions complete" if step < 6 else f"catalog {step}/24, {24 - step} queued"
        notifier.update(describe)
    assert manager.pending() == [
        "READY=1\nSTATUS=idle, 0 sessions complete",
        "STATUS=catalog 7/24, 17 queued",
        "STATUS=catalog 11/24, 13 queued",
        "STATUS=catalog 15/24, 9 queued",
        "STATUS=catalog 19/24, 5 queued",
        "STATUS=catalog 23/24, 1 queued",
    ]
    assert len(described) == 6, "the summary reads the database: only when a line may be sent, once a second"
    notifier.close()


def test_the_watchdog_is_pinged_at_once_then_every_half_timeout_and_no_oftener(manager):
    clock = Clock()
    notifier = notifier_for(manager, clock, WATCHDOG_USEC="2000000")
    pinged_at = []
    for _ in range(20):  # 5 s of a loop passing four times a second
        notifier.update(lambda: "idle, 0 sessions complete")
        if "WATCHDOG=1" in manager.pending():
            pinged_at.append(clock.now - 1000.0)
        clock.now += 0.25
    assert pinged_at == [0.0, 1.0, 2.0, 3.0, 4.0]
    notifier.close()


def test_no_watchdog_ping_without_a_timeout_or_for_another_pid(manager):
    for environ in (
        {},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "soon"},
        {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)},
    ):
        notifier = notifier_for(manager, Clock(), **environ)
        notifier.update(lambda: "idle, 0 sessions complete")
        notifier.close()
        assert manager.pending() == ["STATUS=idle, 0 sessions complete"], environ
    ours = notifier_for(manager, Clock(), WATCHDOG_USEC="1000000", WATCHDOG_PID=str(os.getpid()))
    ours.update(lambda: "idle, 0 sessions complete")
    ours.close()
    assert manager.pending() == ["WATCHDOG=1", "STATUS=idle, 0 sessions complete"]


def test_an_abstract_socket_name_is_spoken_to_as_such():
    name = f"bgremover-test-{uuid.uuid4().hex}"
    manager = ServiceManager("\0" + name)
    try:
        notifier = Notifier.from_environment({"NOTIFY_SOCKET": "@" + name, "WATCHDOG_USEC": "60000000"})
        notifier.ready(lambda: "idle, 0 sessions complete")
        notifier.update(lambda: "idle, 0 sessions complete")
        notifier.stopping()
        assert manager.pending() == ["READY=1\nSTATUS=idle, 0 sessions complete", "WATCHDOG=1", "STOPPING=1"]
    finally:
        manager.close()


def test_without_notify_socket_nothing_is_sent_and_nothing_is_read():
    for environ in ({}, {"NOTIFY_SOCKET": ""}, {"NOTIFY_SOCKET": "vsock:2:1234"}, {"WATCHDOG_USEC": "1000000"}):
        notifier = Notifier.from_environment(environ)
        assert not notifier.enabled
        notifier.ready(lambda: pytest.fail("the summary was read"))
        notifier.update(lambda: pytest.fail("the summary was read"))
        notifier.stopping()
        assert notifier.socket is None


def test_a_socket_that_vanished_costs_one_log_line_and_never_an_exception(tmp_path):
    path = tmp_path / "gone"
    manager = ServiceManager(str(path))
    notifier = Notifier.from_environment({"NOTIFY_SOCKET": str(path), "WATCHDOG_USEC": "1000000"}, clock=Clock())
    manager.close()
    path.unlink()
    with capture_logs() as logs:
        notifier.ready(lambda: "idle, 0 sessions complete")
        for _ in range(5):
            notifier.clock.now += 1
            notifier.update(lambda: "idle, 0 sessions complete")
        notifier.stopping()
    assert [entry["event"] for entry in logs] == ["notify_failed"]
    assert logs[0]["socket"] == str(path)


def test_a_summary_that_fails_costs_one_log_line_and_the_pings_go_on(manager):
    clock = Clock()
    notifier = notifier_for(manager, clock, WATCHDOG_USEC="1000000")
    with capture_logs() as logs:
        for _ in range(3):
            notifier.update(lambda: 1 / 0)
            clock.now += 1
    notifier.close()
    assert manager.pending() == ["WATCHDOG=1"] * 3
    assert [entry["event"] for entry in logs] == ["status_summary_failed"]


def test_a_newline_in_a_session_name_cannot_smuggle_a_message(manager):
    notifier = notifier_for(manager, Clock())
    notifier.ready(lambda: "shoot\nWATCHDOG=1 0/1, 1 queued")
    notifier.close()
    assert manager.pending() == ["READY=1\nSTATUS=shoot?WATCHDOG=1 0/1, 1 queued"]


# ---------------------------------------------------------------- the status line


def fill(
    store: Store,
    session: str,
    done: int = 0,
    failed: int = 0,
    processing: int = 0,
    queued: int = 0,
    state: SessionState = SessionState.OPEN,
) -> None:
    store.create_session(session, session, "png", time.time())
    for n in range(done + failed + processing + queued):
        item = store.add_item(session, f"{n}.jpg", f"{n}.png", "jpg", f"{session}/{n}.jpg".encode(), time.time())
        if n < done + failed + processing:
            store.transition(item.id, Status.QUEUED, Status.PROCESSING, time.time())  # QUEUED -> PROCESSING
        if n < done:
            store.transition(item.id, Status.PROCESSING, Status.DONE, time.time())  # PROCESSING -> DONE
        elif n < done + failed:
            store.transition(item.id, Status.PROCESSING, Status.FAILED, time.time())  # PROCESSING -> FAILED
    if state is not SessionState.OPEN:
        store.set_session_state(
            session, {SessionState.OPEN}, SessionState.PROCESSING, time.time()
        )  # OPEN -> PROCESSING
    if state is SessionState.COMPLETE:
        store.set_session_state(session, {SessionState.PROCESSING}, state, time.time())  # PROCESSING -> COMPLETE


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "queue.sqlite3")
    yield store
    store.close()


def test_the_status_line_says_done_of_total_failed_and_queued(store):
    fill(store, "catalog", done=37, failed=2, processing=1, queued=60, state=SessionState.PROCESSING)
    assert progress_summary(store) == "catalog 37/100, 2 failed, 60 queued"
    assert progress_summary(store, job_slots=3) == "catalog 37/100, 2 failed, 60 queued, 1/3 jobs running"
    fill(store, "shoes", queued=80)
    assert progress_summary(store) == "catalog 37/100, 2 failed; shoes 0/80, 140 queued"


def test_the_status_line_says_idle_and_counts_complete_sessions_when_nothing_is_pending(store):
    assert progress_summary(store) == "idle, 0 sessions complete"
    fill(store, "catalog", done=1, state=SessionState.COMPLETE)
    assert progress_summary(store) == "idle, 1 session complete"
    fill(store, "shoes", done=1, failed=1, state=SessionState.COMPLETE)
    assert progress_summary(store) == "idle, 2 sessions complete"


def test_the_status_line_stays_short_however_many_sessions_and_however_long_their_names(store):
    fill(store, "x" * 200, queued=1)
    for n in range(9):
        fill(store, f"s{n}", queued=1)
    line = progress_summary(store)
    assert line == f"{'x' * 39}… 0/1; s0 0/1; s1 0/1; +7 more, 10 queued"
    assert STATUS_LINE.fullmatch(line.replace("+7 more", "more 0/0"))
