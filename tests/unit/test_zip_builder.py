"""The ZIP builder: session ZIPs written on threads of their own, collected later, abandoned at stop.

Real files in tmp_path and real threads. A build that cannot finish on its own
reads a FIFO that a writer thread of the test keeps filling, so a stop lands
in the middle of a write every time, not by luck of timing.
"""

from __future__ import annotations

import os
import threading
import zipfile
from pathlib import Path

import pytest

from bgremover.outbox.builder import Build, ZipBuilder
from bgremover.outbox.zips import MissingMemberError, write_zip


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def temp_files(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.glob(".tmp-*"))


class Endless:
    """A FIFO that a thread fills until its reader goes away: a ZIP member that never ends."""

    def __init__(self, path: Path) -> None:
        os.mkfifo(path)
        self.path = path
        self.thread = threading.Thread(target=self.fill, name="endless-writer")
        self.thread.start()

    def fill(self) -> None:
        try:
            with open(self.path, "wb") as fifo:  # blocks until the builder opens it
                while True:
                    fifo.write(b"x" * 65536)
        except BrokenPipeError:  # the builder closed its end: abandoned
            return


def test_a_build_is_written_on_a_thread_of_its_own_and_collected_later_with_the_loop_woken(tmp_path):
    woken_on: list[threading.Thread] = []
    woken = threading.Event()
    builder = ZipBuilder(wake=lambda: (woken_on.append(threading.current_thread()), woken.set()))
    path = tmp_path / "shoot.zip"
    builder.submit(Build("shoot", path, (("a.png", write(tmp_path / "a.png", b"A")),), None))
    assert builder.building("shoot")
    assert woken.wait(10), "a finished build wakes the loop"
    [built] = builder.collect()
    assert built.error is None and built.build.session == "shoot"
    assert members(path) == {"a.png": b"A"}
    assert woken_on[0] is not threading.main_thread(), "written off the caller's thread"
    assert not builder.building("shoot") and builder.collect() == []
    builder.close()


def test_a_failed_build_is_collected_with_its_error_for_the_loop_to_judge(tmp_path):
    builder = ZipBuilder(wake=lambda: None)
    builder.submit(Build("shoot", tmp_path / "shoot.zip", (("a.png", None),), None))
    builder.wait()
    [built] = builder.collect()
    assert isinstance(built.error, MissingMemberError)
    assert not (tmp_path / "shoot.zip").exists() and temp_files(tmp_path) == []
    builder.close()


def test_a_session_is_never_built_twice_at_once_and_builds_are_few(tmp_path):
    builder = ZipBuilder(wake=lambda: None)
    fifos = [Endless(tmp_path / f"endless-{n}") for n in range(2)]
    builder.submit(Build("one", tmp_path / "one.zip", (("a.png", fifos[0].path),), None))
    with pytest.raises(RuntimeError, match="being written already"):
        builder.submit(Build("one", tmp_path / "one.zip", (("a.png", fifos[0].path),), None))
    assert builder.has_room()
    builder.submit(Build("two", tmp_path / "two.zip", (("a.png", fifos[1].path),), None))
    assert not builder.has_room(), "at most two at once"
    builder.close()
    for fifo in fifos:
        fifo.thread.join(10)
    assert temp_files(tmp_path) == []


def test_a_stop_abandons_a_build_half_way_leaving_the_previous_zip_and_no_temp_file(tmp_path):
    path = tmp_path / "shoot.zip"
    write_zip(path, [("old.png", write(tmp_path / "old.png", b"OLD"))])
    endless = Endless(tmp_path / "endless")
    builder = ZipBuilder(wake=lambda: None)
    builder.submit(Build("shoot", path, (("old.png", None), ("new.png", endless.path)), path))
    while not temp_files(tmp_path) or os.stat(tmp_path / temp_files(tmp_path)[0]).st_size < 4 << 20:
        threading.Event().wait(0.01)  # until it is well into writing the member that never ends
    builder.close()
    endless.thread.join(10)
    assert not endless.thread.is_alive()
    assert temp_files(tmp_path) == [], "the half-written ZIP is removed"
    assert members(path) == {"old.png": b"OLD"}, "the last good ZIP stays"
    assert not builder.building("shoot")
