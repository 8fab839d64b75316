"""`bgremover status`, the live view: bars, counts, rate, ETA and failures, once, as JSON, or followed.

The arithmetic is pinned with fixed clocks; the command runs as a real process
beside a real daemon (fake jobs: `sleep 1` takes a second, `bad-input` fails),
after that daemon stopped, and on a root with no database at all.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_status_view.py.
"""

from __future__ import annotations

import json
import os
import select
import time
from contextlib import closing

import pytest

from bgremover.queue.store import Store
from tests.support.cli import one_error_line
from tests.support.status_view import follow_until, interrupt, start_following, status, status_json

# ---------------------------------------------------------------- the arithmetic, with fixed times


def test_on_a_root_with_no_database_status_says_so_in_every_form_and_creates_nothing(tmp_path):
    root = tmp_path / "empty"
    text = status(root)
    assert (text.returncode, text.stdout) == (0, f"no sessions yet under {root}\n")
    doc = status_json(root)
    assert doc["sessions"] == [] and (doc["queued"], doc["processing"]) == (0, 0)
    assert doc["daemon"] == {"running": False, "pid": None, "job_slots": None, "spare_slots": 0}

    follower = start_following(root, "--interval", "0.1")
    try:
        frames = follow_until(follower, lambda f: len(f) >= 2)
    finally:
        code, stderr = interrupt(follower)
    assert code == 0 and stderr == ""
    assert all(frame.splitlines()[1] == f"no sessions yet under {root}" for frame in frames)
    assert not root.exists(), "status only reads"


def test_a_database_the_daemon_is_still_creating_reads_as_no_sessions_yet(tmp_path):
    state = tmp_path / "root" / "state"
    state.mkdir(parents=True)
    (state / "bgremover.sqlite3").touch()  # the file exists; its schema is not written yet
    text = status(tmp_path / "root")
    assert (text.returncode, text.stdout) == (0, f"no sessions yet under {tmp_path / 'root'}\n")


def test_following_as_json_prints_one_document_per_line(tmp_path):
    follower = start_following(tmp_path / "empty", "--json", "--interval", "0.1")
    try:
        received = b""
        while received.count(b"\n") < 2:
            assert select.select([follower.stdout], [], [], 20)[0], "no JSON line within 20 s"
            received += os.read(follower.stdout.fileno(), 1 << 16)
    finally:
        code, _ = interrupt(follower)
    assert code == 0
    documents = [json.loads(line) for line in received.decode().splitlines()[:2]]
    assert all(doc["sessions"] == [] for doc in documents)


@pytest.mark.parametrize("interval", ["0", "-1", "soon", "nan"])
def test_an_interval_that_is_not_a_positive_number_is_a_usage_error(tmp_path, interval):
    result = status(tmp_path, "--follow", "--interval", interval)
    assert result.returncode == 2 and "--interval" in result.stderr


def test_status_of_an_unknown_session_fails_in_json_too(tmp_path):
    root = tmp_path / "root"
    (root / "state").mkdir(parents=True)
    with closing(Store(root / "state" / "bgremover.sqlite3")) as store:
        store.create_session("known", "known", "png", time.time())
    result = status(root, "--json", "unknown")
    assert result.returncode == 1 and result.stdout == ""
    assert one_error_line(result) == "bgremover: no session named 'unknown'"
