"""Plain bilinear resampling (imaging/resample.py), against the rule written out pixel by pixel.

The IS-Net package resizes with its own loop: output x samples the source at
x · (source / output), between floor and ceil of that (the last pixel repeated
at the edge), and rounds halves up. `by_the_rule` is that loop, slow and
literal; the fast version must agree with it.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from bgremover.imaging import matting, resample
from bgremover.models import manifest as models


def by_the_rule(pixels: np.ndarray, width: int, height: int) -> np.ndarray:
    source_height, source_width = pixels.shape[:2]
    out = np.zeros((height, width, *pixels.shape[2:]), dtype=np.uint8)
    for y in range(height):
        for x in range(width):
            sx, sy = x * source_width / width, y * source_height / height
            x1, y1 = math.floor(sx), math.floor(sy)
            x2, y2 = min(math.ceil(sx), source_width - 1), min(math.ceil(sy), source_height - 1)
            dx, dy = sx - x1, sy - y1
            value = (
                (1 - dx) * (1 - dy) * pixels[y1, x1].astype(float)
                + dx * (1 - dy) * pixels[y1, x2]
                + (1 - dx) * dy * pixels[y2, x1]
                + dx * dy * pixels[y2, x2]
            )
            out[y, x] = np.floor(value + 0.5)
    return out


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((37, 53, 3), (20, 15)),  # shrinking colour, by factors that are not whole
        ((20, 15), (53, 37)),  # enlarging a mask: the last column and row repeat
        ((16, 16), (31, 9)),  # wider and flatter at once
        ((300, 200, 3), (64, 64)),  # more output rows than fit one band would need several bands at scale
    ],
)
def test_the_fast_version_follows_the_rule_pixel_by_pixel(shape, size):
    pixels = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    fast, literal = resample.bilinear(pixels, size), by_the_rule(pixels, *size)
    assert fast.shape == literal.shape
    difference = np.abs(fast.astype(int) - literal)
    # The two add the same four products in a different order; where the sum
    # lands on exactly .5, the last bit of a double may round it either way.
    assert difference.max() <= 1
    assert (difference > 0).mean() < 0.005


def test_bands_join_without_a_seam(monkeypatch):
    pixels = np.random.default_rng(7).integers(0, 256, (90, 70), dtype=np.uint8)
    whole = resample.bilinear(pixels, (40, 130))
    monkeypatch.setattr(resample, "BAND_ROWS", 7)
    np.testing.assert_array_equal(resample.bilinear(pixels, (40, 130)), whole)


def test_the_same_size_is_the_identity():
    pixels = np.random.default_rng(3).integers(0, 256, (12, 9, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resample.bilinear(pixels, (9, 12)), pixels)


def test_it_takes_only_8_bit_images():
    with pytest.raises(ValueError, match="bilinear resizes H×W or H×W×C uint8 arrays, not float32"):
        resample.bilinear(np.zeros((4, 4), dtype=np.float32), (2, 2))


# ---------------------------------------------------------------- through the manifest's fields


def spec(**fields) -> models.ModelSpec:
    bundled = models.load_model_spec("u2netp", verify=False)
    return models.ModelSpec(**{**bundled.__dict__, "input_size": (16, 8), "scale": "unit", **fields})


def test_preprocess_with_bilinear_feeds_the_rule_normalised_as_the_entry_says():
    image = Image.fromarray(np.random.default_rng(5).integers(0, 256, (30, 50, 3), dtype=np.uint8))
    isnet_like = spec(resize="bilinear", mean=(128 / 255,) * 3, std=(256 / 255,) * 3)
    tensor = matting.preprocess(image, isnet_like)
    expected = (by_the_rule(np.asarray(image), 16, 8).astype(np.float32) - 128) / 256  # (v − 128) / 256
    np.testing.assert_allclose(tensor[0].transpose(1, 2, 0), expected, atol=1e-6)


def test_a_unit_mask_is_taken_as_alpha_and_a_stretched_one_is_spread_over_0_to_255():
    raw = np.full((8, 16), 0.25, dtype=np.float32)
    raw[:, 8:] = 0.75
    unit = np.asarray(matting.postprocess(raw, (16, 8), spec(mask_range="unit", resize="bilinear")))
    stretched = np.asarray(matting.postprocess(raw, (16, 8), spec(mask_range="stretch", resize="bilinear")))
    assert (unit[0, 0], unit[0, -1]) == (63, 191)  # 0.25 · 255 = 63.75 and 0.75 · 255 = 191.25, cut down
    assert (stretched[0, 0], stretched[0, -1]) == (0, 255)


def test_a_unit_mask_outside_0_to_1_is_clipped_not_wrapped():
    raw = np.array([[-0.2, 1.3]], dtype=np.float32)
    mask = np.asarray(matting.postprocess(raw, (2, 1), spec(mask_range="unit", resize="bilinear")))
    assert mask.tolist() == [[0, 255]]


def test_postprocess_with_bilinear_enlarges_the_mask_by_the_rule():
    levels = np.random.default_rng(9).integers(0, 256, (8, 16), dtype=np.uint8)
    raw = (levels.astype(np.float32) + 0.5) / 255  # whole levels once cut down
    mask = matting.postprocess(raw, (37, 23), spec(mask_range="unit", resize="bilinear"))
    np.testing.assert_array_equal(np.asarray(mask), by_the_rule(levels, 37, 23))


def test_a_photo_whose_sides_divide_by_a_power_of_two_is_resized_exactly_by_the_rule():
    # 200×150 to 128×128 steps by 25/16 and 75/64 source pixels, as 2000×1500 to
    # 1024×1024 does: every weight and sum is exact, so no order of adding can differ.
    pixels = np.random.default_rng(11).integers(0, 256, (150, 200, 3), dtype=np.uint8)
    np.testing.assert_array_equal(resample.bilinear(pixels, (128, 128)), by_the_rule(pixels, 128, 128))
