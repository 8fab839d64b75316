"""Two hundred status requests at once, while the daemon works: every one answered, and the daemon unhurt.

How much the daemon's throughput changes under such a load is measured, not
asserted (a shared machine makes any time limit flaky): `python -m
tests.support.web_load` prints the medians.
"""

from __future__ import annotations

import threading

from tests.support.harness import Daemon, drop, wait_for
from tests.support.web import WebPage
from tests.support.web_load import CLIENTS, burst, load


def test_200_concurrent_status_requests_while_the_daemon_works_all_succeed(tmp_path):
    root = tmp_path / "root"
    with Daemon(root) as daemon, WebPage(root) as web:
        for n in range(30):
            drop(root / "inbox", f"catalog/{n:02d}.jpg", "sleep 0.2")
        wait_for(lambda: (s := daemon.status("catalog")) and s["counts"]["processing"], what="the daemon working")
        for path in ("/api/status", "/sessions", "/api/status"):
            outcomes = burst(web.port, CLIENTS, path)
            assert outcomes == {200: CLIENTS}, outcomes
        stop = threading.Event()
        polling: dict = {}
        clients = threading.Thread(target=lambda: polling.update(load(web.port, stop, CLIENTS, every=0.5)))
        clients.start()
        try:
            status = daemon.wait_complete("catalog", timeout=120)
        finally:
            stop.set()
            clients.join()
        assert set(polling) == {200} and polling[200] >= CLIENTS, polling
        assert status["counts"]["done"] == 30
        assert not daemon.events("upkeep_failed")
