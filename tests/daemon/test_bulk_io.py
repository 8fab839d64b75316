"""The loop under bulk I/O: a big session ZIP and thousands of files dropped at once never stop it.

A real daemon with fake job bodies, under a watchdog played by a datagram
socket (tests/support/notify.py). Its watchdog timeout is short, so it pings
on almost every pass: the gaps between pings show how long the loop's passes
took. The sizes fit a test; BGREMOVER_TEST_BIG_ZIP_MB=2048 and
BGREMOVER_TEST_DROPPED_FILES=3000 run the issue's own scenario by hand.
"""

from __future__ import annotations

import os
import shutil
import time
import zipfile
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.harness import Daemon, drop, wait_for

BIG_ZIP_MB = int(os.environ.get("BGREMOVER_TEST_BIG_ZIP_MB", "600"))
DROPPED_FILES = int(os.environ.get("BGREMOVER_TEST_DROPPED_FILES", "3000"))
PART_MB = 100  # each big result; the session's ZIP holds BIG_ZIP_MB of them
WATCHDOG_SECONDS = 0.5  # the daemon pings once a quarter second has passed: every pass, nearly
PING_INTERVAL_BOUND = 10.0  # the bound: under WatchdogSec=60, a ping at least every 10 s


def seconds(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00")).timestamp()


def during(daemon: Daemon, event: str, start: float, end: float) -> int:
    return sum(start <= seconds(record) <= end for record in daemon.events(event))


def stage_drop(folder: Path, count: int) -> None:
    """`count` files written beside the inbox, so one rename drops them all at once."""
    folder.mkdir(parents=True)
    for index in range(count):
        (folder / f"{index:05}.jpg").write_text("ok")


@pytest.fixture
def root(tmp_path):
    """The daemon's root, removed after the test: its results and ZIPs are hundreds of megabytes."""
    yield tmp_path / "root"
    shutil.rmtree(tmp_path / "root", ignore_errors=True)


def temp_zip(outbox: Path, session: str) -> list[Path]:
    return list(outbox.glob(f".tmp-{session}.zip*"))


def zip_sizes(path: Path) -> dict[str, int]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: info.file_size for info in archive.infolist()}


def drop_big_session(inbox: Path, session: str, megabytes: int) -> dict[str, int]:
    """A session of 100 MB cutouts; what its ZIP must hold, member by member."""
    parts = max(1, megabytes // PART_MB)
    for index in range(parts):
        drop(inbox, f"{session}/part-{index:03}.jpg", f"bytes {megabytes // parts}")
    return {f"part-{index:03}.png": (megabytes // parts) << 20 for index in range(parts)}


def test_while_a_big_zip_is_written_and_thousands_of_files_arrive_jobs_go_on_and_the_watchdog_is_pinged(
    tmp_path, root, manager
):
    daemon = Daemon(root, job_slots=2, session_idle_seconds=2)
    daemon.env.update(NOTIFY_SOCKET=manager.socket.getsockname(), WATCHDOG_USEC=str(int(WATCHDOG_SECONDS * 1e6)))
    stage_drop(tmp_path / "staging" / "bulk", DROPPED_FILES)
    inbox, outbox = root / "inbox", root / "outbox"
    with daemon:
        expected = drop_big_session(inbox, "big", BIG_ZIP_MB)
        for index in range(40):  # jobs that run while the big session's ZIP is written
            drop(inbox, f"stream/{index:03}.jpg", "sleep 0.3")

        # The moment the big ZIP's temp file appears, thousands of files arrive at once.
        wait_for(lambda: manager.listen(0.02) is not None and temp_zip(outbox, "big"), 120, 0, "the big ZIP")
        zip_started = time.time()
        os.rename(tmp_path / "staging" / "bulk", inbox / "bulk")
        wait_for(lambda: manager.listen(0.02) is not None and (outbox / "big.zip").exists(), 300, 0, "big.zip")
        zip_written = time.time()
        wait_for(lambda: manager.listen(0.05) is not None and not any((inbox / "bulk").iterdir()), 300, 0, "takes")
        manager.listen(1.0)
        assert daemon.stop() == 0
    manager.pending()

    pings = manager.pings()
    longest = max(later - earlier for earlier, later in zip(pings, pings[1:]))
    started = during(daemon, "job_started", zip_started, zip_written)
    finished = during(daemon, "job_finished", zip_started, zip_written)
    print(f"ZIP of {BIG_ZIP_MB} MB written in {zip_written - zip_started:.1f} s; {DROPPED_FILES} files dropped")
    print(f"longest interval between pings: {longest:.2f} s; jobs started {started}, finished {finished} meanwhile")
    assert longest < PING_INTERVAL_BOUND, f"the loop went {longest:.1f} s without a pass"
    assert started > 0 and finished > 0, "jobs are started and reaped while the ZIP is written"
    assert zip_sizes(outbox / "big.zip") == expected


def test_a_retry_read_while_its_sessions_zip_is_written_completes_it_only_with_a_zip_that_holds_the_retried_item(
    tmp_path, root
):
    inbox, outbox = root / "inbox", root / "outbox"
    with Daemon(root) as daemon:
        expected = drop_big_session(inbox, "race", 300)
        flaky = f"flaky {tmp_path / 'flaky-flag'}"
        drop(inbox, "race/flaky.jpg", flaky)  # fails once, works on its retry
        wait_for(lambda: temp_zip(outbox, "race"), 60, 0.01, "the ZIP being written")
        (root / "retry" / "race" / "flaky.jpg").touch()  # read while the ZIP without flaky.png is written
        status = daemon.wait_complete("race", timeout=120)

    assert [line["session"] for line in daemon.events("zip_outdated")] == ["race"], "the retry landed mid-write"
    assert len(daemon.events("session_complete")) == 1, "complete once, never with the ZIP that lacked it"
    assert [item["status"] for item in status["items"]] == ["done"] * len(status["items"])
    assert zip_sizes(outbox / "race.zip") == {**expected, "flaky.png": len(f"cutout of {flaky}")}


@pytest.mark.parametrize("end", ["kill -9", "stop"])
def test_a_daemon_ended_while_a_zip_is_written_loses_nothing_and_the_next_life_writes_it(root, end):
    inbox, outbox = root / "inbox", root / "outbox"
    daemon = Daemon(root).start()
    expected = drop_big_session(inbox, "big", 300)
    wait_for(lambda: temp_zip(outbox, "big"), 60, 0.01, "the ZIP being written")
    if end == "kill -9":
        daemon.kill()
        assert temp_zip(outbox, "big"), "killed half-way through the ZIP"
    else:
        assert daemon.stop() == 0
        assert not temp_zip(outbox, "big"), "an orderly stop removes the half-written ZIP"
        assert [line["session"] for line in daemon.events("zip_build_abandoned")] == ["big"]
    assert not (outbox / "big.zip").exists()

    with Daemon(root) as restarted:
        status = restarted.wait_complete("big", timeout=120)
    assert not temp_zip(outbox, "big")
    assert status["counts"]["done"] == len(expected)
    assert zip_sizes(outbox / "big.zip") == expected
    assert sorted(path.name for path in (root / "archive" / "big").iterdir()) == [
        name.replace(".png", ".jpg") for name in sorted(expected)
    ], "every original kept"
