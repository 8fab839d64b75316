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

Only pixels with 0 < α < 255 change: opaque pixels keep their colour byte for
byte, and transparent ones too (no format shows them). The work is done on
tiles holding partial pixels only, and the wide pass on a reduced copy, so a
photo with a thin rim costs little.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

# The wide pass averages over a box this share of the longer side: about the
# 90 px Forte and Pitié use at the size of their benchmark's photos.
WIDE_SHARE = 0.045
# The wide pass runs on a copy reduced so its longer side is this many pixels:
# its box is then about 20 px, and its means vary only on that scale.
WIDE_SIDE = 400
# The narrow pass's box, in pixels at full size (their second pass uses 6).
NARROW_BOX = 7
# How far (0..1) the alpha the pixel's colour implies may be from its alpha
# before its colour is kept. On the project's composites (bench/composites.py)
# 0.5 lowered the colour error over white on more of them than no limit, 0.25 or 0.1.
TRUST = 0.5
TILE = 64  # the narrow pass runs on TILE×TILE tiles that hold a partial pixel, each with a halo of NARROW_BOX
# Tiles done at once: about 40 MB for each of the pass's float arrays, so a
# 40-megapixel photo with a wide soft rim never holds them all at once.
CHUNK = 512


def decontaminate(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The colours (H×W×3 uint8) with F estimated where 0 < alpha < 255; elsewhere `rgb` exactly."""
    _check(rgb, alpha)
    partial = (alpha > 0) & (alpha < 255)
    result = rgb.copy()
    if not partial.any():
        return result
    from scipy import ndimage

    wide_f, wide_b, scale = _wide_means(rgb, alpha, ndimage)
    tops, lefts = _tiles(partial)
    for start in range(0, len(tops), CHUNK):
        _estimate(rgb, alpha, partial, result, tops[start:start + CHUNK], lefts[start:start + CHUNK],
                  (wide_f, wide_b, scale), ndimage)
    return result


def _estimate(rgb, alpha, partial, result, tops, lefts, wide, ndimage) -> None:
    """The second pass on some tiles, written into `result` at their partial pixels."""
    wide_f, wide_b, scale = wide
    # Every tile with its halo, side by side in one array (n × S × S × channels),
    # so that each blur runs once over all of them; the edge is repeated beyond the photo.
    halo = NARROW_BOX // 2 + 1
    steps = np.arange(TILE + 2 * halo)
    rows = np.clip(tops[:, None] - halo + steps, 0, alpha.shape[0] - 1)
    cols = np.clip(lefts[:, None] - halo + steps, 0, alpha.shape[1] - 1)
    image = rgb[rows[:, :, None], cols[:, None, :]].astype(np.float32) / 255
    a = alpha[rows[:, :, None], cols[:, None, :]].astype(np.float32)[..., np.newaxis] / 255
    mean_f, mean_b = (_upsampled(plane, rows, cols, scale) for plane in (wide_f, wide_b))
    first = np.clip(mean_f + a * (image - a * mean_f - (1 - a) * mean_b), 0, 1)
    del mean_f
    final = _fused(image, first, mean_b, a, NARROW_BOX, ndimage)[:, halo:halo + TILE, halo:halo + TILE]
    # Back into place: each tile's pixels that are inside the photo and partial.
    ys = np.broadcast_to(rows[:, halo:halo + TILE, None], final.shape[:3])
    xs = np.broadcast_to(cols[:, None, halo:halo + TILE], final.shape[:3])
    inside = ((tops[:, None] + np.arange(TILE) < alpha.shape[0])[:, :, None]
              & (lefts[:, None] + np.arange(TILE) < alpha.shape[1])[:, None, :])
    chosen = inside & partial[ys, xs]
    result[ys[chosen], xs[chosen]] = np.rint(final[chosen] * 255).astype(np.uint8)


def _check(rgb: np.ndarray, alpha: np.ndarray) -> None:
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"the colours must be an H×W×3 uint8 array, not {rgb.shape} {rgb.dtype}")
    if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
        raise ValueError(f"the alpha must be a uint8 array of {rgb.shape[:2]}, not {alpha.shape} {alpha.dtype}")


def _tiles(partial: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The tops and lefts of the TILE×TILE tiles that hold a partial pixel."""
    height, width = partial.shape
    rows, cols = math.ceil(height / TILE), math.ceil(width / TILE)
    padded = np.zeros((rows * TILE, cols * TILE), dtype=bool)
    padded[:height, :width] = partial
    held = padded.reshape(rows, TILE, cols, TILE).any(axis=(1, 3))
    tile_rows, tile_cols = np.nonzero(held)
    return tile_rows * TILE, tile_cols * TILE


def _wide_means(rgb: np.ndarray, alpha: np.ndarray, ndimage) -> tuple[np.ndarray, np.ndarray, float]:
    """The first pass's local mean subject and background colours on a reduced copy, and its scale."""
    height, width = alpha.shape
    scale = min(1.0, WIDE_SIDE / max(height, width))
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    image = np.asarray(Image.fromarray(rgb).resize(size, Image.Resampling.BOX), dtype=np.float32) / 255
    a = np.asarray(Image.fromarray(alpha).resize(size, Image.Resampling.BOX), dtype=np.float32)[..., None] / 255
    box = max(3, round(WIDE_SHARE * max(height, width) * scale))
    mean_f = _blurred(image * a, box, ndimage) / (_blurred(a, box, ndimage) + 1e-5)
    mean_b = _blurred(image * (1 - a), box, ndimage) / (_blurred(1 - a, box, ndimage) + 1e-5)
    return mean_f, mean_b, scale


def _blurred(planes: np.ndarray, box: int, ndimage) -> np.ndarray:
    """Box means over box×box windows of the two axes before the last (an axis in front, if any, is kept apart)."""
    size = (box, box, 1) if planes.ndim == 3 else (1, box, box, 1)
    return ndimage.uniform_filter(planes, size=size, mode="nearest")


def _fused(image, f, b, a, box, ndimage) -> np.ndarray:
    """The second blur-fusion pass, trusted as far as the pixel's colour agrees with its alpha (n×S×S×3, 0..1).

    F comes from the local means of f·a and b·(1 − a). The pixel's own colour
    says how far it lies from the mean background colour towards the mean
    subject colour; where that differs from its alpha by TRUST or more, the
    alpha is likely wrong there (hair the model missed, background it took
    for subject), the estimate would only move the error, and the colour is
    kept. In between, the two are blended.
    """
    mean_a = _blurred(a, box, ndimage)
    mean_f = _blurred(f * a, box, ndimage) / (mean_a + 1e-5)
    mean_b = _blurred(b * (1 - a), box, ndimage) / (1 - mean_a + 1e-5)
    estimate = np.clip(mean_f + a * (image - a * mean_f - (1 - a) * mean_b), 0, 1)
    across = mean_f - mean_b
    said = ((image - mean_b) * across).sum(axis=-1, keepdims=True) / ((across * across).sum(axis=-1, keepdims=True)
                                                                    + 1e-4)
    weight = np.clip(1 - np.abs(np.clip(said, 0, 1) - a) / TRUST, 0, 1)
    return image + weight * (estimate - image)


def _upsampled(plane: np.ndarray, rows: np.ndarray, cols: np.ndarray, scale: float) -> np.ndarray:
    """The reduced h×w×3 `plane` read bilinearly at full-size rows × cols of each tile (n×S each; n×S×S×3).

    A tile covers only a few pixels of the reduced grid: those are cut out for
    each tile and interpolated by two small matrix products, down and across.
    """
    down, y0 = _interpolation(rows, scale, plane.shape[0])
    across, x0 = _interpolation(cols, scale, plane.shape[1])
    k_down, k_across = down.shape[2], across.shape[2]
    # Near the far edge a tile's window may reach past the plane; those pixels carry no weight.
    ys = np.minimum(y0[:, None] + np.arange(k_down), plane.shape[0] - 1)
    xs = np.minimum(x0[:, None] + np.arange(k_across), plane.shape[1] - 1)
    patches = plane[ys[:, :, None], xs[:, None, :]]
    n, side = rows.shape
    columns = np.matmul(down, patches.reshape(n, k_down, -1)).reshape(n, side, k_across, 3)
    return np.einsum("ntk,nskc->nstc", across, columns, optimize=True)


def _interpolation(positions: np.ndarray, scale: float, length: int) -> tuple[np.ndarray, np.ndarray]:
    """Per tile, the bilinear weights (n×S×k) from k reduced pixels starting at the returned first ones (n)."""
    at = np.clip((positions + 0.5) * scale - 0.5, 0, length - 1)
    low = np.floor(at).astype(np.intp)
    high = np.minimum(low + 1, length - 1)
    first = low[:, 0]
    k = int((high.max(axis=1) - first).max()) + 1
    weights = np.zeros((*positions.shape, k), dtype=np.float32)
    tile = np.arange(positions.shape[0])[:, None]
    step = np.arange(positions.shape[1])[None, :]
    fraction = (at - low).astype(np.float32)
    weights[tile, step, low - first[:, None]] += 1 - fraction
    weights[tile, step, high - first[:, None]] += fraction
    return weights, first
