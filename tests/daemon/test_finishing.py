"""Finishing a session when its archive or its ZIP makes trouble: each session on its own, and nothing lost.

A real daemon with fake job bodies. The archive on another filesystem is a
real tmpfs mount (tests/support/disks.py); an archive that cannot hold two
names is made by the user's own drops, as it happens in a shared inbox.
"""

from __future__ import annotations

import shutil
from datetime import datetime

from tests.support.disks import small_tmpfs
from tests.support.harness import Daemon, drop, wait_for


def items_by_name(status: dict) -> dict[str, dict]:
    return {item["name"]: item for item in status["items"]}


def seconds(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def tries(daemon: Daemon) -> list[float]:
    """When the daemon tried to finish a failing session: its first failure, then each retry's (debug) line."""
    records = daemon.events("session_finish_failed") + daemon.events("session_finish_retry_failed")
    return sorted(seconds(record) for record in records)


def test_originals_reach_an_archive_on_another_filesystem(tmp_path):
    root = tmp_path / "root"
    with small_tmpfs(root / "archive", 4096), Daemon(root, keep_originals="true") as daemon:
        drop(root / "inbox", "shoot/a.jpg", "ok")
        drop(root / "inbox", "shoot/b.jpg", "ok")
        status = daemon.wait_complete("shoot", timeout=30)
        assert status["counts"]["done"] == 2
        assert (root / "archive" / "shoot" / "a.jpg").read_bytes() == b"ok"
        assert (root / "archive" / "shoot" / "b.jpg").read_bytes() == b"ok"
        assert not list((root / "state" / "originals").iterdir()), "each original is in one place: the archive"


def test_a_session_whose_archive_fails_waits_alone_says_why_and_is_tried_again_later(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, keep_originals="true", session_idle_seconds=3) as daemon:
        # "x.jpg" is archived as a file, so "x.jpg/y.jpg" finds no folder to go into.
        drop(root / "inbox", "a-stuck/x.jpg", "ok")
        wait_for(lambda: not (root / "inbox" / "a-stuck" / "x.jpg").exists(), what="x.jpg taken")
        drop(root / "inbox", "a-stuck/x.jpg/y.jpg", "ok")
        wait_for(lambda: not (root / "inbox" / "a-stuck" / "x.jpg" / "y.jpg").exists(), what="y.jpg taken")
        drop(root / "inbox", "b-fine/z.jpg", "ok")

        daemon.wait_complete("b-fine", timeout=15)  # not held back by the other one
        stuck = wait_for(lambda: (s := daemon.status("a-stuck")) and s.get("finish_error") and s, what="reason")
        assert stuck["state"] == "processing"
        assert "archive" in stuck["finish_error"], stuck
        wait_for(lambda: len(tries(daemon)) >= 4, timeout=25, what="four tries")
        assert len(daemon.events("session_finish_failed")) == 1, "one line when it starts failing"
        times = tries(daemon)
        gaps = [later - earlier for earlier, later in zip(times, times[1:], strict=False)]
        assert gaps[2] > gaps[0] + 1.5, f"the tries are spaced ever wider, not made every pass: {gaps}"
        # Nothing the user dropped is lost: y.jpg is still the daemon's, in its store.
        assert len(list((root / "state" / "originals").iterdir())) == 1


def test_a_session_whose_zip_was_moved_away_completes_again_after_a_retry(tmp_path):
    root = tmp_path / "root"
    flag = tmp_path / "flaky-flag"
    with Daemon(root) as daemon:
        drop(root / "inbox", "moved/good.jpg", "ok")
        drop(root / "inbox", "moved/flaky.jpg", f"flaky {flag}")
        status = daemon.wait_complete("moved")
        assert items_by_name(status)["flaky.jpg"]["status"] == "failed"
        shutil.move(root / "outbox" / "moved.zip", tmp_path / "collected.zip")  # the user collected it

        (root / items_by_name(status)["flaky.jpg"]["retry_marker"]).touch()
        wait_for(lambda: items_by_name(daemon.status("moved"))["flaky.jpg"]["status"] == "done", what="retry")
        daemon.wait_complete("moved", timeout=15)
        assert set(daemon.zip_members("moved")) == {"good.png", "flaky.png"}
