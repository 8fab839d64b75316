"""What each image gives: the cutout, its mask alone, or both side by side in the ZIP."""

from __future__ import annotations

import numpy as np
from PIL import Image

from bgremover.imaging import matting
from bgremover.outbox import zips as outbox


def test_a_mask_is_the_alpha_alone_as_an_8_bit_grey_png(tmp_path):
    rgba = Image.new("RGBA", (6, 3), (10, 20, 30, 0))
    rgba.putpixel((1, 1), (10, 20, 30, 200))
    matting.write_mask(rgba, tmp_path / "m.png", matting.Options())
    mask = Image.open(tmp_path / "m.png")
    assert (mask.format, mask.mode, mask.size) == ("PNG", "L", (6, 3))
    np.testing.assert_array_equal(np.asarray(mask), np.asarray(rgba.getchannel("A")))


def test_mask_names_sit_beside_their_cutouts_and_never_collide():
    assert outbox.mask_member("shoes/red.png") == "shoes/red.mask.png"
    assert len(outbox.mask_member("a" * 251 + ".png").encode()) <= 255
    taken: set[str] = set()
    first = outbox.member_with_mask("x.jpg", ".png", taken)
    taken |= {first, outbox.mask_member(first)}
    # "x.mask.jpg" would become "x.mask.png": the name of x.jpg's mask, so it takes the next candidate.
    second = outbox.member_with_mask("x.mask.jpg", ".png", taken)
    assert (first, second) == ("x.png", "x.mask-jpg.png")
    assert outbox.mask_member(second) not in taken
