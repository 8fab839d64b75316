"""Finishing a session when its archive or its ZIP makes trouble: each session on its own, and nothing lost.

A real daemon with fake job bodies. The archive on another filesystem is a
real tmpfs mount (tests/support/disks.py); an archive that cannot hold two
names is made by the user's own drops, as it happens in a shared inbox.
"""

from __future__ import annotations

from tests.support.disks import small_tmpfs
from tests.support.harness import Daemon, drop


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
