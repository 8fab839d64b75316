"""The sizes and notes an image over max_megapixels must come back with.

Shared by tests/unit/test_large_images.py and tests/model/test_large_images.py.
"""

from __future__ import annotations

COFFEE = (400, 267)  # daemon/bgremover/bench/photos/coffee.jpg: 0.107 megapixels


def assert_fits(size: tuple[int, int], original: tuple[int, int], max_megapixels: float) -> None:
    """Within the limit, close to it (reduced no more than needed), and the same shape (±1 px)."""
    width, height = size
    assert width * height <= max_megapixels * 1e6, f"{size} is over {max_megapixels} megapixels"
    assert width * height > 0.97 * max_megapixels * 1e6, f"{size} is reduced far more than needed"
    assert abs(height - width * original[1] / original[0]) <= 1, f"{size} lost the aspect of {original}"


def assert_note(note: str | None, original: tuple[int, int], reduced: tuple[int, int], max_megapixels: float) -> None:
    assert note is not None and note.startswith("reduced from"), note
    assert "{}×{}".format(*original) in note and "{}×{}".format(*reduced) in note, note
    assert f"max_megapixels = {max_megapixels:g}" in note, note
