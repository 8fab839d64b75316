"""The intake contract, with the real watchdog observer on real folders.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_intake.py.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from bgremover.intake.watcher import Intake
from tests.unit.test_intake import STABLE, collect


@pytest.fixture
def tiny_inotify_queue():
    """The kernel's inotify queue cut to 16 events for watchers started inside the test (root only).

    The limit is read when a watcher opens its inotify instance, so it is put
    back as soon as the test's watcher has started.
    """
    setting = Path("/proc/sys/fs/inotify/max_queued_events")
    before = setting.read_text()
    setting.write_text("16")
    try:
        yield lambda: setting.write_text(before)
    finally:
        setting.write_text(before)


def test_lost_events_are_noticed_and_a_rescan_finds_every_file(inbox, wakes, tiny_inotify_queue):
    intake = Intake(inbox, STABLE, wakes)
    try:
        intake.start()
        tiny_inotify_queue()  # restore the machine's limit: only our watcher has the tiny queue
        # Another process makes 400 files (far more events than 16) while this one holds
        # the GIL, so the watcher's thread cannot read its queue until it has overflowed.
        maker = subprocess.Popen(["sh", "-c", "for i in $(seq 1000 1399); do : > $i.jpg; done"], cwd=inbox)
        switch_interval = sys.getswitchinterval()
        sys.setswitchinterval(30)
        try:
            busy_until = time.monotonic() + 3
            while time.monotonic() < busy_until:  # pure Python: never lets the GIL go
                pass
        finally:
            sys.setswitchinterval(switch_interval)
        assert maker.wait(30) == 0
        paths = sorted(inbox / f"{index}.jpg" for index in range(1000, 1400))
        assert all(path.exists() for path in paths)

        wait_for_overflow = time.monotonic() + 10
        while not intake.events_lost() and time.monotonic() < wait_for_overflow:
            time.sleep(0.05)
        assert time.monotonic() < wait_for_overflow, "the watcher never reported the overflow"
        assert not intake.events_lost()  # reported once, then cleared

        intake.rescan()
        assert sorted(collect(intake, until=set(paths))) == paths
    finally:
        intake.stop()
