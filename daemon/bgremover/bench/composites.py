"""`bgremover bench --edges`: edge quality against a known truth, on composites the project draws.

Real ground-truth mattes cannot be downloaded here, so this uses the
compositing method of matting benchmarks: a foreground whose alpha α and
colour F are known exactly is laid over real backgrounds, I = αF + (1 − α)B,
the pipeline cuts I out, and its alpha and colours are compared with α and F.

The foregrounds are drawn in code, at four times their size and then
box-averaged, so their partial alpha is the true coverage of each pixel: a
furry ball with strands of hair all round, and a head and shoulders with loose
hair on top and a defocused shoulder. The backgrounds are the bench's three
CC0 photos, a dark and a light flat colour, and a green wall.

Drawn colours are kinder than a photo's, so real photos are measured beside
them (references()): the coffee photo against a mask of its cup, saucer and
spoon fitted to the photo's edges and checked by eye (photos/masks/coffee.png,
see photos/LICENSE.md); that cup cut out by that mask over the other
backgrounds, where the mask is the exact truth; and the drawn fur ball's
strands with the cat photo's real fur as their colour. A hand-checked mask is
a binary outline, right to a pixel or two (in the saucer's shadow, a few), not
a matte: it is a weaker truth than the drawn ones, and the only one here that
a model did not help make. (tests/reference/ holds u2netp's own cutouts of the
photos; judging a model's edges against them would be circular.)

Measured, per composite, for each `edges` mode and with decontamination off
and on (alpha in levels of 255, colours in levels of 255 per channel):
- alpha MAE in the band (the pixels within edges.band_width of the true
  contour, and every pixel the truth holds partly) and over the whole image;
- the gradient error (Rhemann et al.): the mean squared difference of the
  Gaussian (σ = 1.4) gradient magnitudes of the two alphas, 0..1 alpha, ×1000;
- the colour error over white: the cutout composited over white against the
  truth composited over white, mean absolute difference in the band.
"""

from __future__ import annotations

import math
import statistics

import numpy as np
from PIL import Image

from bgremover.imaging import edges, foreground, matting
from bgremover.models.photoset import (  # noqa: F401 - the drawn truth, part of this module's interface
    BACKGROUNDS,
    FLAT,
    GREEN,
    PHOTOS,
    SIZE,
    SUBJECTS,
    SUPERSAMPLE,
    background,
    composite,
    composites,
    subject,
)

# The real-photo references, each subject with the photo it comes from. The
# coffee photo itself is measured at its own size; the composites at SIZE, over
# every background but the photo the subject came from, and reported per subject.
REAL_SUBJECTS = {"coffee cup": "coffee", "cat fur": "chelsea"}
REFERENCE_GROUPS = ("real photo", *(f"{name} composites" for name in REAL_SUBJECTS))
WHITE = np.float32(255)
GRADIENT_SIGMA = 1.4


def photo(name: str) -> np.ndarray:
    """One of the shipped photos (H×W×3 uint8) at its own size."""
    return np.asarray(Image.open(PHOTOS / f"{name}.jpg").convert("RGB"))


def hand_mask(name: str) -> np.ndarray:
    """The hand-checked mask of a shipped photo (H×W uint8; photos/LICENSE.md says how it was made)."""
    return np.asarray(Image.open(PHOTOS / "masks" / f"{name}.png").convert("L"))


def _covering(picture: np.ndarray, size: tuple[int, int], resample: Image.Resampling) -> np.ndarray:
    """`picture` scaled to cover `size` and cropped to it about the centre, as background() does."""
    image = Image.fromarray(picture)
    scale = max(size[0] / image.width, size[1] / image.height)
    scaled = image.resize((math.ceil(image.width * scale), math.ceil(image.height * scale)), resample)
    left, top = (scaled.width - size[0]) // 2, (scaled.height - size[1]) // 2
    return np.asarray(scaled.crop((left, top, left + size[0], top + size[1])))


def real_subject(name: str, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A subject from a real photo: its alpha (H×W uint8) and colour F (H×W×3 uint8).

    "coffee cup": the coffee photo cut by its hand-checked mask, both scaled
    alike. "cat fur": the drawn fur ball's alpha, coloured by the cat photo.
    """
    if name not in REAL_SUBJECTS:
        raise ValueError(f"unknown subject {name!r} (known: {', '.join(REAL_SUBJECTS)})")
    colour = _covering(photo(REAL_SUBJECTS[name]), size, Image.Resampling.LANCZOS)
    if name == "coffee cup":
        return _covering(hand_mask("coffee"), size, Image.Resampling.BILINEAR), colour
    return subject("fur ball", size)[0], colour


def references(size: tuple[int, int] = SIZE):
    """(group, name, true alpha, I) for the real photo and every real-photo composite."""
    yield REFERENCE_GROUPS[0], "coffee photo", hand_mask("coffee"), photo("coffee")
    for subject_name, source in REAL_SUBJECTS.items():
        alpha, colour = real_subject(subject_name, size)
        for back_name in BACKGROUNDS:
            if back_name != source:
                image = composite(alpha, colour, background(back_name, size))
                yield f"{subject_name} composites", f"{subject_name} over {back_name}", alpha, image


# ---------------------------------------------------------------- the measures


def truth_band(alpha: np.ndarray) -> np.ndarray:
    """Where edges are judged: within edges.band_width of the true contour, and wherever the truth is partial."""
    return edges.band(alpha, edges.band_width(alpha.shape)) | ((alpha > 0) & (alpha < 255))


def over_white(alpha: np.ndarray, colour: np.ndarray) -> np.ndarray:
    a = alpha.astype(np.float32)[..., None] / 255
    return a * colour.astype(np.float32) + (1 - a) * WHITE


def gradient_error(found: np.ndarray, truth: np.ndarray, where: np.ndarray) -> float:
    from scipy import ndimage

    magnitudes = [
        ndimage.gaussian_gradient_magnitude(a.astype(np.float32) / 255, GRADIENT_SIGMA) for a in (found, truth)
    ]
    return float(((magnitudes[0] - magnitudes[1])[where] ** 2).mean() * 1000)


def measures(
    alpha: np.ndarray, colour: np.ndarray, truth_alpha: np.ndarray, truth_colour: np.ndarray, band: np.ndarray
) -> dict:
    """The alpha and colour errors of one cutout (alpha, colour) against the truth."""
    error = np.abs(alpha.astype(np.int16) - truth_alpha.astype(np.int16))
    every = np.ones_like(band)
    colour_error = np.abs(over_white(alpha, colour) - over_white(truth_alpha, truth_colour)).mean(axis=2)
    return {
        "band_mae": float(error[band].mean()),
        "mae": float(error.mean()),
        "band_gradient": gradient_error(alpha, truth_alpha, band),
        "gradient": gradient_error(alpha, truth_alpha, every),
        "white_error": float(colour_error[band].mean()),
    }


def raw_mask(spec, session, image: np.ndarray) -> np.ndarray:
    """The model's mask of `image` (H×W uint8), at the image's size, before any edges treatment."""
    tensor = matting.preprocess(Image.fromarray(image), spec)
    return np.asarray(matting.postprocess(matting.infer(session, tensor, spec), image.shape[1::-1], spec))


def measure_model(spec, session, size: tuple[int, int] = SIZE) -> list[dict]:
    """Every composite through the model, each edges mode, decontamination off and on: one row each."""
    rows = []
    for name, truth_alpha, truth_colour, image in composites(size):
        raw = raw_mask(spec, session, image)
        band = truth_band(truth_alpha)
        for mode in edges.MODES:
            alpha = edges.apply(mode, raw, image)
            for decontaminated in (False, True):
                colour = foreground.decontaminate(image, alpha) if decontaminated else image
                rows.append(
                    {
                        "composite": name,
                        "edges": mode,
                        "decontaminate": decontaminated,
                        **measures(alpha, colour, truth_alpha, truth_colour, band),
                    }
                )
    return rows


def summary(rows: list[dict]) -> dict:
    """Means per (edges, decontaminate), and the shares of composites where refine and decontamination helped."""

    def pick(mode: str, decontaminated: bool) -> list[dict]:
        return [row for row in rows if row["edges"] == mode and row["decontaminate"] == decontaminated]

    found = {}
    for mode in edges.MODES:
        for decontaminated in (False, True):
            chosen = pick(mode, decontaminated)
            found[f"{mode}, decontaminate {'on' if decontaminated else 'off'}"] = {
                key: round(statistics.fmean(row[key] for row in chosen), 3)
                for key in ("band_mae", "mae", "band_gradient", "gradient", "white_error")
            }
    raw, refined = pick("raw", False), pick("refine", False)
    found["refine lowers band MAE, % of composites"] = round(
        100 * statistics.fmean(r["band_mae"] < b["band_mae"] for r, b in zip(refined, raw)), 1
    )
    for mode in edges.MODES:
        helped = [on["white_error"] < off["white_error"] for off, on in zip(pick(mode, False), pick(mode, True))]
        found[f"decontaminate lowers colour error over white, % of composites, {mode}"] = round(
            100 * statistics.fmean(helped), 1
        )
    found["composites"] = len(raw)
    return found


def measure_references(spec, session, size: tuple[int, int] = SIZE) -> list[dict]:
    """The band alpha MAE of each edges mode on every real-photo reference: one row per reference and mode."""
    rows = []
    for group, name, truth_alpha, image in references(size):
        raw = raw_mask(spec, session, image)
        band = truth_band(truth_alpha)
        for mode in edges.MODES:
            error = np.abs(edges.apply(mode, raw, image).astype(np.int16) - truth_alpha.astype(np.int16))
            rows.append({"group": group, "reference": name, "edges": mode, "band_mae": float(error[band].mean())})
    return rows


def reference_summary(rows: list[dict]) -> dict:
    """Per group of references: the band MAE of raw, clean and refine (means), and where refine beat raw."""
    found = {}
    for group in REFERENCE_GROUPS:
        chosen = [row for row in rows if row["group"] == group]
        by_mode = {mode: [row["band_mae"] for row in chosen if row["edges"] == mode] for mode in edges.MODES}
        found[group] = {f"band MAE, {mode}": round(statistics.fmean(by_mode[mode]), 2) for mode in edges.MODES}
        wins = [refined < raw for raw, refined in zip(by_mode["raw"], by_mode["refine"])]
        found[group]["refine lowers band MAE, % of references"] = round(100 * statistics.fmean(wins), 1)
        found[group]["references"] = len(wins)
    return found
