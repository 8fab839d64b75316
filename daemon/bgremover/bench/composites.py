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

WHITE = np.float32(255)
GRADIENT_SIGMA = 1.4


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


def measure_model(spec, session, size: tuple[int, int] = SIZE) -> list[dict]:
    """Every composite through the model, each edges mode, decontamination off and on: one row each."""
    rows = []
    for name, truth_alpha, truth_colour, image in composites(size):
        raw = np.asarray(
            matting.postprocess(
                matting.infer(session, matting.preprocess(Image.fromarray(image), spec), spec), image.shape[1::-1], spec
            )
        )
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
