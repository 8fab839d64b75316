"""The durable-write contract (bgremover/durable.py): a published file is whole or absent.

Real files in tmp_path and real faults: a full disk, a read-only disk, a writer
killed by SIGKILL, a reader racing the writer. Nothing of os is mocked.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_durable.py.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from bgremover import durable
from tests.support.disks import set_read_only, small_tmpfs
from tests.unit.test_durable import NEW, OLD, temps


@pytest.fixture
def target(tmp_path) -> Path:
    path = tmp_path / "status.json"
    path.write_bytes(OLD)
    return path


@pytest.fixture
def disk(tmp_path):
    with small_tmpfs(tmp_path / "disk", size_kb=512) as folder:
        yield folder


@contextlib.contextmanager
def read_only(disk: Path) -> Iterator[None]:
    set_read_only(disk, True)  # every write there: EROFS, even for root
    try:
        yield
    finally:
        set_read_only(disk, False)


def fill_up(disk: Path) -> None:
    # Reserves every free block at once; tests.disks.fill fails on a disk whose free space
    # is not a whole number of its 64 KiB chunks, as a disk already holding a file is.
    free = os.statvfs(disk)
    with open(disk / "filler", "wb") as out:
        os.posix_fallocate(out.fileno(), 0, free.f_bavail * free.f_frsize)


def test_a_full_disk_leaves_the_old_target_and_no_temp(disk):
    target = disk / "status.json"
    target.write_bytes(OLD)
    fill_up(disk)
    with pytest.raises(OSError) as raised:
        durable.atomic_write(target, bytes(256 * 1024))
    assert raised.value.errno == errno.ENOSPC
    assert target.read_bytes() == OLD
    assert temps(disk) == []


def test_a_read_only_disk_refuses_the_write_and_leaves_the_old_target(disk):
    target = disk / "status.json"
    target.write_bytes(OLD)
    with read_only(disk), pytest.raises(OSError) as raised:
        durable.atomic_write(target, NEW)
    assert raised.value.errno == errno.EROFS
    assert target.read_bytes() == OLD
    assert temps(disk) == []


def test_publish_on_a_read_only_disk_leaves_the_target_and_the_temp_for_its_writer(disk):
    target, temp = disk / "photo.png", durable.temp_path(disk / "photo.png")
    target.write_bytes(OLD)
    temp.write_bytes(NEW)
    with read_only(disk), pytest.raises(OSError) as raised:
        durable.publish(temp, target)
    assert raised.value.errno == errno.EROFS
    assert target.read_bytes() == OLD
    assert temp.read_bytes() == NEW  # the job's own `finally` removes it


def test_a_writer_killed_mid_write_leaves_the_old_target_whole_and_a_temp_start_up_clears(tmp_path, target):
    code = (
        "import os, signal, sys\n"
        "from pathlib import Path\n"
        "from bgremover import durable\n"
        "with durable.replacing(Path(sys.argv[1])) as out:\n"
        "    out.write(b'half' * 100000)\n"
        "    out.flush()\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, check=False)
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert target.read_bytes() == OLD
    assert len(temps(tmp_path)) == 1
    assert durable.remove_temp_files(tmp_path) == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["status.json"]
