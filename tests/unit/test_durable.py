"""The durable-write contract (bgremover/durable.py): a published file is whole or absent.

Real files in tmp_path and real faults: a full disk, a read-only disk, a writer
killed by SIGKILL, a reader racing the writer. Nothing of os is mocked.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bgremover import durable

OLD, NEW = b"old and whole\n", b"new and whole\n" * 1000


def temps(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob(f"{durable.TEMP_PREFIX}*"))


def fixed_temp(target: Path) -> Path:
    return target.with_name(f".{target.name}.partial")  # as models/fetch.py names its temp


@pytest.fixture
def target(tmp_path) -> Path:
    path = tmp_path / "status.json"
    path.write_bytes(OLD)
    return path


# ---------------------------------------------------------------- success


@pytest.mark.parametrize("temp", [None, fixed_temp], ids=["unique temp", "caller's temp"])
def test_a_write_replaces_the_target_whole_and_leaves_no_temp(tmp_path, target, temp):
    durable.atomic_write(target, NEW, temp(target) if temp else None)
    assert target.read_bytes() == NEW
    assert sorted(path.name for path in tmp_path.iterdir()) == ["status.json"]


def test_a_write_creates_a_target_that_did_not_exist(tmp_path):
    durable.atomic_write(tmp_path / "new.json", NEW)
    assert (tmp_path / "new.json").read_bytes() == NEW
    assert temps(tmp_path) == []


@pytest.mark.parametrize("temp", [None, fixed_temp], ids=["unique temp", "caller's temp"])
def test_written_files_are_readable_by_others(tmp_path, temp):
    path = tmp_path / "a.json"
    old_umask = os.umask(0o022)
    try:
        durable.atomic_write(path, NEW, temp(path) if temp else None)
    finally:
        os.umask(old_umask)
    assert path.stat().st_mode & 0o777 == 0o644


def test_the_temp_is_beside_the_target_and_the_target_unchanged_until_the_end(tmp_path, target):
    with durable.replacing(target) as out:
        out.write(NEW)
        out.flush()
        [name] = temps(tmp_path)  # in the target's own folder, so the rename cannot cross filesystems
        temp = tmp_path / name
        assert os.path.samestat(temp.stat(), os.fstat(out.fileno()))
        assert temp.stat().st_dev == target.stat().st_dev
        assert target.read_bytes() == OLD
    assert target.read_bytes() == NEW
    assert temps(tmp_path) == []


def test_the_unique_temp_name_fits_beside_a_target_of_the_longest_name(tmp_path):
    path = tmp_path / ("n" * 250 + ".json")  # 255 bytes, NAME_MAX
    durable.atomic_write(path, NEW)
    assert path.read_bytes() == NEW
    assert temps(tmp_path) == []


def test_a_callers_temp_left_by_a_killed_writer_is_overwritten_not_refused(tmp_path, target):
    fixed_temp(target).write_bytes(b"half of an earlier attempt")
    durable.atomic_write(target, NEW, fixed_temp(target))
    assert target.read_bytes() == NEW
    assert not fixed_temp(target).exists()


def test_publish_renames_a_temp_written_by_path_over_the_target(tmp_path, target):
    temp = durable.temp_path(target)
    assert temp == tmp_path / ".tmp-status.json"  # what remove_temp_files clears after a crash
    temp.write_bytes(NEW)
    durable.publish(temp, target)
    assert target.read_bytes() == NEW
    assert not temp.exists()


def test_a_reader_racing_the_writer_sees_the_old_file_or_the_new_one_never_a_part(target):
    contents = [bytes([ord("a") + i]) * (256 * 1024) for i in range(4)]
    seen: set[bytes] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(target.read_bytes())

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for round_ in range(40):
            durable.atomic_write(target, contents[round_ % len(contents)])
    finally:
        stop.set()
        reader.join()
    assert seen <= {OLD, *contents}


# ---------------------------------------------------------------- failure


@pytest.mark.parametrize("temp", [None, fixed_temp], ids=["unique temp", "caller's temp"])
def test_an_error_in_the_writer_leaves_the_old_target_and_no_temp(tmp_path, target, temp):
    class WriterFailed(Exception):
        pass

    with pytest.raises(WriterFailed):  # the writer's own exception, not another one
        with durable.replacing(target, temp(target) if temp else None) as out:
            out.write(NEW[:100])
            raise WriterFailed
    assert target.read_bytes() == OLD
    assert sorted(path.name for path in tmp_path.iterdir()) == ["status.json"]


def test_publish_of_a_missing_temp_raises_and_leaves_the_target(target):
    with pytest.raises(FileNotFoundError):
        durable.publish(durable.temp_path(target), target)
    assert target.read_bytes() == OLD
