"""`bgremover bench --signals`: each quality signal's precision and recall on the project's labelled set.

The set is drawn in code, so it ships with the project and needs no download:
products (a bottle, a box, a mug, a ball, a shoe) drawn at four times their
size and box-averaged, so each pixel's alpha is its true coverage, and laid
over flat colours, a green wall and the bench's photos, I = αF + (1 − α)B;
the furry ball and the portrait of bench/composites.py (hair and fur); drawn
glasses (a see-through body, an opaque rim); photos with nothing on them; and
the three shipped photos. Each case is placed to be one of the groups a
catalog meets: no subject, one product on a plain background, a product cut
by each edge of the frame, two or three products, a tiny product, hair and
fur, glass.

What each case should raise is read from its truth, by rules fixed here, not
chosen case by case: no subject under 0.3 % of the frame; tiny under 2 %;
cut on each side its subject covers more than 2 % of; several subjects when
two separate parts are within a quarter of each other's size; uncertain
edges when at least a fifth of the subject's pixels are partly transparent
(glass, fur); and, where a second model runs, `models_disagree` should fire
when the first model's mask overlaps the truth by less than 85 %. The three
photos' truths are their subjects as tests/reference shows them: the
astronaut runs off the bottom, left and right, the cat off the top, bottom and left,
the coffee cup off none (a unit test checks these against those files).

With a second model (`--review-model NAME`, or the review_model setting) the
bench also runs the escalation the daemon runs (review_escalate) and reports
its quality against the truth (IoU, mean over the drawn cases) and its cost
(ms per image), beside the first model alone and the second model alone.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from bgremover.bench import composites
from bgremover.imaging import matting, quality
from bgremover.models import photoset
from bgremover.review import record

SIZE = (480, 360)
SUPERSAMPLE = 4
PHOTOS = Path(__file__).parent / "photos"
# The shipped photos' subjects, as tests/reference shows them: the sides each runs off.
PHOTO_CUTS = {"astronaut": ("bottom", "left", "right"), "chelsea": ("top", "bottom", "left"), "coffee": ()}
TRUTH_CUT_SHARE = 0.02  # a side the true subject covers more of than this is a side it runs off
TRUTH_UNCERTAIN_SHARE = 0.2  # of the true subject's pixels partly transparent: glass, fur, hair
TRUTH_WRONG_IOU = 0.85  # the first model's mask overlapping the truth less than this is wrong
PLAIN = {"white": (250, 250, 250), "light": (214, 218, 222), "beige": (216, 200, 176), "dark": (38, 34, 40)}
PRODUCTS = ("bottle", "box", "mug", "ball", "shoe")


@dataclass
class Case:
    name: str
    group: str
    image: Image.Image
    truth: np.ndarray | None  # alpha, H×W uint8; None for a photo (its labels are PHOTO_CUTS)
    expected: set[str] = field(default_factory=set)


# ---------------------------------------------------------------- drawing


def product(kind: str, box: tuple[float, float, float, float], size: tuple[int, int] = SIZE) -> np.ndarray:
    """The coverage (H×W uint8) of a product drawn into `box` (left, top, right, bottom, in 0..1 of the frame)."""
    big = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
    cover = Image.new("L", big, 0)
    draw = ImageDraw.Draw(cover)
    left, top, right, bottom = box[0] * big[0], box[1] * big[1], box[2] * big[0], box[3] * big[1]
    width, height = right - left, bottom - top
    if kind == "bottle":
        draw.rounded_rectangle([left, top + height * 0.35, right, bottom], radius=width * 0.2, fill=255)
        draw.rectangle([left + width * 0.35, top, right - width * 0.35, top + height * 0.4], fill=255)
    elif kind == "box":
        draw.polygon([(left, top + height * 0.15), (right - width * 0.15, top), (right, bottom), (left, bottom)], 255)
    elif kind == "mug":
        draw.rounded_rectangle([left, top, right - width * 0.25, bottom], radius=width * 0.08, fill=255)
        draw.ellipse([right - width * 0.4, top + height * 0.2, right, bottom - height * 0.2], outline=255,
                     width=max(4, int(width * 0.08)))  # fmt: skip
    elif kind == "ball":
        draw.ellipse([left, top, right, bottom], fill=255)
    else:  # a shoe: a sole and an upper
        draw.rounded_rectangle([left, bottom - height * 0.25, right, bottom], radius=height * 0.1, fill=255)
        draw.polygon([(left, bottom - height * 0.2), (left + width * 0.15, top), (left + width * 0.5, top + height * 0.1),
                      (right, bottom - height * 0.25)], 255)  # fmt: skip
    return np.asarray(cover.reduce(SUPERSAMPLE))


def glass(box: tuple[float, float, float, float], size: tuple[int, int] = SIZE) -> np.ndarray:
    """A drinking glass: a see-through body (alpha about 0.3) inside an opaque rim and base."""
    big = (size[0] * SUPERSAMPLE, size[1] * SUPERSAMPLE)
    cover = Image.new("L", big, 0)
    draw = ImageDraw.Draw(cover)
    left, top, right, bottom = box[0] * big[0], box[1] * big[1], box[2] * big[0], box[3] * big[1]
    rim = max(6, int((right - left) * 0.05))
    draw.polygon(
        [(left, top), (right, top), (right - (right - left) * 0.1, bottom), (left + (right - left) * 0.1, bottom)], 80
    )
    draw.line([(left, top), (left + (right - left) * 0.1, bottom)], fill=255, width=rim)
    draw.line([(right, top), (right - (right - left) * 0.1, bottom)], fill=255, width=rim)
    draw.line([(left, top), (right, top)], fill=255, width=rim)
    draw.rectangle([left + (right - left) * 0.1, bottom - rim * 3, right - (right - left) * 0.1, bottom], fill=230)
    return np.asarray(cover.reduce(SUPERSAMPLE))


def colour_of(kind: str, seed: int, size: tuple[int, int] = SIZE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    palettes = {"bottle": ((20, 90, 40), (90, 200, 120)), "box": ((150, 40, 30), (240, 120, 90)),
                "mug": ((30, 60, 150), (120, 160, 240)), "ball": ((200, 150, 20), (250, 230, 120)),
                "shoe": ((40, 30, 30), (150, 110, 90)), "glass": ((150, 170, 180), (230, 240, 245))}  # fmt: skip
    dark, light = palettes[kind]
    return photoset._textured(size, rng, dark, light)


def composite(alpha: np.ndarray, colour: np.ndarray, background: np.ndarray) -> Image.Image:
    a = alpha.astype(np.float32)[..., None] / 255
    image = a * colour.astype(np.float32) + (1 - a) * background.astype(np.float32)
    return Image.fromarray(np.clip(np.rint(image), 0, 255).astype(np.uint8))


def plain(name: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    return np.broadcast_to(np.asarray(PLAIN[name], np.uint8), (size[1], size[0], 3)).copy()


def backdrop(name: str) -> np.ndarray:
    return plain(name) if name in PLAIN else composites.background(name, SIZE)


# ---------------------------------------------------------------- the labelled set


def labelled_set() -> list[Case]:
    cases = list(empty_cases()) + list(product_cases()) + list(soft_cases()) + list(photo_cases())
    for case in cases:
        if case.truth is not None:
            case.expected = expected_of(case.truth)
    return cases


def empty_cases() -> Iterator[Case]:
    for name in PLAIN:
        yield Case(f"plain {name}", "no subject", Image.fromarray(plain(name)), np.zeros(SIZE[::-1], np.uint8))
    ramp = np.linspace(60, 230, SIZE[0], dtype=np.float32)[None, :, None] * np.ones((SIZE[1], 1, 3), np.float32)
    yield Case("gradient", "no subject", Image.fromarray(ramp.astype(np.uint8)), np.zeros(SIZE[::-1], np.uint8))
    yield Case("green wall", "no subject", Image.fromarray(backdrop("green wall")), np.zeros(SIZE[::-1], np.uint8))
    rng = np.random.default_rng(3)
    grain = np.clip(rng.normal(170, 18, (SIZE[1], SIZE[0], 1)), 0, 255) * np.ones((1, 1, 3))
    yield Case("paper grain", "no subject", Image.fromarray(grain.astype(np.uint8)), np.zeros(SIZE[::-1], np.uint8))


ONE = {"bottle": (0.38, 0.12, 0.62, 0.88), "box": (0.3, 0.22, 0.7, 0.82), "mug": (0.3, 0.25, 0.7, 0.78),
       "ball": (0.33, 0.22, 0.67, 0.78), "shoe": (0.2, 0.35, 0.8, 0.75)}  # fmt: skip
CUTS = {"top": (0.35, -0.25, 0.65, 0.6), "bottom": (0.3, 0.4, 0.7, 1.3), "left": (-0.2, 0.25, 0.4, 0.75),
        "right": (0.6, 0.25, 1.25, 0.75)}  # fmt: skip


def product_cases() -> Iterator[Case]:
    for index, (kind, box) in enumerate(ONE.items()):
        for background in ("white", "light", "dark", "green wall"):
            yield single(f"{kind} on {background}", "one product", kind, box, background, index)
    for index, (side, box) in enumerate(CUTS.items()):
        for kind in ("box", "bottle"):
            yield single(f"{kind} cut at the {side}", "cut by the frame", kind, box, "light", index)
    for count, backgrounds in ((2, ("white", "dark", "green wall")), (3, ("white", "light", "coffee"))):
        for background in backgrounds:
            yield several(count, background)
    for index, kind in enumerate(("ball", "box", "bottle")):
        box = (0.46, 0.45, 0.46 + 0.07, 0.45 + 0.09)
        yield single(f"tiny {kind}", "tiny subject", kind, box, ("white", "light", "green wall")[index], index)


def single(name: str, group: str, kind: str, box: tuple, background: str, seed: int) -> Case:
    alpha = product(kind, box)
    return Case(name, group, composite(alpha, colour_of(kind, seed), backdrop(background)), alpha)


def several(count: int, background: str) -> Case:
    kinds = ("mug", "bottle", "box")[:count]
    width = 0.8 / count
    alpha = np.zeros(SIZE[::-1], np.uint8)
    colour = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
    for index, kind in enumerate(kinds):
        left = 0.1 + index * width + width * 0.12
        part = product(kind, (left, 0.3, left + width * 0.76, 0.75))
        colour = np.where(part[..., None] > alpha[..., None], colour_of(kind, index), colour)
        alpha = np.maximum(alpha, part)
    image = composite(alpha, colour, backdrop(background))
    return Case(f"{count} products on {background}", f"{count} products", image, alpha)


def soft_cases() -> Iterator[Case]:
    for subject in composites.SUBJECTS:
        alpha, colour = composites.subject(subject, SIZE)
        for background in ("flat light", "green wall"):
            image = composite(alpha, colour, composites.background(background, SIZE))
            yield Case(f"{subject} on {background}", "hair and fur", image, alpha)
    for index, background in enumerate(("white", "dark", "green wall")):
        alpha = glass((0.36, 0.15, 0.64, 0.85))
        image = composite(alpha, colour_of("glass", index), backdrop(background))
        yield Case(f"glass on {background}", "glass", image, alpha)


def photo_cases() -> Iterator[Case]:
    for name, sides in PHOTO_CUTS.items():
        image = Image.open(PHOTOS / f"{name}.jpg").convert("RGB")
        yield Case(f"photo {name}", "shipped photo", image, None, {"cut_by_frame"} if sides else set())


def expected_of(truth: np.ndarray) -> set[str]:
    """What a case should raise, by the rules of the module's docstring, from its true alpha."""
    subject = truth >= quality.SUBJECT_LEVEL
    share = float(subject.mean())
    if share < quality.NO_SUBJECT_SHARE:
        return {"no_subject"}
    expected = set()
    if share < quality.TINY_SUBJECT_SHARE:
        expected.add("tiny_subject")
    if cut_sides(truth):
        expected.add("cut_by_frame")
    labels, count = ndimage.label(subject, structure=np.ones((3, 3), dtype=bool))
    sizes = np.sort(np.bincount(labels.ravel())[1:])[::-1]
    if count >= 2 and sizes[1] >= quality.SEVERAL_SIMILAR_RATIO * sizes[0]:
        expected.add("several_subjects")
    some = truth > quality.UNCERTAIN_LOW
    if ((some & (truth < quality.UNCERTAIN_HIGH)).sum() / max(1, some.sum())) >= TRUTH_UNCERTAIN_SHARE:
        expected.add("uncertain_edges")
    return expected


def cut_sides(alpha: np.ndarray) -> list[str]:
    """The sides of the frame a true alpha's subject runs off."""
    subject = alpha >= quality.SUBJECT_LEVEL
    edges = {"top": subject[0], "bottom": subject[-1], "left": subject[:, 0], "right": subject[:, -1]}
    return [side for side in quality.SIDES if edges[side].mean() > TRUTH_CUT_SHARE]


# ---------------------------------------------------------------- measuring


def iou(mask: np.ndarray, truth: np.ndarray) -> float:
    a, b = mask >= quality.SUBJECT_LEVEL, truth >= quality.SUBJECT_LEVEL
    union = float((a | b).sum())
    return float((a & b).sum()) / union if union else 1.0


def run_case(case: Case, first: tuple, second: tuple | None) -> dict:
    """The signals and masks of one case: the first model alone, the second alone, and escalated."""
    image = case.image
    started = time.perf_counter()
    mask = matting.model_mask(image, *first)
    small = matting.signal_mask(mask)
    signals = quality.signals(small)
    first_ms = (time.perf_counter() - started) * 1000
    row = {"case": case, "first": signals, "first_ms": first_ms, "first_mask": np.asarray(mask)}
    if second is None:
        return row
    started = time.perf_counter()
    other = matting.model_mask(image, *second)
    second_ms = (time.perf_counter() - started) * 1000
    theirs = quality.signals(matting.signal_mask(other))
    compared = quality.signals(small, matting.signal_mask(other))
    worth = quality.worth_escalating(signals)  # as the job decides (matting.judged_mask)
    escalate = worth and len(theirs) <= len(signals)
    row.update(
        second=theirs, second_ms=second_ms, second_mask=np.asarray(other), compared=compared,
        escalated_mask=np.asarray(other if escalate else mask), escalated_ms=first_ms + (second_ms if worth else 0.0), worth=worth,
    )  # fmt: skip
    return row


def precision_recall(rows: list[dict], key: str, codes: tuple[str, ...]) -> dict:
    table = {}
    for code in codes:
        raised = [code in {s["code"] for s in row[key]} for row in rows]
        wanted = [code in row["case"].expected for row in rows]
        hits = sum(r and w for r, w in zip(raised, wanted, strict=True))
        table[code] = {
            "labelled": sum(wanted),
            "raised": sum(raised),
            "precision": round(hits / sum(raised), 3) if sum(raised) else None,
            "recall": round(hits / sum(wanted), 3) if sum(wanted) else None,
        }
    return table


def measure(first: tuple, second: tuple | None = None) -> dict:
    """The bench's document: precision and recall per signal, the cases missed, and with `second` escalation's figures."""
    cases = labelled_set()
    rows = [run_case(case, first, second) for case in cases]
    for row in rows:
        if second is not None and row["case"].truth is not None:
            row["case"].expected |= (
                {"models_disagree"} if iou(row["first_mask"], row["case"].truth) < TRUTH_WRONG_IOU else set()
            )
    codes = tuple(code for code in record.CODES if code != "models_disagree")
    document = {
        "labelled_set": {group: sum(1 for c in cases if c.group == group) for group in dict.fromkeys(c.group for c in cases)},
        "signals": precision_recall(rows, "first", codes),
        "checks": {
            "cut_sides_right": cut_sides_right(rows),
            "good_photos_flagged": [
                row["case"].name for row in rows
                if row["case"].group in ("one product", "shipped photo") and not row["case"].expected and row["first"]
            ],
        },
        "wrong": mistakes(rows, "first"),
    }  # fmt: skip
    if second is not None:
        document["disagreement"] = precision_recall(rows, "compared", ("models_disagree",))
        document["escalation"] = escalation(rows)
    return document


def cut_sides_right(rows: list[dict]) -> str:
    """Of the cases cut_by_frame rightly flagged, how many named exactly the sides the truth runs off."""
    right = total = 0
    for row in rows:
        raised = [s for s in row["first"] if s["code"] == "cut_by_frame"]
        if raised and "cut_by_frame" in row["case"].expected:
            total += 1
            case = row["case"]
            truth = cut_sides(case.truth) if case.truth is not None else list(PHOTO_CUTS[case.name.split()[-1]])
            right += raised[0]["sides"] == truth
    return f"{right} of {total}"


def mistakes(rows: list[dict], key: str) -> dict:
    """Each case whose signals differ from what it should raise: raised / expected."""
    wrong = {}
    for row in rows:
        raised = {s["code"] for s in row[key]}
        expected = row["case"].expected - {"models_disagree"}  # the first model alone cannot raise it
        if raised != expected:
            wrong[row["case"].name] = f"raised {sorted(raised) or '-'}, expected {sorted(expected) or '-'}"
    return wrong


def escalation(rows: list[dict]) -> dict:
    drawn = [row for row in rows if row["case"].truth is not None and "no_subject" not in row["case"].expected]
    return {
        "cases_with_truth": len(drawn),
        "escalated": sum(1 for row in rows if row["worth"]),
        "iou_first": round(statistics.mean(iou(r["first_mask"], r["case"].truth) for r in drawn), 4),
        "iou_second": round(statistics.mean(iou(r["second_mask"], r["case"].truth) for r in drawn), 4),
        "iou_escalated": round(statistics.mean(iou(r["escalated_mask"], r["case"].truth) for r in drawn), 4),
        "ms_per_image_first": round(statistics.mean(r["first_ms"] for r in rows), 1),
        "ms_per_image_second": round(statistics.mean(r["second_ms"] for r in rows), 1),
        "ms_per_image_escalated": round(statistics.mean(r["escalated_ms"] for r in rows), 1),
    }
