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
import time

from tests.support.harness import Daemon, drop, wait_for
from tests.support.notify import (
    STATUS_LINE,
)

WATCHDOG_SECONDS = 4.0  # the idle loop wakes once a second and pings every half of this: gaps up to about 3 s


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
        assert any(re.fullmatch(r"catalog [01]/3, [12] queued, 1/1 jobs running", s) for s in working), working

        manager.listen(WATCHDOG_SECONDS)  # idle: the loop wakes least often
        pings = manager.pings()
        assert len(pings) >= 4
        assert max(b - a for a, b in zip(pings, pings[1:])) < WATCHDOG_SECONDS, "a ping at least every WatchdogSec"
        assert not manager.wedged(WATCHDOG_SECONDS)

        os.kill(daemon.process.pid, signal.SIGSTOP)  # the loop wedges
        stopped_at = time.monotonic()
        try:
            wait_for(
                lambda: manager.listen(0.1) is not None and manager.wedged(WATCHDOG_SECONDS),
                timeout=WATCHDOG_SECONDS + 1,
                what="the watchdog to notice",
            )
            assert time.monotonic() - stopped_at <= WATCHDOG_SECONDS + 0.5
        finally:
            os.kill(daemon.process.pid, signal.SIGCONT)
        manager.wait_for(lambda m: m == "WATCHDOG=1", timeout=WATCHDOG_SECONDS / 2, what="a ping after SIGCONT")
        assert not manager.wedged(WATCHDOG_SECONDS)

        assert daemon.stop() == 0
    manager.pending()
    assert manager.messages[-1][1] == "STOPPING=1", manager.messages[-3:]
    assert [m for _, m in manager.messages].count("STOPPING=1") == 1
