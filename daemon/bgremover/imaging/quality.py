"""Quality signals: what in a mask says a person should look at the cutout, each with a sentence a merchandiser reads.

A pure function of masks the job has already made: the model's mask at a
small size (its long side SIGNAL_SIDE pixels), before any edge treatment, and
where a second model ran, that model's mask at the same size. No settings, no
I/O. The thresholds were measured on the labelled set of bench/signals.py
(`bgremover bench --signals` prints each signal's precision and recall).

Each signal is a dict: its `code` (review/record.py lists them), the
`reason` sentence, the `value` measured and the `threshold` it crossed; the
frame signal adds the `sides`.
"""

from __future__ import annotations

import numpy as np

SIGNAL_SIDE = 320  # the masks are judged at this long side: the model's own resolution, cheap to measure
SUBJECT_LEVEL = 128  # a pixel at least half opaque belongs to the subject

NO_SUBJECT_SHARE = 0.003  # of the frame: below this, nothing was found
TINY_SUBJECT_SHARE = 0.02  # of the frame: below this (and above NO_SUBJECT_SHARE), the subject is tiny
CUT_SIDE_SHARE = 0.05  # of a side's length covered by the subject: it runs off that side
SEVERAL_SIMILAR_RATIO = 0.25  # a second part at least this share of the largest is a subject of its own
SEVERAL_MIN_SHARE = 0.004  # of the frame: smaller parts are specks, not subjects
UNCERTAIN_LOW, UNCERTAIN_HIGH = 32, 224  # alpha levels between these are uncertain
UNCERTAIN_SHARE = 0.30  # of the subject's pixels (alpha above UNCERTAIN_LOW): above this, too much is uncertain
DISAGREE_IOU = 0.85  # two models' subjects overlapping less than this disagree

SIDES = ("top", "bottom", "left", "right")


def signals(mask: np.ndarray, other: np.ndarray | None = None) -> list[dict]:
    """Every signal `mask` (2-D uint8) raises; with `other`, a second model's mask of the same shape, their agreement."""
    subject = mask >= SUBJECT_LEVEL
    share = float(subject.mean())
    found = []
    if share < NO_SUBJECT_SHARE:
        found.append(no_subject(share))
    else:
        found += [
            signal
            for signal in (tiny(share), cut_by_frame(subject), several(subject), uncertain(mask))
            if signal is not None
        ]
    if other is not None:
        found += [signal for signal in [disagreement(subject, other >= SUBJECT_LEVEL)] if signal is not None]
    return found


def no_subject(share: float) -> dict:
    return signal(
        "no_subject",
        "No subject was found: the cutout is empty or nearly so.",
        share,
        NO_SUBJECT_SHARE,
    )


def tiny(share: float) -> dict | None:
    if share >= TINY_SUBJECT_SHARE:
        return None
    return signal(
        "tiny_subject",
        f"The subject covers only {share:.1%} of the photo: it may be a speck, or the wrong thing.",
        share,
        TINY_SUBJECT_SHARE,
    )


def cut_by_frame(subject: np.ndarray) -> dict | None:
    """The sides along which the subject covers more than CUT_SIDE_SHARE of the photo's edge."""
    edges = {"top": subject[0], "bottom": subject[-1], "left": subject[:, 0], "right": subject[:, -1]}
    covered = {side: float(line.mean()) for side, line in edges.items()}
    sides = [side for side in SIDES if covered[side] > CUT_SIDE_SHARE]
    if not sides:
        return None
    named = sides[0] if len(sides) == 1 else ", ".join(sides[:-1]) + " and " + sides[-1]
    edge_word = "edge" if len(sides) == 1 else "edges"
    return {
        **signal(
            "cut_by_frame",
            f"The subject runs off the {named} {edge_word} of the photo: part of it may be missing.",
            max(covered[side] for side in sides),
            CUT_SIDE_SHARE,
        ),
        "sides": sides,
    }


def several(subject: np.ndarray) -> dict | None:
    """Two or more separate parts of similar size: several products, or a subject broken in pieces."""
    from scipy import ndimage  # imported with the job's first mask, as edges.py does

    labels, count = ndimage.label(subject, structure=np.ones((3, 3), dtype=bool))
    if count < 2:
        return None
    sizes = np.bincount(labels.ravel())[1:]
    big = sizes[sizes >= SEVERAL_MIN_SHARE * subject.size]
    if big.size < 2:
        return None
    similar = int((big >= SEVERAL_SIMILAR_RATIO * big.max()).sum())
    if similar < 2:
        return None
    return signal(
        "several_subjects",
        f"The photo seems to hold {similar} separate subjects: check that the cutout keeps the right ones.",
        float(np.sort(big)[-2] / big.max()),
        SEVERAL_SIMILAR_RATIO,
    )


def uncertain(mask: np.ndarray) -> dict | None:
    some = mask > UNCERTAIN_LOW
    if not some.any():
        return None
    share = float((some & (mask < UNCERTAIN_HIGH)).sum() / some.sum())
    if share <= UNCERTAIN_SHARE:
        return None
    return signal(
        "uncertain_edges",
        f"{share:.0%} of the cutout is half-transparent: the model was unsure where the subject ends "
        "(glass, hair, or a busy background).",
        share,
        UNCERTAIN_SHARE,
    )


def disagreement(subject: np.ndarray, other: np.ndarray) -> dict | None:
    union = float((subject | other).sum())
    overlap = float((subject & other).sum()) / union if union else 1.0
    if overlap >= DISAGREE_IOU:
        return None
    return signal(
        "models_disagree",
        f"Two models disagree about the subject's outline (they overlap by only {overlap:.0%}): check its edges.",
        overlap,
        DISAGREE_IOU,
    )


def agreement(mask: np.ndarray, other: np.ndarray) -> float:
    """How far two masks agree on the subject: their intersection over union (1.0 where both are empty)."""
    subject, theirs = mask >= SUBJECT_LEVEL, other >= SUBJECT_LEVEL
    union = float((subject | theirs).sum())
    return float((subject & theirs).sum()) / union if union else 1.0


def signal(code: str, reason: str, value: float, threshold: float) -> dict:
    return {"code": code, "reason": reason, "value": round(value, 4), "threshold": threshold}


def small_size(size: tuple[int, int]) -> tuple[int, int]:
    """(width, height) with the long side SIGNAL_SIDE (never enlarged), the aspect ratio kept."""
    width, height = size
    scale = min(1.0, SIGNAL_SIDE / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))
