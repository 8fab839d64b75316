"""The intake contract, with the real watchdog observer on real folders."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from bgremover.intake.watcher import Intake, is_image_name, is_temporary_name
from tests.support.intake import Wakes

STABLE = 0.3
JPEG = b"\xff\xd8\xff\xe0" + b"x" * 64


@pytest.fixture
def intake(inbox: Path, wakes: Wakes):
    watcher = Intake(inbox, STABLE, wakes)
    yield watcher
    watcher.stop()


@pytest.fixture
def watching(intake: Intake) -> Intake:
    intake.start()
    return intake


def collect(intake: Intake, until: set[Path] | None = None, seconds: float = 5.0) -> list[Path]:
    """Call ready() like the supervisor's loop until `until` is all returned, or for `seconds`."""
    returned: list[Path] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        returned += intake.ready(time.monotonic())
        if until is not None and until <= set(returned):
            break
        time.sleep(0.05)
    return returned


def write(path: Path, data: bytes = JPEG) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.mark.parametrize("name", ["a.part", "a.jpg.crdownload", "a.TMP", "~$a.jpg", ".hidden.jpg", ".a.jpg.AbC123"])
def test_temporary_names(name):
    assert is_temporary_name(name)


@pytest.mark.parametrize("name", ["a.jpg", "part.png", "a~$.jpg", "a.tmp.jpg"])
def test_real_names_are_not_temporary(name):
    assert not is_temporary_name(name)


@pytest.mark.parametrize("name", ["a.jpg", "B.JPEG", "c.Png", "d.webp", "e.avif", "f.tiff", "g.jfif", "h.gif"])
def test_image_names(name):
    assert is_image_name(name)


@pytest.mark.parametrize("name", ["a.txt", "jpg", "a.jpg.zip"])
def test_other_names_are_not_images(name):
    assert not is_image_name(name)


def test_a_file_written_slowly_is_returned_only_after_it_stops_changing(watching, inbox, wakes):
    path = inbox / "slow.jpg"
    with open(path, "wb") as out:
        for _ in range(10):
            out.write(JPEG)
            out.flush()
            last_write = time.monotonic()
            # Each ready() follows a write, so it must see a change and hold the file back.
            assert watching.ready(time.monotonic()) == []
            time.sleep(0.05)
    assert wakes.event.wait(5), "the observer never called wake()"
    returned = collect(watching, until={path})
    assert returned == [path]
    assert time.monotonic() - last_write >= STABLE
    assert path.stat().st_size == 10 * len(JPEG)
    assert watching.pending() == 0


def test_a_file_present_before_start_is_found_by_rescan(intake, inbox):
    path = write(inbox / "early.png")
    assert collect(intake, seconds=2 * STABLE) == []
    intake.rescan()
    assert collect(intake, until={path}) == [path]


def test_a_returned_file_is_forgotten(intake, inbox):
    path = write(inbox / "once.jpg")
    intake.rescan()
    assert collect(intake, until={path}) == [path]
    assert collect(intake, seconds=2 * STABLE) == []


def test_a_file_watched_again_is_due_at_once_unless_it_changes(intake, inbox):
    # The supervisor gives back files it could not take (the disk refused): they
    # must not wait stable_seconds again, or a folder would split into two sessions.
    still, changed, gone = write(inbox / "still.jpg"), write(inbox / "changed.jpg"), write(inbox / "gone.jpg")
    intake.rescan()
    assert collect(intake, until={still, changed, gone}) == [changed, gone, still]

    now = time.monotonic()
    intake.watch_again([changed, gone, still])
    write(changed, JPEG + b"more")
    gone.unlink()

    assert intake.ready(now) == [still]
    assert collect(intake, until={changed}) == [changed]


def test_a_folder_moved_in_yields_all_its_files_sorted(watching, inbox, tmp_path):
    album = tmp_path / "staging" / "album"
    names = ["a.jpg", "sub/b.png", "sub/deeper/c.webp", "sub/deeper/d.JPEG"]
    for name in names:
        write(album / name)
    os.rename(album, inbox / "album")
    expected = {inbox / "album" / name for name in names}
    returned = collect(watching, until=expected)
    assert set(returned) == expected
    assert len(returned) == len(expected)
    assert all(path.is_absolute() and path.is_relative_to(inbox) for path in returned)


def test_one_tick_returns_paths_sorted(intake, inbox):
    paths = [write(inbox / name) for name in ["c.jpg", "a.jpg", "b/z.jpg", "b/a.jpg"]]
    intake.rescan()
    intake.ready(time.monotonic())
    returned = intake.ready(time.monotonic() + STABLE + 0.01)
    assert returned == sorted(paths)


TEMPORARY = ["x.jpg.part", "y.jpg.crdownload", "z.jpg.tmp", "~$w.jpg", ".hidden.jpg", ".v.jpg.AbC123"]


def test_temporary_names_wait_until_renamed(watching, inbox):
    temps = [write(inbox / name) for name in TEMPORARY]
    write(inbox / ".staging" / "inside.jpg")
    watching.rescan()
    assert collect(watching, seconds=3 * STABLE) == []
    assert watching.pending() == 0
    finals = [inbox / f"{index}.jpg" for index in range(len(temps))]
    for temp, final in zip(temps, finals):
        os.rename(temp, final)
    assert sorted(collect(watching, until=set(finals))) == finals


def rescan_twice(intake: Intake) -> list[Path]:
    """What two full rescans return: a second one must neither return nor warn again."""
    returned = []
    for _ in range(2):
        intake.rescan()
        returned += collect(intake, seconds=2 * STABLE)
    return returned


def test_a_text_file_is_left_alone_and_warned_about_once(watching, inbox):
    path = write(inbox / "notes.txt", b"hello")
    with capture_logs() as logs:
        returned = rescan_twice(watching)
    assert returned == []
    assert path.exists()
    warnings = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warnings == [
        {"event": "file_ignored", "path": str(path), "reason": "not an image extension", "log_level": "warning"}
    ]


def test_symlinks_are_not_followed_nor_returned(watching, inbox, tmp_path):
    outside = write(tmp_path / "outside" / "secret.jpg")
    write(tmp_path / "outside" / "deep" / "hidden.jpg")
    link = inbox / "link.jpg"
    link.symlink_to(outside)
    (inbox / "folder-link").symlink_to(tmp_path / "outside" / "deep", target_is_directory=True)
    with capture_logs() as logs:
        returned = rescan_twice(watching)
    assert returned == []
    reasons = sorted((entry["path"], entry["reason"]) for entry in logs if entry["log_level"] == "warning")
    assert reasons == [(str(inbox / "folder-link"), "symlink"), (str(link), "symlink")]


def test_a_vanished_file_is_dropped(intake, inbox):
    path = write(inbox / "gone.jpg")
    intake.rescan()
    assert intake.ready(time.monotonic()) == []
    assert intake.pending() == 1
    path.unlink()
    assert intake.ready(time.monotonic() + STABLE) == []
    assert intake.pending() == 0


def test_events_in_an_also_watch_folder_only_wake(inbox, tmp_path, wakes):
    retry = tmp_path / "retry"
    retry.mkdir()
    watcher = Intake(inbox, STABLE, wakes, also_watch=[retry])
    watcher.start()
    try:
        write(retry / "session-1.jpg")
        assert wakes.event.wait(5), "an event in retry/ did not call wake()"
        assert collect(watcher, seconds=2 * STABLE) == []
        assert watcher.pending() == 0
    finally:
        watcher.stop()


def test_start_fails_cleanly_when_a_watched_folder_is_missing(inbox, tmp_path, wakes):
    watcher = Intake(inbox, STABLE, wakes, also_watch=[tmp_path / "missing"])
    with pytest.raises(OSError):
        watcher.start()
    watcher.stop()  # harmless; the no_leaks fixture checks no emitter thread survived


def test_thousands_of_files_in_one_tick(intake, inbox):
    paths = [write(inbox / f"batch{index // 500}" / f"{index:05}.jpg", b"x") for index in range(3000)]
    intake.rescan()
    started = time.monotonic()
    assert intake.ready(started) == []
    assert intake.pending() == len(paths)
    # A little past STABLE: (t + 0.3) - t can round to just under 0.3 in floating point.
    assert intake.ready(started + STABLE + 0.01) == sorted(paths)


def test_a_writer_pausing_longer_than_stable_seconds_is_taken_only_after_it_closes_the_file(watching, inbox):
    # An SMB client that preallocates, a Wi-Fi stall, a card reader: size and mtime hold
    # still while the writer still has the file open.
    path = inbox / "stalled.jpg"
    with open(path, "wb") as out:
        out.write(JPEG)
        out.flush()
        assert collect(watching, seconds=4 * STABLE) == [], "taken half-written while its writer held it open"
        out.write(JPEG)
    returned = collect(watching, until={path})
    assert returned == [path]
    assert path.read_bytes() == 2 * JPEG
