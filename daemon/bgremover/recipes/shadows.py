"""Shadows as a layer of opacity (0..255) laid on the background before the subject goes over it.

Both kinds are drawn behind the subject, never over it: rendering.py darkens the
background by the layer and then composites the subject on top, so a pixel of
opaque subject is the subject's own colour whatever the shadow does.

- drop: the subject's own silhouette, moved by `shadow_offset` and blurred by
  `shadow_blur` (both percent of the subject's longer side on the canvas), at
  `shadow_opacity`.
- contact: an ellipse under the subject's base, as wide as the base (the
  bottom twentieth of the subject) and an eighth as tall, darkest at its centre
  (`shadow_opacity`) and fading out over `shadow_softness` of its radius.

Each returns the layer over a window of the canvas and the window's top-left
corner, or None when the recipe has no shadow or it would be empty.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from bgremover.recipes.declaration import Recipe
from bgremover.recipes.geometry import SUBJECT_ALPHA

Layer = tuple[np.ndarray, tuple[int, int]]  # uint8 opacity over a window, and the window's top-left corner
BASE_SHARE = 0.05  # the bottom twentieth of the subject is its base
FLATNESS = 0.125  # a contact shadow is an eighth as tall as it is wide


def shadow(recipe: Recipe, alpha: np.ndarray, subject: tuple[float, float, float, float]) -> Layer | None:
    """The recipe's shadow for the subject whose alpha on the canvas is `alpha` and whose box is `subject`."""
    if recipe.shadow == "none" or recipe.shadow_opacity == 0:
        return None
    longer = max(subject[2] - subject[0], subject[3] - subject[1])
    if recipe.shadow == "drop":
        return drop(alpha, longer, recipe)
    return contact(alpha, subject, recipe)


def drop(alpha: np.ndarray, longer: float, recipe: Recipe) -> Layer | None:
    rows, columns = np.flatnonzero(alpha.any(axis=1)), np.flatnonzero(alpha.any(axis=0))
    if rows.size == 0:
        return None
    dx, dy = (round(share * longer / 100) for share in recipe.shadow_offset)
    radius = recipe.shadow_blur * longer / 100
    pad = int(np.ceil(3 * radius)) + 1
    height, width = alpha.shape
    left, top = max(0, int(columns[0]) + dx - pad), max(0, int(rows[0]) + dy - pad)
    right, bottom = min(width, int(columns[-1]) + 1 + dx + pad), min(height, int(rows[-1]) + 1 + dy + pad)
    if left >= right or top >= bottom:
        return None
    # A crop past the alpha's edge reads as transparent, which is what a moved silhouette shows there.
    moved = Image.fromarray(alpha).crop((left - dx, top - dy, right - dx, bottom - dy))
    if radius > 0:
        moved = moved.filter(ImageFilter.GaussianBlur(radius))
    opacity = recipe.shadow_opacity
    return np.asarray(moved.point(lambda value: round(value * opacity))), (left, top)


def contact(alpha: np.ndarray, subject: tuple[float, float, float, float], recipe: Recipe) -> Layer | None:
    left, top, right, bottom = (round(value) for value in subject)
    base_top = max(top, bottom - max(1, round((bottom - top) * BASE_SHARE)))
    base = alpha[base_top:bottom, max(0, left) : right] >= SUBJECT_ALPHA
    columns = np.flatnonzero(base.any(axis=0))
    if columns.size == 0:
        return None
    x0, x1 = max(0, left) + columns[0], max(0, left) + columns[-1] + 1
    centre_x, centre_y = (x0 + x1) / 2, float(bottom)
    across = max(1.0, (x1 - x0) / 2)
    down = max(1.0, across * FLATNESS)
    height, width = alpha.shape
    wl, wt = max(0, int(centre_x - across)), max(0, int(centre_y - down))
    wr, wb = min(width, int(np.ceil(centre_x + across)) + 1), min(height, int(np.ceil(centre_y + down)) + 1)
    if wl >= wr or wt >= wb:
        return None
    xs = (np.arange(wl, wr, dtype=np.float32) + 0.5 - centre_x) / across
    ys = (np.arange(wt, wb, dtype=np.float32) + 0.5 - centre_y) / down
    radius = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    fade = np.clip((1 - radius) / max(recipe.shadow_softness, 1e-3), 0, 1)
    return np.rint(fade * (recipe.shadow_opacity * 255)).astype(np.uint8), (wl, wt)
