"""The quality signals on drawn masks: each fires where it should, names what it saw, and says it in one sentence."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bgremover.bench import signals as labelled
from bgremover.imaging import quality
from bgremover.review import record
from tests.conftest import REPO

SIZE = (320, 240)


def mask_of(*discs: tuple[float, float, float], level: int = 255, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A mask of discs (centre x, centre y, radius, in pixels) at `level`."""
    image = Image.new("L", size, 0)
    draw = ImageDraw.Draw(image)
    for x, y, r in discs:
        draw.ellipse([x - r, y - r, x + r, y + r], fill=level)
    return np.asarray(image)


def codes(mask: np.ndarray, other: np.ndarray | None = None) -> list[str]:
    return [signal["code"] for signal in quality.signals(mask, other)]


def test_a_centred_product_raises_nothing():
    assert codes(mask_of((160, 120, 70))) == []


def test_an_empty_mask_says_no_subject_and_nothing_else():
    [signal] = quality.signals(np.zeros((240, 320), np.uint8))
    assert signal["code"] == "no_subject" and signal["value"] == 0.0
    assert signal["threshold"] == quality.NO_SUBJECT_SHARE


def test_a_tiny_subject_is_told_with_its_share():
    [signal] = quality.signals(mask_of((160, 120, 12)))
    assert signal["code"] == "tiny_subject" and "0.6% of the photo" in signal["reason"]


def test_a_subject_off_the_frame_names_each_side_it_runs_off():
    [signal] = quality.signals(mask_of((10, 230, 90)))
    assert signal["code"] == "cut_by_frame" and signal["sides"] == ["bottom", "left"]
    assert "bottom and left edges" in signal["reason"]
    [one] = quality.signals(mask_of((160, 0, 60)))
    assert one["sides"] == ["top"] and "top edge of the photo" in one["reason"]


def test_several_subjects_of_similar_size_but_not_a_product_and_a_speck():
    assert codes(mask_of((90, 120, 50), (230, 120, 45))) == ["several_subjects"]
    assert codes(mask_of((90, 120, 50), (200, 90, 40), (260, 180, 35)))[0] == "several_subjects"
    assert codes(mask_of((120, 120, 70), (270, 40, 6))) == [], "a speck beside the product is not a second subject"


def test_a_mask_mostly_half_transparent_is_uncertain():
    soft = mask_of((160, 120, 70), level=120)
    assert codes(np.maximum(soft, mask_of((160, 120, 30)))) == ["uncertain_edges"]


def test_two_models_that_disagree_on_the_outline_are_told_and_two_that_agree_are_not():
    mine = mask_of((160, 120, 60))
    assert codes(mine, mask_of((162, 121, 60))) == []
    [signal] = quality.signals(mine, mask_of((200, 120, 60)))
    assert signal["code"] == "models_disagree" and signal["value"] < quality.DISAGREE_IOU


@pytest.mark.parametrize(
    "mask",
    [
        np.zeros((240, 320), np.uint8),
        mask_of((160, 120, 12)),
        mask_of((10, 230, 90)),
        mask_of((90, 120, 50), (230, 120, 45)),
    ],
)
def test_every_reason_is_one_plain_sentence_with_a_known_code(mask):
    for signal in quality.signals(mask, mask_of((250, 30, 20))):
        assert signal["code"] in record.CODES
        reason = signal["reason"]
        assert reason[0].isupper() and reason.endswith(".") and "\n" not in reason
        assert ". " not in reason.rstrip("."), reason


def test_the_signals_are_measured_at_a_small_size_that_keeps_the_shape():
    assert quality.small_size((4000, 3000)) == (320, 240)
    assert quality.small_size((200, 100)) == (200, 100), "never enlarged"


def test_the_shipped_photos_labels_are_what_tests_reference_shows():
    for name, sides in labelled.PHOTO_CUTS.items():
        reference = np.asarray(Image.open(REPO / "tests" / "reference" / f"{name}.alpha.png").convert("L"))
        assert tuple(labelled.cut_sides(reference)) == sides, name


def test_each_group_of_the_labelled_set_is_labelled_as_its_name_says():
    cases = labelled.labelled_set()
    by_group: dict[str, list] = {}
    for case in cases:
        by_group.setdefault(case.group, []).append(case.expected)
    assert all(expected == {"no_subject"} for expected in by_group["no subject"])
    assert all(expected == set() for expected in by_group["one product"])
    assert all(expected == {"cut_by_frame"} for expected in by_group["cut by the frame"])
    assert all(expected == {"several_subjects"} for expected in by_group["2 products"] + by_group["3 products"])
    assert all(expected == {"tiny_subject"} for expected in by_group["tiny subject"])
    assert all(expected == {"uncertain_edges"} for expected in by_group["glass"])
    cut = [case for case in cases if case.group == "cut by the frame"]
    assert sorted({side for case in cut for side in labelled.cut_sides(case.truth)}) == sorted(quality.SIDES)
