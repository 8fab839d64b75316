"""Framing a cutout for a catalog: cropped to its subject, or centred on a square canvas the subject fills."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bgremover.imaging import matting
from bgremover.settings import SettingsError, load_settings
from tests.support.framing import opaque_box


def subject(size=(200, 100), box=(50, 20, 110, 60)) -> Image.Image:
    """A transparent image with one opaque red rectangle: its box is known exactly."""
    rgba = Image.new("RGBA", size, (0, 0, 255, 0))
    rgba.paste((220, 30, 30, 255), box)
    return rgba


def test_none_leaves_the_cutout_as_it_is():
    rgba = subject()
    assert matting.framed(rgba, matting.Options()) is rgba


def test_subject_crops_to_the_box_plus_a_margin_of_its_longer_side():
    framed = matting.framed(subject(), matting.Options(crop="subject", margin=10))
    assert framed.size == (60 + 2 * 6, 40 + 2 * 6)  # 10 % of 60 px on every side
    assert opaque_box(framed) == (6, 6, 66, 46)


def test_subject_crop_stops_at_the_image_edge():
    framed = matting.framed(subject(box=(0, 0, 60, 40)), matting.Options(crop="subject", margin=10))
    assert framed.size == (66, 46)


@pytest.mark.parametrize(("fill", "size"), [(85, None), (50, None), (100, None), (85, 2000), (70, 300)])
def test_square_centres_the_subject_which_spans_fill_percent_of_the_side(fill, size):
    framed = matting.framed(subject(), matting.Options(crop="square", fill=fill, size=size))
    side = framed.width
    assert framed.height == side and (size is None or side == size)
    left, top, right, bottom = opaque_box(framed)
    assert abs(max(right - left, bottom - top) - side * fill / 100) <= 2  # within a pixel or two
    assert abs((left + right) / 2 - side / 2) <= 1 and abs((top + bottom) / 2 - side / 2) <= 1  # centred


def test_a_square_on_a_colour_is_that_colour_around_the_subject(tmp_path):
    framed = matting.framed(subject(), matting.Options(crop="square"))
    out = tmp_path / "square.png"
    matting.encode(framed, out, None, matting.Options(background="#ffffff"))
    pixels = np.asarray(Image.open(out))
    assert pixels.shape[0] == pixels.shape[1] and pixels.shape[2] == 3
    assert (pixels[0, 0] == 255).all() and (pixels[-1, -1] == 255).all()


def test_an_image_without_a_subject_is_not_cropped_to_nothing():
    empty = Image.new("RGBA", (50, 30), (0, 0, 0, 0))
    assert matting.framed(empty, matting.Options(crop="square")).size == (50, 30)


@pytest.mark.parametrize(
    ("setting", "given"), [("fill", 0), ("fill", 101), ("margin", -1), ("size", 8), ("crop", "tight")]
)
def test_framing_settings_are_checked(setting, given):
    with pytest.raises(SettingsError, match=f"bad setting '{setting}'"):
        load_settings(None, **{setting: given})
