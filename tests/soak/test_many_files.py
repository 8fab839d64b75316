"""Ten thousand files dropped at once: every one is taken, in sessions of 100, with the daemon's memory in bounds.

One folder with 10,000 files takes one inotify watch, so the watch limit
(fs.inotify.max_user_watches) is not what a big drop meets first; the kernel's
event queue (fs.inotify.max_queued_events) is, and tests/unit/test_intake.py shows
a lost event is noticed and the inbox walked again. Here the real daemon takes
them all; the jobs are fake and the first one sleeps, so only the taking runs.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.support.harness import Daemon, wait_for

COUNT = 10_000


def taken(root: Path) -> int:
    db = sqlite3.connect(f"file:{root / 'state' / 'bgremover.sqlite3'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT COUNT(*) FROM items").fetchone()[0]
    finally:
        db.close()


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM line")


def test_ten_thousand_files_dropped_at_once_are_all_taken_in_sessions_of_100(tmp_path):
    root = tmp_path / "root"
    staging = tmp_path / "staging" / "catalog"
    staging.mkdir(parents=True)
    for index in range(COUNT):
        (staging / f"{index:05}.jpg").write_bytes(b"sleep 600")  # the first job sleeps; nothing else runs
    with Daemon(root, session_idle_seconds=30, log_level="info") as daemon:
        os.rename(staging, root / "inbox" / "catalog")

        wait_for(lambda: taken(root) == COUNT, timeout=600, interval=1, what=f"{COUNT} files taken")
        supervisor_mb = peak_rss_mb(daemon.process.pid)

    statuses = daemon.statuses()
    assert len(statuses) == COUNT // 100
    assert all(status["total"] == 100 for status in statuses.values())
    names = sorted(item["name"] for status in statuses.values() for item in status["items"])
    assert names == [f"{index:05}.jpg" for index in range(COUNT)]  # each once
    assert len(list((root / "state" / "originals").iterdir())) == COUNT
    assert not [path for path in (root / "inbox").rglob("*") if path.is_file()]
    assert not daemon.events("take_failed") and not daemon.events("upkeep_failed")
    print(f"\n{COUNT} files taken into {len(statuses)} sessions; supervisor peak RSS {supervisor_mb:.1f} MB")
