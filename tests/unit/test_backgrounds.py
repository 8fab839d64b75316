"""A background colour instead of transparency, and JPEG on it: what a marketplace wants."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bgremover.imaging import matting
from bgremover.settings import SettingsError, load_settings


@pytest.mark.parametrize(("given", "stored"), [
    ("transparent", "transparent"), ("Transparent", "transparent"), ("white", "#ffffff"), ("#FFF", "#ffffff"),
    ("#10a0c0", "#10a0c0"), ("rgb(255, 0, 0)", "#ff0000"),
])  # fmt: skip
def test_a_background_is_transparent_or_a_colour(given, stored):
    assert load_settings(None, background=given).background == stored


def test_a_word_that_is_no_colour_is_refused():
    with pytest.raises(SettingsError) as refused:
        load_settings(None, background="sky")
    assert str(refused.value) == (
        "bad setting 'background': Value error, must be \"transparent\" or a colour "
        'such as "white" or "#ffffff" (got \'sky\')'
    )


def test_a_colour_fills_exactly_where_the_cutout_was_transparent(tmp_path):
    rgba = Image.new("RGBA", (8, 4), (10, 120, 200, 0))
    rgba.paste((200, 40, 30, 255), (0, 0, 4, 4))  # left half: the subject, opaque
    out = tmp_path / "white.png"
    matting.encode(rgba, out, None, matting.Options(output_format="png", background="#ffffff"))
    pixels = np.asarray(Image.open(out))
    assert pixels.shape == (4, 8, 3)  # no alpha channel left
    assert (pixels[:, 4:] == 255).all() and (pixels[:, :4] == (200, 40, 30)).all()


def test_jpeg_cannot_be_asked_to_keep_transparency(tmp_path):
    with pytest.raises(matting.EncoderUnavailable, match="JPEG cannot keep transparency"):
        matting.encode(Image.new("RGBA", (2, 2)), tmp_path / "a.jpg", None, matting.Options(output_format="jpeg"))
