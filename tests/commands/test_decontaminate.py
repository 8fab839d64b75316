"""Colour decontamination (imaging/foreground.py) and the edges of real outputs, on the project's composites.

The composites are those of `bgremover bench --edges` (bench/composites.py):
a drawn furry subject with a known alpha and colour over a green wall, so
I = αF + (1 − α)B holds exactly. The cutouts are made by `bgremover remove`
with the bundled model and decoded from the files it wrote.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_decontaminate.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bgremover.bench import composites
from bgremover.imaging import edges
from tests.support.cli import cli, one_error_line
from tests.support.images import fur_over_green


@pytest.fixture(scope="module")
def over_green(tmp_path_factory):
    return fur_over_green(tmp_path_factory.mktemp("green"))


def removed(path, out, *flags: str) -> np.ndarray:
    """`bgremover remove PATH OUT FLAGS...`, which must succeed; the decoded output as an array."""
    result = cli("remove", path, out, *flags)
    assert result.returncode == 0, result.stderr
    return np.asarray(Image.open(out))


def green_excess_over_white(rgba: np.ndarray) -> float:
    """How much greener than grey the cutout's partial pixels are when laid over white (levels of 255)."""
    alpha = rgba[..., 3].astype(np.float32)[..., None] / 255
    white = alpha * rgba[..., :3] + (1 - alpha) * 255
    rim = (rgba[..., 3] > 0) & (rgba[..., 3] < 255)
    return float((white[..., 1] - (white[..., 0] + white[..., 2]) / 2)[rim].mean())


@pytest.fixture(scope="module")
def test_over_a_green_wall_the_decontaminated_rim_is_less_green_and_opaque_pixels_keep_their_colour(
    tmp_path, over_green
):
    source, _, _ = over_green
    photo = np.asarray(Image.open(source))
    plain = removed(source, tmp_path / "plain.png")
    clean = removed(source, tmp_path / "clean.png", "--decontaminate", "true")
    assert (plain[..., 3] == clean[..., 3]).all(), "decontamination leaves the alpha alone"
    opaque, clear = plain[..., 3] == 255, plain[..., 3] == 0
    assert opaque.mean() > 0.2 and ((plain[..., 3] > 0) & ~opaque).sum() > 5000, "a subject with a wide rim"
    assert (clean[opaque][:, :3] == photo[opaque]).all(), "opaque pixels keep the photo's colours exactly"
    assert (clean[clear][:, :3] == plain[clear][:, :3]).all()
    before, after = green_excess_over_white(plain), green_excess_over_white(clean)
    # Measured with u2netp: 3.99 levels of green over white before, 2.38 after.
    assert before > 3 and after < 0.7 * before, (before, after)


def test_refine_changes_only_the_band_around_the_raw_masks_contour(tmp_path, over_green):
    source, _, truth = over_green
    raw = removed(source, tmp_path / "raw.png", "-om")
    refined = removed(source, tmp_path / "refined.png", "-om", "--edges", "refine")
    changed = raw != refined
    assert changed.sum() > 1000, "refine moved the edge"
    band = edges.band(raw, edges.band_width(raw.shape))
    assert not (changed & ~band).any()


def test_refine_lowers_the_band_error_against_the_true_alpha_of_a_composite(tmp_path, over_green):
    source, truth, _ = over_green
    raw = removed(source, tmp_path / "raw.png", "-om")
    refined = removed(source, tmp_path / "refined.png", "-om", "--edges", "refine")
    band = composites.truth_band(truth)
    errors = [np.abs(mask.astype(int) - truth)[band].mean() for mask in (raw, refined)]
    assert errors[1] < errors[0] - 1, errors  # measured: 31.6 and 28.1 levels


def test_a_bad_decontaminate_value_is_refused_in_one_line(tmp_path, over_green):
    result = cli("remove", over_green[0], tmp_path / "out.png", "--decontaminate", "maybe")
    assert result.returncode == 2
    assert "bad setting 'decontaminate'" in one_error_line(result)
    assert not (tmp_path / "out.png").exists()
