"""The report on one rendered file: what it is, measured, and whether the channel would take it, with why not.

Every figure is measured on what was made, not taken from the recipe: the
canvas and bytes from the file, the fill from the subject's alpha as it landed
on the canvas (its box of pixels at least half opaque, against the canvas side
it binds on), the background's purity from the decoded file.

A pure background is judged where the codec can promise it: JPEG codes the
picture in blocks of 8×8 pixels (4:4:4, as encoding.py writes recipes that need
purity), so a block that holds any subject or shadow can ring by a level or two
in its background pixels; every other block must decode to exactly the
colour. For PNG every pixel outside the subject and its shadow must.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageChops

from bgremover.recipes import geometry
from bgremover.recipes.declaration import Recipe

FILL_TOLERANCE = 1.0  # percent points
ENLARGED_NOTE = 2.0  # a subject enlarged more than this many times gets a note: the photo is short of pixels
JPEG_BLOCK = 8


def report(recipe: Recipe, placement, canvas_alpha: np.ndarray, layer, encoded, *, found: bool) -> dict:
    with Image.open(io.BytesIO(encoded.data)) as image:
        canvas = list(image.size)
        pure = _pure(image, recipe, canvas_alpha, layer) if recipe.pure_background else None
    fill = measured_fill(canvas_alpha)
    box = geometry.subject_box(canvas_alpha)
    facts = {
        "recipe": recipe.name,
        "format": recipe.format,
        "canvas": canvas,
        "fill": fill,
        "align": recipe.align,
        "snapped": list(placement.snapped),
        "subject_box": list(box) if box is not None else None,
        "scale": round(placement.scale, 4),
        "background_pure": pure,
        "bytes": len(encoded.data),
        "byte_budget": recipe.byte_budget,
        "quality": encoded.quality,
        "colour_space": recipe.colour,
        "profile": encoded.profile,
        "dpi": encoded.dpi,
        "shadow": recipe.shadow,
    }
    reason = _reason(recipe, placement, facts, found)
    return {**facts, "compliant": reason is None, "reason": reason, "note": _note(placement)}


def _note(placement) -> str | None:
    """What a user should know that no channel checks: a subject blown up from too few pixels looks soft."""
    if placement.scale > ENLARGED_NOTE:
        return f"the subject was enlarged {placement.scale:.1f} times: the photo has fewer pixels than the canvas shows"
    return None


def measured_fill(canvas_alpha: np.ndarray) -> float | None:
    """Percent of the canvas side the subject binds on: the larger of its width's and height's shares."""
    box = geometry.subject_box(canvas_alpha)
    if box is None:
        return None
    height, width = canvas_alpha.shape
    return round(100 * max((box[2] - box[0]) / width, (box[3] - box[1]) / height), 2)


def _reason(recipe: Recipe, placement, facts: dict, found: bool) -> str | None:
    """The first rule the file breaks, as one sentence; None when it keeps them all."""
    if not found:
        return "no subject was found in the photo, so the file shows only the background"
    cut_reason = _cut_reason(recipe, placement)
    if cut_reason:
        return cut_reason
    long_side = max(facts["canvas"])
    if recipe.min_long_side and long_side < recipe.min_long_side:
        return f"the long side is {long_side} px, under the {recipe.min_long_side} px the channel asks for"
    if recipe.fill is not None and recipe.canvas != "subject" and not _spans(placement.snapped):
        if facts["fill"] is None or abs(facts["fill"] - recipe.fill) > FILL_TOLERANCE:
            return f"the subject fills {facts['fill']} % of the canvas, not the {recipe.fill:g} % asked for"
    if facts["background_pure"] is False:
        return f"the background is not pure {recipe.background} everywhere outside the subject and its shadow"
    if recipe.byte_budget is not None and facts["bytes"] > recipe.byte_budget:
        return (
            f"the file is {facts['bytes']:,} bytes even at quality {facts['quality']}, "
            f"over its budget of {recipe.byte_budget:,} bytes"
        )
    return None


def _spans(snapped) -> bool:
    """Whether the snap made the subject span an axis, which then decides its size rather than the fill."""
    return {"left", "right"} <= set(snapped) or {"top", "bottom"} <= set(snapped)


def _cut_reason(recipe: Recipe, placement) -> str | None:
    """Why a subject the photo's frame cuts cannot be placed as asked, or None where the cut does no harm."""
    cut = placement.cut
    floating = [side for side in cut if side not in placement.snapped]
    if not cut or (not recipe.whole_subject and not floating):
        return None
    sides = _listed(cut)
    edges = "edge" if len(cut) == 1 else "edges"
    if recipe.canvas == "subject":
        return f"the subject is cut by the {sides} {edges} of the photo, so it cannot be shown whole"
    if recipe.margins is not None:
        return f"the subject is cut by the {sides} {edges} of the photo, so its margins cannot be kept"
    fill = recipe.fill if recipe.fill is not None else 100
    placed = "centred" if recipe.align == "center" else f"aligned {recipe.align}"
    return f"the subject is cut by the {sides} {edges} of the photo, so {fill:g} % fill cannot be {placed}"


def _listed(sides) -> str:
    return sides[0] if len(sides) == 1 else ", ".join(sides[:-1]) + " and " + sides[-1]


def _pure(image: Image.Image, recipe: Recipe, canvas_alpha: np.ndarray, layer) -> bool:
    """Whether every background pixel the codec can keep exact decodes to exactly the background colour."""
    touched = canvas_alpha > 0
    if layer is not None:
        opacity, (x, y) = layer
        touched[y : y + opacity.shape[0], x : x + opacity.shape[1]] |= opacity > 0
    # Pillow does the pixel work: each channel's difference from the colour, the largest of the three.
    red, green, blue = ImageChops.difference(
        image.convert("RGB"), Image.new("RGB", image.size, recipe.colour_rgb)
    ).split()
    off = np.asarray(ImageChops.lighter(ImageChops.lighter(red, green), blue)) > 0
    if recipe.format == "jpeg":
        return not np.any(_by_block(off, JPEG_BLOCK) & ~_by_block(touched, JPEG_BLOCK))
    return not np.any(off & ~touched)


def _by_block(mask: np.ndarray, block: int) -> np.ndarray:
    """One value a block of the codec's grid: whether any pixel of it is set."""
    height, width = mask.shape
    rows, columns = -(-height // block), -(-width // block)
    if (rows * block, columns * block) != mask.shape:
        padded = np.zeros((rows * block, columns * block), bool)
        padded[:height, :width] = mask
        mask = padded
    return mask.reshape(rows, block, columns, block).any(axis=(1, 3))
