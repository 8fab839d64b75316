"""systemd notifications: READY, STATUS, WATCHDOG and STOPPING over a real NOTIFY_SOCKET.

The service manager's end is played by a datagram socket bound in the test, as
systemd binds /run/systemd/notify; nothing here needs systemd to be PID 1. The
last test runs the real daemon, wedges it with SIGSTOP and shows that a
watchdog like systemd's notices.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import time
import uuid

import pytest
from structlog.testing import capture_logs

from bgremover.service.notify import Notifier, progress_summary
from bgremover.queue.states import SessionState, Status
from bgremover.queue.store import Store
from tests.support.harness import Daemon, drop, wait_for

WATCHDOG_SECONDS = 4.0  # the idle loop wakes once a second and pings every half of this: gaps up to about 3 s
STATUS_LINE = re.compile(r"idle, \d+ sessions? complete|(\S+ \d+/\d+(, \d+ failed)?; )*\S+ \d+/\d+(, \d+ failed)?, \d+ queued")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class ServiceManager:
    """The receiving end of NOTIFY_SOCKET: a bound datagram socket that notes when each message came."""

    def __init__(self, address: str) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(address)
        self.messages: list[tuple[float, str]] = []

    def close(self) -> None:
        self.socket.close()

    def listen(self, seconds: float) -> list[str]:
        """Receive for `seconds`; returns what arrived meanwhile."""
        before = len(self.messages)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.socket.settimeout(left)
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), data.decode()))
        return [message for _, message in self.messages[before:]]

    def pending(self) -> list[str]:
        """What has arrived already: a local datagram is queued by the time sendto returns."""
        before = len(self.messages)
        self.socket.setblocking(False)
        while True:
            try:
                data = self.socket.recv(4096)
            except BlockingIOError:
                return [message for _, message in self.messages[before:]]
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "a message") -> str:
        deadline = time.monotonic() + timeout
        start = len(self.messages)
        while time.monotonic() < deadline:
            self.listen(0.1)
            for _, message in self.messages[start:]:
                if predicate(message):
                    return message
        raise AssertionError(f"no {what} within {timeout} s; got {[m for _, m in self.messages]}")

    def statuses(self) -> list[str]:
        return [line[len("STATUS="):] for _, message in self.messages for line in message.split("\n")
                if line.startswith("STATUS=")]

    def pings(self) -> list[float]:
        return [at for at, message in self.messages if message == "WATCHDOG=1"]

    def wedged(self, watchdog_seconds: float) -> bool:
        """What systemd decides when WatchdogSec= passes without a WATCHDOG=1."""
        pings = self.pings()
        return not pings or time.monotonic() - pings[-1] > watchdog_seconds


@pytest.fixture
def manager(tmp_path):
    path = tmp_path / "notify"
    assert len(str(path)) < 100, "an AF_UNIX path holds at most 107 bytes"
    manager = ServiceManager(str(path))
    yield manager
    manager.close()


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
    assert manager.pending() == ["READY=1\nSTATUS=idle, 0 sessions complete", "STATUS=catalog 7/24, 17 queued",
                                 "STATUS=catalog 11/24, 13 queued", "STATUS=catalog 15/24, 9 queued",
                                 "STATUS=catalog 19/24, 5 queued", "STATUS=catalog 23/24, 1 queued"]
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
    for environ in ({}, {"WATCHDOG_USEC": "0"}, {"WATCHDOG_USEC": "soon"},
                    {"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid() + 1)}):
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


def fill(store: Store, session: str, done: int = 0, failed: int = 0, processing: int = 0, queued: int = 0,
         state: SessionState = SessionState.OPEN) -> None:
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
        store.set_session_state(session, {SessionState.OPEN}, state, time.time())


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "queue.sqlite3")
    yield store
    store.close()


def test_the_status_line_says_done_of_total_failed_and_queued(store):
    fill(store, "catalog", done=37, failed=2, processing=1, queued=60, state=SessionState.PROCESSING)
    assert progress_summary(store) == "catalog 37/100, 2 failed, 60 queued"
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


# ---------------------------------------------------------------- the daemon under a watchdog


def test_the_daemon_reports_ready_progress_and_pings_and_a_watchdog_notices_when_it_wedges(tmp_path, manager):
    daemon = Daemon(tmp_path / "root")
    daemon.env.update(NOTIFY_SOCKET=manager.socket.getsockname(), WATCHDOG_USEC=str(int(WATCHDOG_SECONDS * 1e6)))
    daemon.env.pop("WATCHDOG_PID", None)
    with daemon:
        assert daemon.events("daemon_ready")
        ready = manager.wait_for(lambda m: m.startswith("READY=1"), timeout=5, what="READY=1")
        assert ready == "READY=1\nSTATUS=idle, 0 sessions complete"
        assert manager.messages[0][1] == ready, "nothing comes before READY=1"

        inbox = daemon.root / "inbox"
        drop(inbox, "catalog/a.jpg", "sleep 2")
        drop(inbox, "catalog/b.jpg", "sleep 2")
        drop(inbox, "catalog/c.jpg", "bad-input")
        manager.wait_for(lambda m: m == "STATUS=idle, 1 session complete", timeout=30, what="the session complete")
        assert all(STATUS_LINE.fullmatch(s) for s in manager.statuses()), manager.statuses()
        working = [s for s in manager.statuses() if s.startswith("catalog ")]
        assert any(re.fullmatch(r"catalog [01]/3, [12] queued", s) for s in working), working

        manager.listen(WATCHDOG_SECONDS)  # idle: the loop wakes least often
        pings = manager.pings()
        assert len(pings) >= 4
        assert max(b - a for a, b in zip(pings, pings[1:])) < WATCHDOG_SECONDS, "a ping at least every WatchdogSec"
        assert not manager.wedged(WATCHDOG_SECONDS)

        os.kill(daemon.process.pid, signal.SIGSTOP)  # the loop wedges
        stopped_at = time.monotonic()
        try:
            wait_for(lambda: manager.listen(0.1) is not None and manager.wedged(WATCHDOG_SECONDS),
                     timeout=WATCHDOG_SECONDS + 1, what="the watchdog to notice")
            assert time.monotonic() - stopped_at <= WATCHDOG_SECONDS + 0.5
        finally:
            os.kill(daemon.process.pid, signal.SIGCONT)
        manager.wait_for(lambda m: m == "WATCHDOG=1", timeout=WATCHDOG_SECONDS / 2, what="a ping after SIGCONT")
        assert not manager.wedged(WATCHDOG_SECONDS)

        assert daemon.stop() == 0
    manager.pending()
    assert manager.messages[-1][1] == "STOPPING=1", manager.messages[-3:]
    assert [m for _, m in manager.messages].count("STOPPING=1") == 1
