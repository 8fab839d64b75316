"""Hostile names and symlinks in the inbox, against a real daemon with the fake jobs.

The contract: symlinks in the inbox (to files or folders outside it, to folders
inside it, dangling) are never followed out of the inbox, and what happens to
them is logged. File names that are not UTF-8, hold a newline, are 255 bytes
long or look like paths never escape the ZIP or the root, and the status JSON
stays valid UTF-8. ZIP member names are always relative and normalised.
"""

from __future__ import annotations

import json
import ntpath
import os
import posixpath
import zipfile
from pathlib import Path

import pytest

from tests.support.harness import Daemon, drop, wait_for

NAME_MAX = 255  # bytes in one path component, on every Linux filesystem we run on
ROOT_FOLDERS = {"inbox", "outbox", "retry", "cancel", "uploaded", "review", "state", "archive"}
STAGING = ".staging"  # where tests.support.harness.drop writes a file before renaming it into the inbox
LONG = "a" * 251 + ".jpg"  # 255 bytes: the longest name a file can have


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "root"


# -- what a user may rely on, whatever was dropped --------------------------------


def strict_status(root: Path, session: str) -> dict:
    """The status JSON, read as strict UTF-8; every name in it is text that encodes back to UTF-8."""
    document = json.loads((root / "outbox" / f"{session}.json").read_bytes().decode("utf-8"))
    for item in document["items"]:
        assert isinstance(item["name"], str), item
        item["name"].encode("utf-8")  # a lone surrogate (an undecoded byte) would raise here
        assert item["output"] is None or isinstance(item["output"], str), item
    return document


def complete(daemon: Daemon, session: str) -> dict:
    daemon.wait_complete(session)
    return strict_status(daemon.root, session)


def assert_safe_member(name: str) -> None:
    """A name no extractor can take out of its folder, and one it can create."""
    assert not name.startswith("/"), f"absolute ZIP member {name!r}"
    assert ntpath.splitdrive(name)[0] == "", f"ZIP member {name!r} starts with a drive"
    assert "\\" not in name, f"ZIP member {name!r} holds a backslash, a separator on Windows"
    assert ".." not in name.split("/"), f"ZIP member {name!r} climbs with '..'"
    assert posixpath.normpath(name) == name, f"ZIP member {name!r} is not normalised"
    name.encode("utf-8")  # strict: no lone surrogate
    too_long = [part for part in name.split("/") if len(part.encode()) > NAME_MAX]
    assert too_long == [], f"ZIP member {name!r} has a part over 255 bytes"


def zip_matching_status(root: Path, status: dict) -> dict[str, bytes]:
    """The session ZIP's members, each safe and each the `output` of one done item; name -> bytes."""
    with zipfile.ZipFile(root / "outbox" / status["zip"]) as archive:
        members = {info.filename: archive.read(info) for info in archive.infolist()}
    for name in members:
        assert_safe_member(name)
    outputs = [item["output"] for item in status["items"] if item["status"] == "done"]
    assert sorted(members) == sorted(outputs)
    return members


def assert_nothing_outside_the_root(tmp_path: Path, root: Path, *also: str) -> None:
    """The root's parent holds the root, the daemon's log and what the test put there; the root its own folders."""
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted({root.name, f"{root.name}-daemon.log", *also})
    assert {p.name for p in root.iterdir()} <= ROOT_FOLDERS | {STAGING}


def log_records(daemon: Daemon) -> tuple[list[dict], list[str]]:
    """Every JSON line of the log, parsed, and the other lines (the start-up banner, job tracebacks)."""
    records, others = [], []
    for line in daemon.log().splitlines():
        if line.startswith("{"):
            records.append(json.loads(line))  # a name that broke a line in two would fail here
        else:
            others.append(line)
    return records, others


def reported(daemon: Daemon, paths: set[str]) -> dict[str, str]:
    """Wait for a file_ignored line naming each path; every ignored path -> its reason."""

    def ignored() -> dict[str, str]:
        return {event["path"]: event["reason"] for event in daemon.events("file_ignored")}

    return wait_for(lambda: paths <= ignored().keys() and ignored(), what=f"file_ignored lines for {sorted(paths)}")


def snapshot(folder: Path) -> dict[str, bytes | None]:
    """Every entry under folder: a file's bytes, None for a folder."""
    found = {}
    for path in sorted(folder.rglob("*")):
        found[str(path.relative_to(folder))] = None if path.is_dir() else path.read_bytes()
    return found


def files_left(folder: Path) -> list[str]:
    """Files (not folders) still under folder; tolerant of folders removed while we walk."""
    return [os.path.join(top, name) for top, _, names in os.walk(folder) for name in names]


# -- symlinks ---------------------------------------------------------------------


@pytest.mark.parametrize("when", ["while it runs", "before it starts"])
def test_symlinks_are_reported_and_never_followed_out_of_the_inbox(root, tmp_path, when):
    outside = tmp_path / "outside"
    (outside / "album" / "empty").mkdir(parents=True)
    (outside / "secret.jpg").write_bytes(b"outside: secret")
    (outside / "album" / "inner.jpg").write_bytes(b"outside: inner")
    (outside / "album" / "more.png").write_bytes(b"outside: more")
    before = snapshot(outside)
    inbox = root / "inbox"
    links = {
        inbox / "to-file.jpg": outside / "secret.jpg",
        inbox / "climbing.jpg": Path("../../outside/secret.jpg"),  # relative, out of the root
        inbox / "to-folder": outside / "album",  # a symlinked folder of images, dropped as a session would be
        inbox / "dangling.jpg": tmp_path / "nowhere.jpg",
        inbox / "to-inside": Path("kept"),  # a folder inside the inbox, also dropped for real
        inbox / "to-itself": Path("."),  # the inbox itself: following it would never end
        inbox / "to-state": root / "state",  # the daemon's own originals
        inbox / "shoot" / "linked.jpg": outside / "secret.jpg",
        inbox / "shoot" / "linked-folder": outside / "album",
    }

    daemon = Daemon(root)
    if when == "while it runs":
        daemon.start()
    try:
        for link, target in links.items():
            link.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, link)
        drop(inbox, "kept/own.jpg", "kept: own")
        drop(inbox, "shoot/real.jpg", "shoot: real")
        drop(inbox, "regular.jpg", "regular beside the links")
        if when == "before it starts":
            daemon.start()

        assert complete(daemon, "kept")["items"][0]["name"] == "own.jpg"
        assert [item["name"] for item in complete(daemon, "shoot")["items"]] == ["real.jpg"]
        sessions = set(daemon.statuses())
        loose = [name for name in sessions if name.startswith("batch-")]
        assert sessions == {"kept", "shoot", *loose} and len(loose) == 1
        assert [item["name"] for item in complete(daemon, loose[0])["items"]] == ["regular.jpg"]

        ignored = reported(daemon, {str(link) for link in links})
    finally:
        if daemon.process is not None:
            daemon.stop()

    assert {path: ignored[path] for path in map(str, links)} == {str(link): "symlink" for link in links}
    for link, target in links.items():
        assert link.is_symlink() and os.readlink(link) == str(target), f"{link} was taken or changed"
    assert snapshot(outside) == before
    zips = {name: zip_matching_status(root, daemon.status(name)) for name in sessions}
    assert zips == {
        "kept": {"own.png": b"cutout of kept: own"},
        "shoot": {"real.png": b"cutout of shoot: real"},
        loose[0]: {"regular.png": b"cutout of regular beside the links"},
    }
    assert sorted(p.name for p in (root / "archive").iterdir()) == sorted(sessions)
    assert not any(b"outside" in path.read_bytes() for path in map(Path, files_left(root / "archive")))
    assert_nothing_outside_the_root(tmp_path, root, "outside")


# -- hostile file names -------------------------------------------------------------

# What is dropped (relative to the dropped folder "hostile", as bytes) -> (its item name, its ZIP member).
HOSTILE = {
    b"caf\xe9.jpg": ("caf%E9.jpg", "caf%E9.png"),  # not UTF-8: each such byte becomes %XX
    b"new\nline.jpg": ("new\nline.jpg", "new_line.png"),  # Windows cannot extract a control character
    LONG.encode(): (LONG, LONG[:-4] + ".png"),  # the output extension replaces the input's: still 255 bytes
    b"-rf.jpg": ("-rf.jpg", "-rf.png"),
    b" leading space.jpg": (" leading space.jpg", " leading space.png"),
    b"trailing space .jpeg": ("trailing space .jpeg", "trailing space .png"),
    b"a..b.jpg": ("a..b.jpg", "a..b.png"),
    b"\\..\\..\\escape.jpg": ("\\..\\..\\escape.jpg", "escape.png"),  # backslashes are separators to Windows
    b"\\etc\\rooted.jpg": ("\\etc\\rooted.jpg", "etc/rooted.png"),
    b"sub\\..\\..\\z.jpg": ("sub\\..\\..\\z.jpg", "sub/z.png"),  # '..' is dropped, not resolved
    b"a..b/deep/x.jpg": ("a..b/deep/x.jpg", "a..b/deep/x.png"),
    b"-dash/ space/caf\xe9 \n.webp": ("-dash/ space/caf%E9 \n.webp", "-dash/ space/caf%E9 _.png"),
}
LOOSE = {
    b"loose\xff\nname.jpg": ("loose%FF\nname.jpg", "loose%FF_name.png"),
    b" .jpg": (" .jpg", " .png"),
    b"--.tiff": ("--.tiff", "--.png"),
}


def drop_bytes(inbox: Path, relative: bytes, content: bytes) -> None:
    """tests.support.harness.drop for a bytes path (a name that is not UTF-8): written beside the inbox, renamed in."""
    target = os.path.join(os.fsencode(inbox), relative)
    os.makedirs(os.path.dirname(target), exist_ok=True)
    staging = inbox.parent / STAGING / "bytes"
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(content)
    os.rename(staging, target)


def test_hostile_file_names_stay_inside_the_zip_the_archive_and_the_root(root, tmp_path):
    contents = {raw: b"content %d" % n for n, raw in enumerate([*HOSTILE, *LOOSE])}
    with Daemon(root) as daemon:
        for raw in HOSTILE:
            drop_bytes(root / "inbox", b"hostile/" + raw, contents[raw])
        for raw in LOOSE:
            drop_bytes(root / "inbox", raw, contents[raw])
        hostile = complete(daemon, "hostile")
        loose = [name for name in daemon.statuses() if name.startswith("batch-")]
        assert sorted(daemon.statuses()) == sorted(["hostile", *loose]) and len(loose) == 1
        batch = complete(daemon, loose[0])
        records, others = log_records(daemon)

    for status, dropped in ((hostile, HOSTILE), (batch, LOOSE)):
        assert {item["name"]: (item["status"], item["output"]) for item in status["items"]} == {
            name: ("done", member) for name, member in dropped.values()
        }
        assert zip_matching_status(root, status) == {
            member: b"cutout of " + contents[raw] for raw, (_, member) in dropped.items()
        }
        archive = root / "archive" / status["session"]
        assert {name: (archive / name).read_bytes() for name, _ in dropped.values()} == {
            name: contents[raw] for raw, (name, _) in dropped.items()
        }
    assert files_left(root / "inbox") == []
    queued = {(e["session"], e["item"]) for e in records if e["event"] == "item_queued"}
    assert queued == {("hostile", name) for name, _ in HOSTILE.values()} | {(loose[0], n) for n, _ in LOOSE.values()}
    assert not [line for line in others if "line.jpg" in line or "name.jpg" in line]
    assert_nothing_outside_the_root(tmp_path, root)


def test_a_name_that_looks_like_a_windows_drive_gets_a_relative_member(root):
    with Daemon(root) as daemon:
        drop(root / "inbox", "drive/C:\\Windows\\evil.jpg", "evil")
        drop(root / "inbox", "drive/D:evil.jpg", "drive-relative")
        status = complete(daemon, "drive")
    members = [item["output"] for item in status["items"]]
    drives = [name for name in members if ntpath.splitdrive(name)[0]]
    # A Windows extractor that trusts member names would resolve "C:/..." outside its folder.
    assert drives == [], f"ZIP members {drives!r} start with a Windows drive"
    assert sorted(members) == ["C_/Windows/evil.png", "D_evil.png"]
    zip_matching_status(root, status)


def test_a_name_with_a_newline_keeps_the_log_one_json_object_per_line(root):
    first, broken = "first half\nsecond half.jpg", "broken\nsecond line.jpg"
    with Daemon(root) as daemon:
        drop(root / "inbox", first, "ok")
        drop(root / "inbox", broken, "exit 3")
        session = wait_for(lambda: [n for n in daemon.statuses() if n.startswith("batch-")], what="a session")[0]
        status = complete(daemon, session)
        items = {item["name"]: item for item in status["items"]}
        assert (items[first]["status"], items[first]["output"]) == ("done", "first half_second half.png")
        assert (items[broken]["status"], items[broken]["retry_marker"]) == ("failed", f"retry/{session}/{broken}")

        (root / items[broken]["retry_marker"]).touch()
        wait_for(
            lambda: {i["name"]: i["attempts"] for i in daemon.status(session)["items"]}[broken] == 2,
            what="the retry of the name with a newline",
        )
        status = complete(daemon, session)
        records, others = log_records(daemon)

    assert zip_matching_status(root, status) == {"first half_second half.png": b"cutout of ok"}
    finished = [(r["item"], r["status"]) for r in records if r["event"] == "job_finished"]
    assert sorted(finished) == sorted([(first, "done"), (broken, "failed"), (broken, "failed")])
    assert not [line for line in others if "second half" in line or "second line" in line]


# -- names at the length limit ------------------------------------------------------


def test_a_255_byte_name_is_done_and_a_failed_one_can_be_retried_through_its_marker(root, tmp_path):
    flaky = "b" * 251 + ".jpg"
    with Daemon(root) as daemon:
        drop(root / "inbox", f"long/{LONG}", "ok")
        drop(root / "inbox", f"long/{flaky}", f"flaky {tmp_path / 'flag'}")
        status = complete(daemon, "long")
        items = {item["name"]: item for item in status["items"]}
        assert (items[LONG]["status"], items[LONG]["output"]) == ("done", "a" * 251 + ".png")
        assert (items[flaky]["status"], items[flaky]["retry_marker"]) == ("failed", f"retry/long/{flaky}")

        (root / items[flaky]["retry_marker"]).touch()
        wait_for(
            lambda: {i["name"]: i["status"] for i in daemon.status("long")["items"]}[flaky] == "done", what="the retry"
        )
        status = complete(daemon, "long")

    assert zip_matching_status(root, status) == {
        "a" * 251 + ".png": b"cutout of ok",
        "b" * 251 + ".png": f"cutout of flaky {tmp_path / 'flag'}".encode(),
    }
    assert sorted(p.name for p in (root / "archive" / "long").iterdir()) == [LONG, flaky]
    assert_nothing_outside_the_root(tmp_path, root, "flag")


# -- folder names -------------------------------------------------------------------


def test_folders_named_like_options_or_dots_are_sessions_and_a_dot_name_waits(root, tmp_path):
    with Daemon(root) as daemon:
        for folder in ("a..b", "-rf", " spaced", "new\nline", "caf\udce9"):  # the last: a byte that is not UTF-8
            drop_bytes(root / "inbox", os.fsencode(folder) + b"/x.jpg", os.fsencode(folder))
        drop(root / "inbox", ".../y.jpg", "three dots")  # dot-names, like rsync's temporary ones
        drop(root / "inbox", "..\\..\\climb.jpg", "dot-dot")
        statuses = {name: complete(daemon, name) for name in ("a..b", "-rf", " spaced", "new\nline", "caf%E9")}
        dot_names = {str(root / "inbox" / "..."), str(root / "inbox" / "..\\..\\climb.jpg")}
        ignored = reported(daemon, dot_names)

    assert sorted(daemon.statuses()) == sorted(statuses)
    for name, status in statuses.items():
        dropped = os.fsencode(name.replace("%E9", "\udce9"))  # each file holds its folder's name
        assert zip_matching_status(root, status) == {"x.png": b"cutout of " + dropped}
    assert {path: ignored[path] for path in dot_names} == dict.fromkeys(dot_names, "temporary name")
    assert (root / "inbox" / "..." / "y.jpg").read_bytes() == b"three dots"
    assert (root / "inbox" / "..\\..\\climb.jpg").read_bytes() == b"dot-dot"
    assert_nothing_outside_the_root(tmp_path, root)


# -- names the daemon would lengthen past 255 bytes -----------------------------------


def test_names_that_would_grow_past_255_bytes_are_shortened_and_everything_completes(root, tmp_path):
    # A second copy of a 255-byte name becomes a " (2)" twin; a 255-byte name of
    # bytes that are not UTF-8 becomes %XX text three times as long; a 255-byte
    # folder is a session whose status file adds ".json". Each must still be a
    # name the archive, the retry folder and an extracting user can create.
    undecodable = b"\xff" * 251 + b".jpg"
    folder = "f" * 255
    with Daemon(root) as daemon:
        drop(root / "inbox", f"long/{LONG}", "first")
        complete(daemon, "long")
        drop(root / "inbox", f"long/{LONG}", f"flaky {tmp_path / 'flag'}")  # a new session takes it
        drop_bytes(root / "inbox", b"long/" + undecodable, b"not utf-8")
        drop(root / "inbox", f"{folder}/x.jpg", "long folder")
        folder_session = folder[:250]
        statuses = {name: complete(daemon, name) for name in ("long-2", folder_session)}

        [flaky] = [item for item in statuses["long-2"]["items"] if item["status"] == "failed"]
        (root / flaky["retry_marker"]).touch()  # its retry folder could be made
        wait_for(lambda: daemon.status("long-2")["counts"]["done"] == 2, what="the retry")
        statuses["long-2"] = complete(daemon, "long-2")

    names = sorted(item["name"] for item in statuses["long-2"]["items"])
    escaped = "%FF" * 83 + ".jpg"  # 253 bytes: the 84th %FF would pass 255
    assert names == sorted([LONG, escaped])
    assert [item["name"] for item in statuses[folder_session]["items"]] == ["x.jpg"]
    for status in statuses.values():
        assert status["counts"]["failed"] == 0
        for name in zip_matching_status(root, status):
            assert len(name.encode()) <= NAME_MAX
    archived = sorted(p.name for p in (root / "archive" / "long-2").iterdir())
    assert archived == sorted([LONG, escaped])
    assert_nothing_outside_the_root(tmp_path, root, "flag")


def test_a_twin_of_a_255_byte_name_keeps_its_number_and_extension(root):
    with Daemon(root, session_idle_seconds=30) as daemon:
        drop(root / "inbox", f"twins/{LONG}", "sleep 60")
        wait_for(lambda: daemon.status("twins"), what="the session")
        drop(root / "inbox", f"twins/{LONG}", "sleep 60")  # same name, same open session
        wait_for(lambda: (s := daemon.status("twins")) and s["total"] == 2, what="the twin")
        (root / "cancel").joinpath("twins").touch()
        wait_for(lambda: daemon.status("twins")["state"] == "complete", what="the cancel")
        status = daemon.status("twins")
    twin = "a" * 247 + " (2).jpg"
    assert [item["name"] for item in status["items"]] == [LONG, twin]
    assert len(twin.encode()) == NAME_MAX
    assert [item["retry_marker"] for item in status["items"]] == [f"retry/twins/{LONG}", f"retry/twins/{twin}"]
    assert (root / "retry" / "twins").is_dir()
