"""Colour decontamination: the subject's own colour where the alpha is partial.

A pixel of partial alpha holds a mix, I = αF + (1 − α)B, of the subject's
colour F and the old background's B. A cutout that keeps I puts a rim of the
old background around the subject on any new one: dark or green over white.
`decontaminate` estimates F with the blur-fusion estimator of Forte and Pitié
("Approximate fast foreground colour estimation", ICIP 2021): box blurs of
F·α and B·(1 − α) give local mean colours of subject and background, and F is
the mean subject colour corrected by what the equation leaves over,
F = F̄ + α(I − αF̄ − (1 − α)B̄). Two passes: a wide one for the means, then a
narrow one on the first pass's F and B̄.

Only pixels with 0 < α < 255 change (those at least NEAR levels from either
end): opaque pixels keep their colour byte for byte, and transparent ones too. Both passes run on
reduced copies (the means vary only on the scale of their boxes), and only
the last step, the equation at each partial pixel, runs at full size, so the
cost grows with the rim, not with the photo.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

# The wide pass averages over a box this share of the longer side: about the
# 90 px Forte and Pitié use at the size of their benchmark's photos.
WIDE_SHARE = 0.045
# The narrow pass's box, in pixels at full size (their second pass uses 6).
NARROW_BOX = 7
# How far (0..1) the alpha the pixel's colour implies may be from its alpha
# before its colour is kept. On the project's composites (bench/composites.py)
# 0.5 lowered the colour error over white on more of them than no limit, 0.25 or 0.1.
TRUST = 0.5
# Pixels within this many levels of transparent or opaque keep their colour.
# Over white, the estimate could move such a pixel by at most 6 % of its
# colour's distance from white, yet u2netp's soft masks hold more of them
# than of all other partial pixels together, and each costs the same to estimate.
NEAR = 16
# Both passes run on a copy reduced so its longer side is at most this many
# pixels (the narrow box at least three of them). On the project's composites,
# 800 px long, the narrow pass at full size and on this copy won and lost on
# the same composites, the mean colour error within 0.04 levels. At 2000 px a
# reduced pixel spans five, and the narrow box three of them, 15 px.
REDUCED_SIDE = 400
# Partial pixels estimated at once: about 12 MB for each of the float arrays
# of the last step, so a 40-megapixel photo with a wide soft rim never holds them all.
CHUNK = 1 << 20


def decontaminate(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The colours (H×W×3 uint8) with F estimated where NEAR <= alpha <= 255 - NEAR; elsewhere `rgb` exactly."""
    _check(rgb, alpha)
    result = rgb.copy()
    for where, colours in estimates(rgb, alpha):
        result[where] = colours
    return result


def estimates(rgb: np.ndarray, alpha: np.ndarray):
    """((rows, cols), F there as n×3 uint8) for the pixels that decontaminate changes, a chunk at a time.

    `rgb` may be a view (the colour channels of an RGBA array), so a caller
    can write the colours back in place without copying the photo twice.
    """
    # NEAR <= alpha <= 255 - NEAR in one pass: below NEAR the uint8 difference wraps round to above the bound.
    rows, cols = np.nonzero(alpha - np.uint8(NEAR) <= np.uint8(255 - 2 * NEAR))
    if not rows.size:
        return
    from scipy import ndimage

    means, scale = _means(rgb, alpha, ndimage)
    for start in range(0, rows.size, CHUNK):
        where = rows[start : start + CHUNK], cols[start : start + CHUNK]
        yield where, _estimated(rgb[where], alpha[where], means, scale, where)


def _check(rgb: np.ndarray, alpha: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"the colours must be an H×W×3 uint8 array, not {rgb.shape} {rgb.dtype}")
    if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
        raise ValueError(f"the alpha must be a uint8 array of {rgb.shape[:2]}, not {alpha.shape} {alpha.dtype}")


def _reduced(rgb: np.ndarray, alpha: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Colours (h×w×3) and alpha (h×w×1), 0..1 float32, box-averaged so the longer side is at most `side`."""
    height, width = alpha.shape
    scale = min(1.0, side / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    colours = (
        np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.Resampling.BOX), dtype=np.float32)
        / 255
    )
    coverage = np.asarray(Image.fromarray(alpha).resize(size, Image.Resampling.BOX), dtype=np.float32) / 255
    return colours, coverage[..., np.newaxis], size[0] / width


def _means(rgb: np.ndarray, alpha: np.ndarray, ndimage) -> tuple[np.ndarray, float]:
    """The second pass's local means on a reduced copy, and its scale.

    Per reduced pixel (h×w×7): the mean background colour B̄, the step
    F̄ − B̄ to the mean subject colour, and 1 / |F̄ − B̄|², ready for the last step.

    Both passes run on one copy reduced to REDUCED_SIDE, so their cost does
    not grow with the photo: a box mean costs the same at any width, and the
    means vary only on the scale of their boxes. Only the last step, at each
    partial pixel, uses the photo itself.
    """
    image, a, scale = _reduced(rgb, alpha, REDUCED_SIDE)
    wide = max(3, round(WIDE_SHARE * max(alpha.shape) * scale))
    mean_f = _blurred(image * a, wide, ndimage) / (_blurred(a, wide, ndimage) + 1e-5)
    mean_b = _blurred(image * (1 - a), wide, ndimage) / (_blurred(1 - a, wide, ndimage) + 1e-5)
    first = np.clip(mean_f + a * (image - a * mean_f - (1 - a) * mean_b), 0, 1)
    narrow = max(3, round(NARROW_BOX * scale) | 1)
    coverage = _blurred(a, narrow, ndimage)
    second_f = _blurred(first * a, narrow, ndimage) / (coverage + 1e-5)
    second_b = _blurred(mean_b * (1 - a), narrow, ndimage) / (1 - coverage + 1e-5)
    across = second_f - second_b
    reach = 1 / ((across * across).sum(axis=2, keepdims=True) + 1e-4)
    return np.concatenate((second_b, across, reach), axis=2), scale


def _blurred(planes: np.ndarray, box: int, ndimage) -> np.ndarray:
    """Box means over box×box windows of an h×w×c array, each channel apart."""
    return ndimage.uniform_filter(planes, size=(box, box, 1), mode="nearest")


def _estimated(colours: np.ndarray, levels: np.ndarray, means: np.ndarray, scale: float, where) -> np.ndarray:
    """F at some partial pixels (n×3 uint8), from their colours, alphas and the local means read at them.

    The means are read from the nearest pixel of their reduced grid: they vary
    only on the scale of the narrow box, several of its pixels, and reading
    them bilinearly cost as much as all the rest of this step.

    Where the alpha the pixel's colour implies (how far it lies from the mean
    background colour towards the mean subject colour) differs from its alpha
    by TRUST or more, the alpha is likely wrong there (hair the model missed,
    background it took for subject), the estimate would only move the error,
    and the colour is kept. In between, the two are blended.
    """
    rows, cols = where
    height, width, planes = means.shape
    at = np.minimum((rows * scale).astype(np.intp), height - 1) * width + np.minimum(
        (cols * scale).astype(np.intp), width - 1
    )
    local = np.take(means.reshape(height * width, planes), at, axis=0)
    mean_b, across, reach = local[:, :3], local[:, 3:6], local[:, 6:]
    image = colours.astype(np.float32) * np.float32(1 / 255)
    a = levels.astype(np.float32)[:, np.newaxis] * np.float32(1 / 255)
    rest = image - mean_b  # I − B̄, of which the equation explains α·(F̄ − B̄)
    said = (rest * across).sum(axis=1, keepdims=True) * reach
    weight = np.clip(1 - np.abs(np.clip(said, 0, 1) - a) * np.float32(1 / TRUST), 0, 1)
    # F̄ + α(I − αF̄ − (1 − α)B̄), written from B̄ and the step: B̄ + (1 − α²)(F̄ − B̄) + α(I − B̄).
    estimate = np.clip(mean_b + (1 - a * a) * across + a * rest, 0, 1)
    estimate -= image
    estimate *= weight
    estimate += image
    estimate *= 255
    return np.rint(estimate, out=estimate).astype(np.uint8)
