"""The agreement check's arithmetic on drawn masks: what counts as a path agreeing with fp32 onnxruntime.

IoU compares the subjects of two masks. On a photo where neither mask holds a
subject (the model found nothing there, and its alpha hovers below the subject
line), a few pixels crossing alpha 128 by a level or two would otherwise make
a lossless path look like a broken one; a path that finds a subject fp32 did
not, or loses one fp32 found, must still fail.
"""

from __future__ import annotations

import numpy as np

from bgremover.tuning import agreement

HEIGHT, WIDTH = 600, 800


def blank(level: int = 0) -> np.ndarray:
    return np.full((HEIGHT, WIDTH), level, np.uint8)


def with_subject(share: float, level: int = 255, base: np.ndarray | None = None) -> np.ndarray:
    """A mask whose top rows, `share` of the frame, hold alpha `level`."""
    mask = blank() if base is None else base.copy()
    mask[: round(HEIGHT * share)] = level
    return mask


def hesitant() -> np.ndarray:
    """What a model that sees no subject gives: a faint veil (alpha 100) over a fifth of the frame, 800 pixels
    just over the subject line and 150 just under it."""
    mask = with_subject(0.2, level=100)
    mask[:2, :400] = 131
    mask[10, :150] = 127
    return mask


def nudged(mask: np.ndarray) -> np.ndarray:
    """The same mask as a lower precision computes it: 200 of the pixels just over the line fall 4 levels, and
    the 150 just under it rise 4."""
    moved = mask.copy()
    moved[0, :200] = 127
    moved[10, :150] = 131
    return moved


def record_of(found: list[np.ndarray], reference: list[np.ndarray]) -> dict:
    return agreement.compare(found, reference, ms=100.0, setup=10.0)


def test_the_same_masks_agree_completely():
    masks = [with_subject(0.3), hesitant(), blank()]
    record = record_of(masks, masks)
    assert record["mean_iou"] == record["lowest_iou"] == 1.0
    assert record["allowed"] is True


def test_a_few_pixels_crossing_the_line_where_neither_mask_has_a_subject_do_not_refuse_a_path():
    reference = [with_subject(0.3), hesitant(), with_subject(0.25)]
    found = [with_subject(0.3), nudged(hesitant()), with_subject(0.25)]
    assert agreement.iou(found[1], reference[1]) < 0.7  # what the photo alone would have said
    record = record_of(found, reference)
    assert record["photos_without_subject"] == 1
    assert record["lowest_iou"] == 1.0
    assert record["alpha_mae"] < 0.1
    assert record["allowed"] is True


def test_a_path_that_finds_a_subject_fp32_did_not_is_refused():
    reference = [with_subject(0.3), hesitant()]
    found = [with_subject(0.3), with_subject(0.05, base=hesitant())]
    record = record_of(found, reference)
    assert record["photos_without_subject"] == 0
    assert record["lowest_iou"] < 0.05
    assert record["allowed"] is False


def test_a_path_that_loses_the_subject_is_refused():
    reference = [with_subject(0.3), with_subject(0.2)]
    found = [with_subject(0.3), hesitant()]
    record = record_of(found, reference)
    assert record["lowest_iou"] < 0.05
    assert record["allowed"] is False


def test_a_small_real_subject_still_counts():
    """One per cent of the frame is a ring on a wide shot, not noise: half of it lost refuses the path."""
    reference = [with_subject(0.3), with_subject(0.01)]
    found = [with_subject(0.3), with_subject(0.005)]
    record = record_of(found, reference)
    assert record["photos_without_subject"] == 0
    assert record["lowest_iou"] == 0.5
    assert record["allowed"] is False


def test_photos_without_a_subject_anywhere_agree_and_say_so():
    reference = [blank(), hesitant()]
    record = record_of([blank(), nudged(hesitant())], reference)
    assert record["photos_without_subject"] == 2
    assert record["mean_iou"] == record["lowest_iou"] == 1.0
