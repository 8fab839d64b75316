"""Colour decontamination (imaging/foreground.py) and the edges of real outputs, on the project's composites.

The composites are those of `bgremover bench --edges` (bench/composites.py):
a drawn furry subject with a known alpha and colour over a green wall, so
I = αF + (1 − α)B holds exactly. The cutouts are made by `bgremover remove`
with the bundled model and decoded from the files it wrote.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bgremover.bench import composites
from bgremover.imaging import foreground
from tests.support.images import fur_over_green


@pytest.fixture(scope="module")
def over_green(tmp_path_factory):
    return fur_over_green(tmp_path_factory.mktemp("green"))


# ---------------------------------------------------------------- real outputs


# ---------------------------------------------------------------- the estimator itself


def test_with_the_true_alpha_the_estimate_is_near_the_true_colour_and_only_partial_pixels_change(over_green):
    source, alpha, colour = over_green
    photo = np.asarray(Image.open(source))
    estimate = foreground.decontaminate(photo, alpha)
    partial = (alpha > 0) & (alpha < 255)
    assert (estimate[~partial] == photo[~partial]).all()
    before = np.abs(photo[partial].astype(int) - colour[partial]).mean()
    after = np.abs(estimate[partial].astype(int) - colour[partial]).mean()
    assert after < 0.7 * before, (before, after)  # measured: 41.8 levels from the true colour, then 25.2


def test_a_mask_without_partial_pixels_changes_nothing():
    photo = np.random.default_rng(0).integers(0, 256, (40, 60, 3), dtype=np.uint8)
    alpha = np.zeros((40, 60), np.uint8)
    alpha[10:30, 20:40] = 255
    assert (foreground.decontaminate(photo, alpha) == photo).all()


def test_a_rim_that_runs_off_the_photos_far_edges_is_estimated_there_too(over_green):
    source, alpha, _ = over_green
    # Cropped through the subject, so its rim runs into the last rows and columns, off the reduced copy's grid.
    height, width = 266, 420
    photo, alpha = np.asarray(Image.open(source))[:height, :width], np.ascontiguousarray(alpha[:height, :width])
    estimate = foreground.decontaminate(np.ascontiguousarray(photo), alpha)
    last = np.zeros(alpha.shape, bool)
    last[-10:, :] = last[:, -36:] = True
    rim = last & (alpha > 0) & (alpha < 255)
    assert rim.sum() > 100
    greener = [
        (image[..., 1].astype(int) - image[..., 0] / 2 - image[..., 2] / 2)[rim].mean() for image in (photo, estimate)
    ]
    assert greener[1] < greener[0] - 10, greener


@pytest.mark.parametrize(
    "photo, alpha",
    [
        (np.zeros((10, 10), np.uint8), np.zeros((10, 10), np.uint8)),
        (np.zeros((10, 10, 3), np.uint8), np.zeros((10, 12), np.uint8)),
        (np.zeros((10, 10, 3), np.float32), np.zeros((10, 10), np.uint8)),
    ],
)
def test_arrays_of_the_wrong_shape_or_type_are_refused(photo, alpha):
    with pytest.raises(ValueError, match="must be"):
        foreground.decontaminate(photo, alpha)


# ---------------------------------------------------------------- the composites


def test_each_composite_follows_the_compositing_equation_and_has_soft_partial_edges():
    for name, alpha, colour, image in composites.composites():
        a = alpha.astype(np.float32)[..., None] / 255
        back_name = name.split(" over ")[1]
        expected = a * colour + (1 - a) * composites.background(back_name)
        assert np.abs(image - expected).max() <= 0.5 + 1e-3, name
        assert ((alpha > 0) & (alpha < 255)).sum() > 5000, name
    assert len(list(composites.composites())) == len(composites.SUBJECTS) * len(composites.BACKGROUNDS)


def test_the_truth_measured_against_itself_has_no_error_and_a_wrong_alpha_has_some():
    alpha, colour = composites.subject("portrait")
    band = composites.truth_band(alpha)
    perfect = composites.measures(alpha, colour, alpha, colour, band)
    assert perfect == {"band_mae": 0.0, "mae": 0.0, "band_gradient": 0.0, "gradient": 0.0, "white_error": 0.0}
    hard = np.where(alpha >= 128, 255, 0).astype(np.uint8)
    worse = composites.measures(hard, colour, alpha, colour, band)
    assert all(value > 0 for value in worse.values()), worse
    assert worse["band_mae"] > worse["mae"], "the error lies at the edge"
