"""The outbox contract: atomic files, strict status JSON, safe ZIP member names, session ZIPs."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path

import pytest

from bgremover.durable import atomic_write, remove_temp_files
from bgremover.outbox.zips import (
    MissingMemberError,
    member_name,
    write_status,
    write_zip,
)


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.rglob(".tmp-*"))


def fail(*_args, **_kwargs):
    raise OSError(5, "simulated I/O error")


def test_atomic_write_creates_and_replaces_without_leftovers(tmp_path):
    path = tmp_path / "status.json"
    atomic_write(path, b"first")
    atomic_write(path, b"second")
    assert path.read_bytes() == b"second"
    assert leftovers(tmp_path) == []


def test_written_files_are_readable_by_others(tmp_path):
    old_umask = os.umask(0o022)
    try:
        atomic_write(tmp_path / "a.json", b"{}")
    finally:
        os.umask(old_umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("step", ["fsync", "replace"])
def test_a_failed_write_keeps_the_old_content_and_no_temp_file(tmp_path, monkeypatch, step):
    path = tmp_path / "status.json"
    atomic_write(path, b"old")
    monkeypatch.setattr(os, step, fail)
    with pytest.raises(OSError, match="simulated"):
        atomic_write(path, b"new")
    monkeypatch.undo()
    assert path.read_bytes() == b"old"
    assert leftovers(tmp_path) == []


def test_a_failed_zip_keeps_the_old_zip_and_no_temp_file(tmp_path):
    path = tmp_path / "session.zip"
    write_zip(path, [("a.png", write(tmp_path / "a.png", b"A"))])
    with pytest.raises(FileNotFoundError):
        write_zip(path, [("a.png", None), ("b.png", tmp_path / "missing.png")], previous=path)
    assert read_zip(path) == {"a.png": b"A"}
    assert leftovers(tmp_path) == []


def test_status_json_is_strict_utf8_and_round_trips_non_ascii_names(tmp_path):
    path = tmp_path / "status.json"
    doc = {"session": "s1", "items": [{"name": "café/日本の写真.jpg", "status": "done"}], "progress": 0.5}
    write_status(path, doc)
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="strict")
    assert "café/日本の写真.jpg" in text  # written as is, not as \\u escapes
    assert text.endswith("}\n")
    assert json.loads(text) == doc


def test_status_with_an_undecodable_name_raises_and_writes_nothing(tmp_path):
    path = tmp_path / "status.json"
    with pytest.raises(UnicodeEncodeError):
        write_status(path, {"name": os.fsdecode(b"bad\xff.jpg")})
    assert not path.exists()
    assert leftovers(tmp_path) == []


def test_status_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_status(tmp_path / "status.json", {"progress": float("nan")})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "item, expected",
    [
        ("a.jpg", "a.png"),
        ("a/b/c.JPEG", "a/b/c.png"),
        ("../x.jpg", "x.png"),
        ("/abs.jpg", "abs.png"),
        ("a/./b.jpg", "a/b.png"),
        ("a//b.jpg", "a/b.png"),
        ("a/../../b.jpg", "a/b.png"),
        ("a\\..\\b.jpg", "a/b.png"),
        ("photo.tar.jpg", "photo.tar.png"),
        ("noext", "noext.png"),
    ],
)
def test_member_name_normalises(item, expected):
    assert member_name(item, ".png", set()) == expected


@pytest.mark.parametrize(
    "item, taken, expected",
    [
        ("a.jpg", {"a.png"}, "a-jpg.png"),
        ("a.jpg", {"a.png", "a-jpg.png"}, "a-jpg-2.png"),
        ("a.jpg", {"a.png", "a-jpg.png", "a-jpg-2.png"}, "a-jpg-3.png"),
        ("a.jpg", {"A.PNG"}, "a-jpg.png"),  # one file once extracted on macOS or Windows
        ("x/a.webp", {"x/a.png"}, "x/a-webp.png"),
        ("x/a.webp", {"a.png"}, "x/a.png"),
        ("noext", {"noext.png"}, "noext-2.png"),
    ],
)
def test_member_name_collisions(item, taken, expected):
    before = set(taken)
    assert member_name(item, ".png", taken) == expected
    assert taken == before


def test_member_names_for_a_session_are_distinct_and_deterministic():
    items = ["a.jpg", "a.png", "a.webp", "a.PNG", "sub/a.jpg"]

    def assign() -> list[str]:
        taken: set[str] = set()
        for item in items:
            taken.add(member_name(item, ".webp", taken))
        return sorted(taken)

    names = assign()
    assert names == assign()
    assert len({name.casefold() for name in names}) == len(items)
    assert names == ["a-PNG-2.webp", "a-png.webp", "a-webp.webp", "a.webp", "sub/a.webp"]


@pytest.mark.parametrize(
    "item, expected",
    [
        ('a<b>c:d"e|f?g*h.jpg', "a_b_c_d_e_f_g_h.png"),
        ("tab\there\x1b[31m\x7f.jpg", "tab_here_[31m_.png"),
        ("CON.jpg", "CON_.png"),
        ("nul.tar.jpg", "nul_.tar.png"),
        ("Com1", "Com1_.png"),
        ("lpt9 .jpg", "lpt9_ .png"),
        ("aux/prn/x.jpg", "aux_/prn_/x.png"),
        ("console.jpg", "console.png"),
        ("com10.jpg", "com10.png"),
        ("shoot./take .jpg", "shoot_/take .png"),
        ("a. ./b.jpg", "a___/b.png"),
    ],
)
def test_member_names_can_be_extracted_on_windows(item, expected):
    assert member_name(item, ".png", set()) == expected


def test_a_windows_safe_member_keeps_the_collision_rules():
    taken = {member_name("CON.jpg", ".png", set())}
    assert member_name("con.png", ".png", taken) == "con_-png.png"
    assert member_name("a?.jpg", ".png", {"A_.png"}) == "a_-jpg.png"


def test_member_name_with_nothing_usable_is_refused():
    with pytest.raises(ValueError):
        member_name("../..", ".png", set())


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_zip(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        assert archive.testzip() is None
        return {info.filename: archive.read(info) for info in archive.infolist()}


def test_write_zip_stores_members_and_they_decode_back(tmp_path):
    big = os.urandom(3 << 20)  # larger than one copy chunk
    a = write(tmp_path / "work" / "a.png", big)
    b = write(tmp_path / "work" / "b.png", "ünïcode".encode())
    path = tmp_path / "out" / "session.zip"
    path.parent.mkdir()
    write_zip(path, [("a.png", a), ("sub/日本.png", b)])
    assert read_zip(path) == {"a.png": big, "sub/日本.png": "ünïcode".encode()}
    with zipfile.ZipFile(path) as archive:
        assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}
    assert leftovers(path.parent) == []


def test_write_zip_copies_members_from_the_previous_zip(tmp_path):
    path = tmp_path / "session.zip"
    write_zip(path, [("a.png", write(tmp_path / "a.png", b"A")), ("b.png", write(tmp_path / "b.png", b"B"))])
    (tmp_path / "a.png").unlink()  # earlier results may exist only in the old ZIP
    c = write(tmp_path / "c.png", b"C")
    write_zip(path, [("a.png", None), ("b.png", None), ("c.png", c)], previous=path)
    assert read_zip(path) == {"a.png": b"A", "b.png": b"B", "c.png": b"C"}


@pytest.mark.parametrize("previous", [None, "missing.zip", "other.zip"])
def test_write_zip_without_any_source_for_a_member_raises(tmp_path, previous):
    write_zip(tmp_path / "other.zip", [("x.png", write(tmp_path / "x.png", b"X"))])
    path = tmp_path / "session.zip"
    with pytest.raises(MissingMemberError, match="a.png"):
        write_zip(path, [("a.png", None)], previous=tmp_path / previous if previous else None)
    assert not path.exists()
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("arcname", ["../x.png", "/x.png", "a/./b.png", "a//b.png", "a\\b.png", ""])
def test_write_zip_refuses_unnormalised_names(tmp_path, arcname):
    source = write(tmp_path / "x.png", b"X")
    with pytest.raises(ValueError, match="not relative and normalised"):
        write_zip(tmp_path / "session.zip", [(arcname, source)])
    assert not (tmp_path / "session.zip").exists()


def test_write_zip_refuses_repeated_names(tmp_path):
    source = write(tmp_path / "x.png", b"X")
    with pytest.raises(ValueError, match="repeat"):
        write_zip(tmp_path / "session.zip", [("x.png", source), ("x.png", source)])


def test_remove_temp_files_removes_only_leftovers(tmp_path):
    write(tmp_path / ".tmp-session.zip-0a1b2c3d", b"half")
    write(tmp_path / "s1" / ".tmp-status.json-deadbeef", b"half")
    keep = [write(tmp_path / "session.zip", b"Z"), write(tmp_path / ".hidden", b"h")]
    assert remove_temp_files(tmp_path) == 2
    assert leftovers(tmp_path) == []
    assert all(path.exists() for path in keep)
    assert remove_temp_files(tmp_path / "absent") == 0
