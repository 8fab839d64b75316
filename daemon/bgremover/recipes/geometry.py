"""Where the subject goes: the canvas's size, the subject's scale and its place on the canvas.

Pure arithmetic on boxes, no pixels: a recipe and the subject's box in the
photo give a `Placement`, which rendering.py carries out and compliance.py
checks. The subject's box is the box of the pixels at least half opaque
(SUBJECT_ALPHA, as the daemon's own `crop` uses).

Fill: the subject's box is scaled so that on the canvas side it binds on (the
one it would touch first) it spans `fill` percent. An anchored edge (align
"bottom", "left", ...) keeps the same gap from its canvas edge as the binding
side keeps from each of its edges, so a shoe anchored to the bottom sits as far
from the bottom as it would from the sides. Margins: the subject is fitted
inside the canvas less the margins (percent of the canvas's width for left and
right, of its height for top and bottom), and aligned inside that box.

Snap: a side of the subject that the photo's frame cuts (its box touches the
photo's edge) is put flush with the canvas's edge, so the cut never floats in
the background. A subject cut on both sides of an axis (a portrait cut left and
right) is scaled to span that axis from edge to edge, where the other axis
still fits; else those two sides stay where the fit puts them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from bgremover.recipes.declaration import ASPECT, SIZE, Recipe

SUBJECT_ALPHA = 128  # a pixel at least half opaque belongs to the subject's box (as imaging/matting.py's crop)
SIDES = ("left", "top", "right", "bottom")
SUBJECT_MARGINS = (5.0, 5.0, 5.0, 5.0)
EDGE = 1e-6  # canvas pixels of float error forgiven  # a "subject" canvas's margins when the recipe sets none

Box = tuple[int, int, int, int]  # left, top, right, bottom; right and bottom exclusive


@dataclass(frozen=True)
class Placement:
    canvas: tuple[int, int]
    scale: float  # canvas pixels per photo pixel
    offset: tuple[float, float]  # where the subject box's top-left corner lands on the canvas (sub-pixel)
    box: Box  # the subject's box in the photo
    cut: tuple[str, ...]  # the sides of the box that the photo's frame cuts
    snapped: tuple[str, ...]  # those put flush with the canvas's edge

    @property
    def subject_on_canvas(self) -> tuple[float, float, float, float]:
        """The subject box as it lands on the canvas, in canvas pixels (fractional)."""
        left, top, right, bottom = self.box
        x, y = self.offset
        return (x, y, x + (right - left) * self.scale, y + (bottom - top) * self.scale)


def subject_box(alpha: np.ndarray, threshold: int = SUBJECT_ALPHA) -> Box | None:
    """The box of the pixels at least `threshold` opaque (half, unless told); None where there are none."""
    solid = alpha >= threshold
    rows, columns = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    if rows.size == 0:
        return None
    return (int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1)


def cut_sides(box: Box, size: tuple[int, int]) -> tuple[str, ...]:
    """The sides of `box` that touch the photo's edge: there the photo's frame cuts the subject."""
    left, top, right, bottom = box
    touching = (left == 0, top == 0, right == size[0], bottom == size[1])
    return tuple(side for side, touches in zip(SIDES, touching) if touches)


def place(recipe: Recipe, box: Box, photo_size: tuple[int, int]) -> Placement:
    """The canvas and where the subject's box goes on it, as `recipe` asks."""
    cut = cut_sides(box, photo_size)
    if recipe.canvas == "subject":
        return _around_subject(recipe, box, cut)
    canvas = canvas_size(recipe)
    width, height = box[2] - box[0], box[3] - box[1]
    fitted = _in_margins if recipe.margins is not None else _by_fill
    scale, x, y = fitted(recipe, canvas, width, height)
    spanning = _spanning(cut, canvas, width, height) if recipe.snap else None
    if spanning is not None:  # cut on both sides of an axis: the subject spans it, from edge to edge
        scale, x, y = fitted(recipe, canvas, width, height, spanning)
    snapped = tuple(side for side in cut if recipe.snap and (_opposite(side) not in cut or spanning is not None))
    x, y = _snap(snapped, canvas, width * scale, height * scale, x, y)
    return Placement(canvas, scale, (x, y), box, cut, snapped)


def canvas_size(recipe: Recipe) -> tuple[int, int]:
    """A fixed canvas's width and height: "W×H", or "A:B" at long_side."""
    if match := SIZE.match(recipe.canvas):
        return int(match[1]), int(match[2])
    match = ASPECT.match(recipe.canvas)
    across, down = float(match[1]), float(match[2])
    long_side = recipe.long_side
    if across >= down:
        return long_side, max(1, round(long_side * down / across))
    return max(1, round(long_side * across / down)), long_side


def horizontal(align: str) -> str:
    return "left" if "left" in align else "right" if "right" in align else "center"


def vertical(align: str) -> str:
    return "top" if "top" in align else "bottom" if "bottom" in align else "center"


def _by_fill(recipe: Recipe, canvas, width: int, height: int, scale: float | None = None) -> tuple[float, float, float]:
    fill = (recipe.fill if recipe.fill is not None else 100.0) / 100
    across, down = canvas[0] / width, canvas[1] / height
    scale = scale or fill * min(across, down)
    gap = (1 - fill) / 2 * (canvas[0] if across <= down else canvas[1])  # the binding side's gap
    x = _along(horizontal(recipe.align), 0, canvas[0], width * scale, gap)
    y = _along(vertical(recipe.align), 0, canvas[1], height * scale, gap)
    return scale, x, y


def _in_margins(
    recipe: Recipe, canvas, width: int, height: int, scale: float | None = None
) -> tuple[float, float, float]:
    top, right, bottom, left = (side / 100 for side in recipe.margins)
    x0, x1 = left * canvas[0], canvas[0] * (1 - right)
    y0, y1 = top * canvas[1], canvas[1] * (1 - bottom)
    scale = scale or min((x1 - x0) / width, (y1 - y0) / height)
    x = _along(horizontal(recipe.align), x0, x1, width * scale, 0)
    y = _along(vertical(recipe.align), y0, y1, height * scale, 0)
    return scale, x, y


def _along(where: str, start: float, end: float, length: float, gap: float) -> float:
    """Where a span of `length` starts between `start` and `end`: centred, or `gap` from one end."""
    if where in ("left", "top"):
        return start + gap
    if where in ("right", "bottom"):
        return end - gap - length
    return start + (end - start - length) / 2


def _spanning(cut: tuple[str, ...], canvas: tuple[int, int], width: int, height: int) -> float | None:
    """The scale at which a subject cut on both sides of an axis spans that axis, if the other axis then fits."""
    if "left" in cut and "right" in cut and height * canvas[0] / width <= canvas[1] + EDGE:
        return canvas[0] / width
    if "top" in cut and "bottom" in cut and width * canvas[1] / height <= canvas[0] + EDGE:
        return canvas[1] / height
    return None


def _opposite(side: str) -> str:
    return SIDES[(SIDES.index(side) + 2) % 4]


def _snap(snapped, canvas, width: float, height: float, x: float, y: float) -> tuple[float, float]:
    if "left" in snapped:
        x = 0
    if "right" in snapped:
        x = canvas[0] - width
    if "top" in snapped:
        y = 0
    if "bottom" in snapped:
        y = canvas[1] - height
    return x, y


def _around_subject(recipe: Recipe, box: Box, cut: tuple[str, ...]) -> Placement:
    """A canvas the subject's box plus margins (percent of its longer side), scaled to long_side if set."""
    width, height = box[2] - box[0], box[3] - box[1]
    longer = max(width, height)
    top, right, bottom, left = (side * longer / 100 for side in (recipe.margins or SUBJECT_MARGINS))
    snapped = tuple(side for side in cut if recipe.snap)
    left, top, right, bottom = (0 if side in snapped else gap for side, gap in zip(SIDES, (left, top, right, bottom)))
    span = (width + left + right, height + top + bottom)
    scale = recipe.long_side / max(span) if recipe.long_side else 1.0
    canvas = (max(1, math.floor(span[0] * scale + 0.5)), max(1, math.floor(span[1] * scale + 0.5)))
    return Placement(canvas, scale, (left * scale, top * scale), box, cut, snapped)
