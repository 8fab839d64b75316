"""Names the daemon makes from dropped names: valid UTF-8, and no part over 255 bytes."""

from __future__ import annotations

import pytest

from bgremover.intake.names import NAME_MAX, cut, display, fitted, fitted_path, session_name, twin
from bgremover.outbox.zips import member_name


def size(text: str) -> int:
    return len(text.encode("utf-8"))


def test_short_names_are_left_alone():
    assert fitted("photo.jpg") == "photo.jpg"
    assert twin("photo.jpg", 2) == "photo (2).jpg"
    assert twin("shoots/day.1/photo", 3) == "shoots/day.1/photo (3)"  # the folder's dot is not an extension
    assert session_name("catalog", 1) == "catalog" and session_name("catalog", 2) == "catalog-2"


def test_a_cut_never_splits_a_character_or_an_escape():
    assert cut("é" * 10, 5) == "éé"  # 2 bytes each: a third would need 6
    assert cut("%FF%FF", 5) == "%FF"  # not "%FF%F", which would name another byte
    assert cut("abc", 3) == "abc"


@pytest.mark.parametrize("name", ["a" * 251 + ".jpg", "é" * 125 + "x.jpeg", "%FF" * 84 + ".png"])
def test_a_twin_of_a_long_name_keeps_its_number_and_extension_within_255_bytes(name):
    fitted_name = fitted(name)
    made = twin(fitted_name, 12)
    assert size(fitted_name) <= NAME_MAX and size(made) <= NAME_MAX
    assert made.endswith(" (12)" + name[name.rindex(".") :])


def test_every_part_of_a_path_is_fitted():
    parts = fitted_path("x" * 300 + "/" + "y" * 300 + ".tif").split("/")
    assert [size(part) for part in parts] == [NAME_MAX, NAME_MAX]
    assert parts[1].endswith(".tif")


def test_an_undecodable_name_becomes_escapes_that_fit():
    shown = fitted(display("\udcff" * 251 + ".jpg"))
    assert shown == "%FF" * 83 + ".jpg" and size(shown) == 253


def test_a_session_name_leaves_room_for_its_status_file():
    name = session_name("s" * 300, 7)
    assert name.endswith("-7") and size(name + ".json") == NAME_MAX


def test_zip_members_of_long_names_stay_distinct_and_within_255_bytes():
    taken: set[str] = set()
    for _ in range(4):
        taken.add(member_name("a" * 251 + ".jpg", ".webp", taken))
    assert len(taken) == 4
    assert all(size(member) <= NAME_MAX and member.endswith(".webp") for member in taken)
    # "-jpg" does not fit beside 250 a's, so the twins go straight to their numbers, which are never cut.
    assert sorted(member[-7:] for member in taken) == ["-2.webp", "-3.webp", "-4.webp", "aa.webp"]
