"""One recipe carried out on one cutout: the photo and its alpha in, the encoded file and its report out.

Everything is numpy and Pillow on the part of the canvas the subject covers:
the subject's region of the photo is resampled once onto the canvas (Pillow
premultiplies the alpha while it resamples, so no old background bleeds in),
its colours converted once, and composited over the background and the shadow
in float32. Where the alpha is 255 the result is the subject's own colour,
exactly; where it is 0, the background's (darkened by a shadow there), exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from bgremover.recipes import compliance, encoding, geometry, shadows
from bgremover.recipes.declaration import Recipe, RecipeError

BLUR_SHARE = 0.03  # a "blur" background's Gaussian radius: 3 % of the canvas's longer side
BLUR_WORK_SIDE = 256  # ... applied to a copy this long, then enlarged: the same look for a fraction of the cost


@dataclass(frozen=True)
class Rendered:
    name: str  # the file's name, from the recipe's template
    data: bytes  # the encoded file
    report: dict  # what compliance.report says about it: JSON-able
    recipe: str = ""  # the recipe's name


def render(
    rgb: np.ndarray,
    alpha: np.ndarray,
    recipe: Recipe,
    *,
    icc_profile: bytes | None = None,
    stem: str,
    session: str = "",
    index: int = 1,
) -> Rendered:
    """The file `recipe` makes of the photo `rgb` (H×W×3 uint8) cut out by `alpha` (H×W uint8)."""
    _check(rgb, alpha)
    height, width = alpha.shape
    box = geometry.subject_box(alpha)
    placement = geometry.place(recipe, box or (0, 0, width, height), (width, height))
    region, region_alpha, corner = _subject_on_canvas(rgb, alpha, placement)
    if recipe.colour != "keep":
        region = np.asarray(encoding.to_srgb(Image.fromarray(region), icc_profile))
    canvas_alpha = np.zeros(placement.canvas[::-1], np.uint8)
    _paste(canvas_alpha, region_alpha, corner)
    layer = shadows.shadow(recipe, canvas_alpha, placement.subject_on_canvas)
    image = _composite(recipe, rgb, placement, (region, region_alpha, corner), layer)
    encoded = encoding.encode(image, recipe, encoding.embedded_profile(recipe, icc_profile))
    report = compliance.report(recipe, placement, canvas_alpha, layer, encoded, found=box is not None)
    return Rendered(recipe.file_name_for(stem, session, index), encoded.data, report, recipe.name)


def _check(rgb: np.ndarray, alpha: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise RecipeError(f"the photo must be H×W×3 of uint8, not shape {rgb.shape} of {rgb.dtype}")
    if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
        raise RecipeError(f"the alpha must be H×W of uint8 as the photo, not shape {alpha.shape} of {alpha.dtype}")


def _subject_on_canvas(rgb: np.ndarray, alpha: np.ndarray, placement: geometry.Placement):
    """The photo's pixels that may show (alpha above 0, plus the resampler's reach), resampled onto the canvas.

    Returns their RGB (h×w×3), their alpha (h×w) and the canvas position of their top-left corner.
    """
    scale, (ox, oy), (left, top, _, _) = placement.scale, placement.offset, placement.box
    shown = geometry.subject_box(np.where(alpha > 0, 255, 0).astype(np.uint8))
    if shown is None:
        return np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8), (0, 0)
    reach = math.ceil(4 / scale) + 2  # Lanczos reaches three canvas pixels
    height, width = alpha.shape
    sx0, sy0 = max(0, shown[0] - reach), max(0, shown[1] - reach)
    sx1, sy1 = min(width, shown[2] + reach), min(height, shown[3] + reach)
    cw, ch = placement.canvas
    dx0, dy0 = max(0, math.ceil(ox + (sx0 - left) * scale)), max(0, math.ceil(oy + (sy0 - top) * scale))
    dx1, dy1 = min(cw, math.floor(ox + (sx1 - left) * scale)), min(ch, math.floor(oy + (sy1 - top) * scale))
    if dx0 >= dx1 or dy0 >= dy1:
        return np.zeros((0, 0, 3), np.uint8), np.zeros((0, 0), np.uint8), (0, 0)
    crop = Image.fromarray(np.dstack([rgb[sy0:sy1, sx0:sx1], alpha[sy0:sy1, sx0:sx1]]), "RGBA")
    source = (  # the canvas rectangle, mapped back into the crop's own coordinates
        left - sx0 + (dx0 - ox) / scale,
        top - sy0 + (dy0 - oy) / scale,
        left - sx0 + (dx1 - ox) / scale,
        top - sy0 + (dy1 - oy) / scale,
    )
    source = (max(0.0, source[0]), max(0.0, source[1]), min(crop.width, source[2]), min(crop.height, source[3]))
    method = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    resized = np.asarray(crop.resize((dx1 - dx0, dy1 - dy0), method, box=source))
    return np.ascontiguousarray(resized[..., :3]), np.ascontiguousarray(resized[..., 3]), (dx0, dy0)


def _paste(target: np.ndarray, piece: np.ndarray, corner: tuple[int, int]) -> None:
    x, y = corner
    target[y : y + piece.shape[0], x : x + piece.shape[1]] = piece


def _composite(recipe: Recipe, rgb: np.ndarray, placement, subject, layer) -> Image.Image:
    """Background, then the shadow darkening it, then the subject over both; only the touched window in float."""
    region, region_alpha, (x, y) = subject
    cw, ch = placement.canvas
    transparent = recipe.background == "transparent"
    background = _background(recipe, rgb, (cw, ch))
    window = _union((x, y, x + region.shape[1], y + region.shape[0]), _layer_box(layer))
    if window is None:
        return Image.fromarray(background)
    wl, wt, wr, wb = window
    under = background[wt:wb, wl:wr].astype(np.float32)
    cover = np.zeros((wb - wt, wr - wl), np.float32)  # the subject's alpha, 0..1, over the window
    colour = np.zeros((wb - wt, wr - wl, 3), np.float32)
    cover[y - wt : y - wt + region.shape[0], x - wl : x - wl + region.shape[1]] = region_alpha / np.float32(255)
    colour[y - wt : y - wt + region.shape[0], x - wl : x - wl + region.shape[1]] = region
    darkness = np.zeros_like(cover)
    if layer is not None:
        piece, (lx, ly) = layer
        darkness[ly - wt : ly - wt + piece.shape[0], lx - wl : lx - wl + piece.shape[1]] = piece
    if transparent:
        # Black shadow under the subject: alpha adds up, colour is the subject's where it has any.
        total = cover + darkness * (1 - cover)
        out = np.where(total[..., None] > 0, colour * (cover / np.maximum(total, 1e-6))[..., None], 0)
        background[wt:wb, wl:wr, :3] = np.rint(out).astype(np.uint8)
        background[wt:wb, wl:wr, 3] = np.rint(total * 255).astype(np.uint8)
    else:
        under *= (1 - darkness)[..., None]
        out = under + (colour - under) * cover[..., None]
        background[wt:wb, wl:wr] = np.rint(out).astype(np.uint8)
    return Image.fromarray(background)


def _background(recipe: Recipe, rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    width, height = size
    if recipe.background == "transparent":
        return np.zeros((height, width, 4), np.uint8)
    if recipe.background == "blur":
        return _blurred_cover(rgb, size)
    return np.full((height, width, 3), recipe.colour_rgb, np.uint8)


def _blurred_cover(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The photo, scaled to cover the canvas (centred) and blurred: the subject's own scene, out of focus."""
    width, height = size
    photo = Image.fromarray(rgb)
    small = max(1.0, max(width, height) / BLUR_WORK_SIDE)
    work = (max(1, round(width / small)), max(1, round(height / small)))
    cover = max(work[0] / photo.width, work[1] / photo.height)
    crop_w, crop_h = work[0] / cover, work[1] / cover
    box = (
        (photo.width - crop_w) / 2,
        (photo.height - crop_h) / 2,
        (photo.width + crop_w) / 2,
        (photo.height + crop_h) / 2,
    )
    shrunk = photo.resize(work, Image.Resampling.BILINEAR, box=box, reducing_gap=2.0)
    blurred = shrunk.filter(ImageFilter.GaussianBlur(BLUR_SHARE * max(work)))
    return np.array(blurred.resize(size, Image.Resampling.BICUBIC))


def _layer_box(layer) -> tuple[int, int, int, int] | None:
    if layer is None:
        return None
    piece, (x, y) = layer
    return (x, y, x + piece.shape[1], y + piece.shape[0])


def _union(*boxes) -> tuple[int, int, int, int] | None:
    boxes = [box for box in boxes if box is not None and box[0] < box[2] and box[1] < box[3]]
    if not boxes:
        return None
    return (min(b[0] for b in boxes), min(b[1] for b in boxes), max(b[2] for b in boxes), max(b[3] for b in boxes))
