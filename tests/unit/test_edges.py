"""The contract of imaging/edges.py, on small synthetic masks and photos built here."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image, ImageFilter

from bgremover.imaging import edges
from tests.support.images import iou

HEIGHT, WIDTH = 200, 300


def disc(
    radius: float, centre: tuple[float, float] = (100, 150), shape: tuple[int, int] = (HEIGHT, WIDTH)
) -> np.ndarray:
    """A boolean disc of `radius` pixels around `centre` (row, column)."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= radius**2


def as_mask(region: np.ndarray) -> np.ndarray:
    """A boolean region as the model's uint8 alpha: 255 inside, 0 outside."""
    return np.where(region, 255, 0).astype(np.uint8)


def perimeter(region: np.ndarray) -> int:
    """How many pixel sides separate the region from the rest: a measure of the contour's length."""
    return int((region[1:] != region[:-1]).sum() + (region[:, 1:] != region[:, :-1]).sum())


def bright_disc_on_dark_texture(
    radius: float = 60, shape: tuple[int, int] = (HEIGHT, WIDTH), seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """An RGB photo of a pale disc centred on a dark, striped, noisy background, and the disc (bool)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    stripes = np.where((rows + cols) // 8 % 2 == 0, 50.0, 30.0)
    background = stripes[..., None] + rng.normal(0, 6, (*shape, 3))
    truth = disc(radius, centre=(shape[0] / 2, shape[1] / 2), shape=shape)
    subject = np.array([225.0, 205.0, 180.0]) + rng.normal(0, 6, (*shape, 3))
    photo = np.where(truth[..., None], subject, background)
    return np.clip(photo, 0, 255).astype(np.uint8), truth


def band_error(mask: np.ndarray, truth: np.ndarray, band: np.ndarray) -> float:
    """Mean absolute difference, on 0..1, between the mask and the true region over the band."""
    return float(np.abs(mask[band] / 255 - truth[band]).mean())


# The refine quality tests use a somewhat larger photo: at 200×300 the band is
# 4 pixels and the filter's window too small to reach past a mask's error.
QUALITY_SHAPE = (300, 450)


def plain_photo() -> np.ndarray:
    return np.full((HEIGHT, WIDTH, 3), 128, dtype=np.uint8)


# ---------------------------------------------------------------- clean


def test_clean_removes_a_speck_and_fills_a_pinhole_and_keeps_the_subject():
    subject = disc(60)
    region = subject.copy()
    region[20:26, 250:256] = True  # a 6×6 speck far from the subject
    region[98:102, 148:152] = False  # a 4×4 pinhole in its middle
    cleaned = edges.clean(as_mask(region))
    assert cleaned.dtype == np.uint8 and cleaned.shape == region.shape
    assert cleaned[20:26, 250:256].max() == 0
    assert cleaned[98:102, 148:152].min() == 255
    assert iou(cleaned >= 128, subject) >= 0.99


def test_clean_keeps_a_second_subject_above_the_island_share_and_drops_one_below():
    big = disc(50, centre=(100, 80))  # about 7850 pixels
    second = disc(10, centre=(100, 220))  # about 314: 4 % of the big one, a second shoe
    speck = disc(3, centre=(30, 270))  # about 29: 0.4 %, below ISLAND_SHARE
    cleaned = edges.clean(as_mask(big | second | speck))
    assert iou(cleaned >= 128, big | second) >= 0.97
    assert (cleaned >= 128)[second].mean() > 0.95
    assert cleaned[speck].max() == 0


def test_clean_keeps_a_large_enclosed_hole():
    ring = disc(80) & ~disc(35)  # the hole is a third of the ring's area, like a mug's handle
    cleaned = edges.clean(as_mask(ring))
    assert cleaned[disc(30)].max() == 0
    assert iou(cleaned >= 128, ring) >= 0.98


def test_clean_gives_a_crisp_edge_with_a_thin_ramp():
    subject = disc(60)
    cleaned = edges.clean(as_mask(subject))
    between = (cleaned > 0) & (cleaned < 255)
    assert between.any(), "the contour should be antialiased, not a hard staircase"
    assert between.sum() < 3 * 2 * np.pi * 60  # a ramp about two pixels wide along the circle
    near_contour = edges.band(as_mask(subject), 3)
    assert not (between & ~near_contour).any(), "partial alpha may only appear within a few pixels of the contour"


def test_clean_takes_a_soft_model_mask_to_a_crisp_one():
    truth = disc(60)
    soft = Image.fromarray(as_mask(truth)).resize((WIDTH // 8, HEIGHT // 8), Image.Resampling.BOX)
    soft = np.asarray(soft.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR))
    contour = 2 * np.pi * 60
    assert ((soft > 0) & (soft < 255)).sum() > 10 * contour  # the premise: a wide, blurry ramp
    cleaned = edges.clean(soft)
    assert ((cleaned > 0) & (cleaned < 255)).sum() < 3 * contour
    assert iou(cleaned >= 128, truth) >= 0.97


def test_clean_removes_a_one_pixel_spur():
    region = np.zeros((HEIGHT, WIDTH), dtype=bool)
    region[60:140, 80:220] = True
    region[40:60, 150] = True  # a 1-pixel-wide spur, 20 pixels long, joined to the subject
    cleaned = edges.clean(as_mask(region))
    assert cleaned[40:56, 150].max() == 0
    assert iou(cleaned >= 128, region) >= 0.97


def test_clean_straightens_a_jagged_contour():
    rng = np.random.default_rng(1)
    top = 60 + rng.integers(-1, 2, WIDTH)  # a top edge that jumps a pixel up or down at random
    rows = np.arange(HEIGHT)[:, None]
    region = (rows >= top) & (rows < 140)
    straight = 2 * WIDTH  # the perimeter of a band with straight top and bottom edges
    cleaned = edges.clean(as_mask(region)) >= 128
    assert perimeter(cleaned) - straight < 0.5 * (perimeter(region) - straight)
    assert iou(cleaned, region) >= 0.95


@pytest.mark.parametrize("value", [0, 255])
def test_clean_returns_an_empty_or_full_mask_unchanged(value):
    mask = np.full((HEIGHT, WIDTH), value, dtype=np.uint8)
    cleaned = edges.clean(mask)
    assert np.array_equal(cleaned, mask)
    assert not np.shares_memory(cleaned, mask)


# ---------------------------------------------------------------- band


def test_band_holds_the_pixels_within_width_of_the_contour_on_either_side():
    region = np.zeros((HEIGHT, WIDTH), dtype=bool)
    region[:, :150] = True  # a straight contour between columns 149 and 150
    band = edges.band(as_mask(region), 5)
    assert band.dtype == bool and band.shape == region.shape
    columns = np.flatnonzero(band.all(axis=0))
    assert columns.tolist() == list(range(145, 155))
    assert band.sum() == 10 * HEIGHT


def test_band_width_grows_with_the_longer_side_and_has_a_floor():
    assert edges.band_width((2000, 3000)) > edges.band_width((200, 300)) >= edges.BAND_MIN_PX
    assert edges.band_width((40, 30)) == edges.BAND_MIN_PX
    assert edges.band_width((2000, 3000, 3)) == edges.band_width((3000, 2000))


# ---------------------------------------------------------------- refine


def test_refine_changes_only_the_band_around_the_contour():
    photo, _ = bright_disc_on_dark_texture()
    mask = as_mask(disc(57))  # the model's disc, three pixels short of the real one
    refined = edges.refine(mask, photo)
    band = edges.band(mask, edges.band_width(mask.shape))
    assert refined.dtype == np.uint8 and refined.shape == mask.shape
    assert np.array_equal(refined[~band], mask[~band])
    assert (refined[band] != mask[band]).any()


def test_refine_moves_a_shrunken_mask_toward_the_true_edge():
    photo, truth = bright_disc_on_dark_texture(90, QUALITY_SHAPE)
    mask = as_mask(disc(89, centre=(150, 225), shape=QUALITY_SHAPE))  # a pixel short all round
    band = edges.band(mask, edges.band_width(mask.shape))
    refined = edges.refine(mask, photo)
    assert band_error(refined, truth, band) < 0.9 * band_error(mask, truth, band)


def test_refine_brings_a_blurry_model_mask_closer_to_the_photo_edge():
    photo, truth = bright_disc_on_dark_texture(90, QUALITY_SHAPE)
    height, width = QUALITY_SHAPE
    coarse = Image.fromarray(as_mask(truth)).resize((width // 4, height // 4), Image.Resampling.BOX)
    mask = np.asarray(coarse.resize((width, height), Image.Resampling.BILINEAR))  # like the model's upscaled grid
    band = edges.band(mask, edges.band_width(mask.shape))
    refined = edges.refine(mask, photo)
    assert band_error(refined, truth, band) < 0.9 * band_error(mask, truth, band)


@pytest.mark.parametrize("value", [0, 255])
def test_refine_returns_an_empty_or_full_mask_unchanged(value):
    photo, _ = bright_disc_on_dark_texture()
    mask = np.full((HEIGHT, WIDTH), value, dtype=np.uint8)
    refined = edges.refine(mask, photo)
    assert np.array_equal(refined, mask)
    assert not np.shares_memory(refined, mask)


def test_refine_refuses_a_photo_of_another_size():
    mask = as_mask(disc(60))
    with pytest.raises(ValueError, match=r"the mask is 300×200 pixels but the image is 100×100"):
        edges.refine(mask, np.zeros((100, 100, 3), dtype=np.uint8))


def test_refine_refuses_a_photo_that_is_not_rgb():
    mask = as_mask(disc(60))
    with pytest.raises(ValueError, match="H×W×3 uint8 RGB"):
        edges.refine(mask, np.zeros((HEIGHT, WIDTH, 4), dtype=np.uint8))


# ---------------------------------------------------------------- apply


def test_apply_dispatches_on_the_edges_setting():
    photo, _ = bright_disc_on_dark_texture()
    mask = as_mask(disc(57))
    assert np.array_equal(edges.apply("raw", mask, photo), mask)
    assert np.array_equal(edges.apply("clean", mask, photo), edges.clean(mask))
    assert np.array_equal(edges.apply("refine", mask, photo), edges.refine(mask, photo))


def test_apply_rejects_an_unknown_mode():
    mask = as_mask(disc(60))
    with pytest.raises(ValueError, match=r"unknown edges mode 'soft' \(known: raw, clean, refine\)"):
        edges.apply("soft", mask, plain_photo())


@pytest.mark.parametrize("mode", edges.MODES)
def test_apply_refuses_a_mask_and_photo_of_different_sizes_in_every_mode(mode):
    mask = as_mask(disc(60))
    with pytest.raises(ValueError, match="the mask is 300×200 pixels but the image is 200×300"):
        edges.apply(mode, mask, np.zeros((WIDTH, HEIGHT, 3), dtype=np.uint8))


# ---------------------------------------------------------------- refine: what the model was sure of


def random_mask(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    """A model-like mask: smooth blobs of subject with soft edges, sure cores, and some noise."""
    coarse = rng.random((max(2, shape[0] // 8), max(2, shape[1] // 8))).astype(np.float32)
    smooth = np.asarray(Image.fromarray(coarse, "F").resize(shape[::-1], Image.Resampling.BILINEAR))
    steepness = rng.uniform(2, 40)  # from a soft ramp to an almost hard cut
    alpha = 1 / (1 + np.exp(-steepness * (smooth - rng.uniform(0.3, 0.7))))
    alpha = alpha + rng.normal(0, rng.uniform(0, 0.05), shape)
    return np.rint(np.clip(alpha, 0, 1) * 255).astype(np.uint8)


def random_photo(rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """A photo loosely matching the mask: two random colours, texture, noise, and stray patches."""
    shape = mask.shape
    subject, background = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
    share = (mask.astype(np.float32) / 255)[..., None]
    photo = share * subject + (1 - share) * background + rng.normal(0, rng.uniform(0, 40), (*shape, 3))
    for _ in range(int(rng.integers(0, 4))):
        top, left = int(rng.integers(0, shape[0])), int(rng.integers(0, shape[1]))
        photo[top : top + 12, left : left + 12] = rng.uniform(0, 255, 3)
    return np.clip(photo, 0, 255).astype(np.uint8)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**32 - 1), height=st.integers(12, 96), width=st.integers(12, 96))
def test_refine_never_lowers_a_pixel_the_model_gave_250_or_more(seed, height, width):
    rng = np.random.default_rng(seed)
    mask = random_mask(rng, (height, width))
    photo = random_photo(rng, mask)
    refined = edges.refine(mask, photo)
    sure = mask >= 250
    assert np.array_equal(refined[sure], mask[sure])
    band = edges.band(mask, edges.band_width(mask.shape))
    assert np.array_equal(refined[~band], mask[~band])


def test_refine_leaves_a_flat_background_beside_a_soft_mask_as_the_model_gave_it():
    # A pale disc on a flat dark background, and a model mask whose edge is a
    # soft ramp a few pixels wide. On the flat background the guided filter
    # alone only blurs the mask: it spread a halo of alpha beyond the ramp.
    photo = np.where(disc(60)[..., None], np.uint8(220), np.uint8(30)).repeat(3, axis=2).astype(np.uint8)
    soft = np.asarray(Image.fromarray(as_mask(disc(60))).filter(ImageFilter.GaussianBlur(1.5)))
    refined = edges.refine(soft, photo)
    outside = ~disc(65)  # beyond the photo's edge and the mask's ramp (the filter alone left up to 5 levels here)
    assert soft[outside].max() == 0  # the premise: the model gave the background nothing there
    assert refined[outside].max() == 0
