"""One recipe carried out on one cutout: the photo and its alpha in, the encoded file and its report out.

Everything is numpy and Pillow on the part of the canvas the subject covers:
the subject's region of the photo is resampled once onto the canvas (Pillow
premultiplies the alpha while it resamples, so no old background bleeds in),
moved by whole pixels onto its mark, its colours converted once, and laid
over the background and the shadow by Pillow's own blending. Where the alpha is
255 the result is the subject's own colour, exactly; where it is 0, the
background's (darkened by a shadow there), exactly.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from bgremover.recipes import compliance, encoding, geometry, shadows
from bgremover.recipes.declaration import Recipe, RecipeError

# On a background, alpha under 3 % (the model's faint haze over the old background) is dropped: it would tint a
# white canvas with the old wall's grey and spread the subject's region over the whole photo.
HAZE_ALPHA = 8
EDGE = 1e-6  # canvas pixels
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
    return _render(Cutout(rgb, alpha), recipe, icc_profile, recipe.file_name_for(stem, session, index))


def render_many(
    rgb: np.ndarray,
    alpha: np.ndarray,
    recipes: Sequence[Recipe],
    *,
    icc_profile: bytes | None = None,
    stem: str,
    session: str = "",
    index: int = 1,
    threads: int = 1,
) -> list[Rendered | Exception]:
    """Each recipe rendered from the same photo and alpha, on up to `threads` threads; in the recipes' order.

    What the recipes share (the alpha without its haze, the subject's box, the
    photo premultiplied by its alpha) is worked out once. A recipe that fails
    gives its exception in its place, so it costs no other recipe. Threads pay
    because Pillow and numpy let go of the GIL while they resample, blend,
    encode and decode.
    """
    try:
        cutout = Cutout(rgb, alpha)
    except RecipeError as exc:
        return [exc for _ in recipes]

    def one(recipe: Recipe) -> Rendered | Exception:
        try:
            return _render(cutout, recipe, icc_profile, recipe.file_name_for(stem, session, index))
        except Exception as exc:  # noqa: BLE001 - handed back in its recipe's place, for the caller to report
            return exc

    if threads <= 1 or len(recipes) <= 1:
        return [one(recipe) for recipe in recipes]
    with ThreadPoolExecutor(max_workers=min(threads, len(recipes)), thread_name_prefix="recipe") as pool:
        return list(pool.map(one, recipes))


class Cutout:
    """A photo and its alpha, and what every recipe of it shares, each worked out once, on first use."""

    def __init__(self, rgb: np.ndarray, alpha: np.ndarray) -> None:
        _check(rgb, alpha)
        self.rgb, self.alpha = rgb, alpha
        self._lock = threading.Lock()  # render_many's threads share one
        self._views: dict[bool, _View] = {}

    def view(self, recipe: Recipe) -> _View:
        """The alpha as the recipe uses it (without the haze on a background), with its boxes and the photo."""
        on_background = recipe.background != "transparent"
        with self._lock:
            if on_background not in self._views:
                alpha = (
                    np.where(self.alpha < HAZE_ALPHA, 0, self.alpha).astype(np.uint8) if on_background else self.alpha
                )
                self._views[on_background] = _View.of(self.rgb, alpha)
            return self._views[on_background]


@dataclass(frozen=True)
class _View:
    alpha: np.ndarray
    box: geometry.Box | None  # the subject: its pixels at least half opaque
    shown: geometry.Box | None  # every pixel with any opacity
    photo: Image.Image | None  # the whole photo premultiplied by the alpha ("RGBa"), what each recipe resamples

    @classmethod
    def of(cls, rgb: np.ndarray, alpha: np.ndarray) -> _View:
        shown = geometry.subject_box(alpha, 1)
        photo = None
        if shown is not None:
            photo = Image.fromarray(rgb)
            photo.putalpha(Image.fromarray(alpha))
            photo = photo.convert("RGBa")  # premultiplied: no old background bleeds into the edge as it resamples
        return cls(alpha, geometry.subject_box(alpha), shown, photo)


def _render(cutout: Cutout, recipe: Recipe, icc_profile: bytes | None, name: str) -> Rendered:
    view = cutout.view(recipe)
    height, width = view.alpha.shape
    placement = geometry.place(recipe, view.box or (0, 0, width, height), (width, height))
    region, corner = _subject_on_canvas(view, placement)
    if region is not None and view.box is not None:
        region, corner = _aligned(region, corner, placement, recipe.align)
    if region is not None and recipe.colour != "keep":
        region = _in_srgb(region, icc_profile)
    canvas_alpha = _alpha_on_canvas(placement.canvas, region, corner)
    layer = shadows.shadow(recipe, canvas_alpha, placement.subject_on_canvas)
    image = _composite(recipe, cutout.rgb, placement.canvas, region, corner, layer)
    encoded = encoding.encode(image, recipe, encoding.embedded_profile(recipe, icc_profile))
    report = compliance.report(recipe, placement, canvas_alpha, layer, encoded, found=view.box is not None)
    return Rendered(name, encoded.data, report, recipe.name)


def _check(rgb: np.ndarray, alpha: np.ndarray) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise RecipeError(f"the photo must be H×W×3 of uint8, not shape {rgb.shape} of {rgb.dtype}")
    if alpha.dtype != np.uint8 or alpha.shape != rgb.shape[:2]:
        raise RecipeError(f"the alpha must be H×W of uint8 as the photo, not shape {alpha.shape} of {alpha.dtype}")


def _subject_on_canvas(view: _View, placement: geometry.Placement):
    """The photo's pixels that may show (any opacity, plus the resampler's reach), resampled onto the canvas.

    Returns them as an RGBA image and the canvas position of its top-left
    corner; None for the image when nothing of the photo lands on the canvas.
    """
    scale, (ox, oy), (left, top, _, _) = placement.scale, placement.offset, placement.box
    if view.shown is None:
        return None, (0, 0)
    reach = math.ceil(4 / scale) + 2  # Lanczos reaches three canvas pixels
    height, width = view.alpha.shape
    sx0, sy0 = max(0, view.shown[0] - reach), max(0, view.shown[1] - reach)
    sx1, sy1 = min(width, view.shown[2] + reach), min(height, view.shown[3] + reach)
    cw, ch = placement.canvas
    # The canvas pixels those cover whole; EDGE forgives float error, so a side snapped to the canvas's
    # edge reaches its last pixel.
    dx0, dy0 = max(0, math.ceil(ox + (sx0 - left) * scale - EDGE)), max(0, math.ceil(oy + (sy0 - top) * scale - EDGE))
    dx1 = min(cw, math.floor(ox + (sx1 - left) * scale + EDGE))
    dy1 = min(ch, math.floor(oy + (sy1 - top) * scale + EDGE))
    if dx0 >= dx1 or dy0 >= dy1:
        return None, (0, 0)
    source = (  # that canvas rectangle, mapped back into the photo
        max(0.0, left + (dx0 - ox) / scale),
        max(0.0, top + (dy0 - oy) / scale),
        min(float(width), left + (dx1 - ox) / scale),
        min(float(height), top + (dy1 - oy) / scale),
    )
    method = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    # reducing_gap: a large reduction (a thumbnail of a big photo) first shrinks by whole factors, as Pillow's own
    # thumbnail() does; a 2000 px photo to a 400 px thumbnail took 20 ms of CPU instead of 39.
    resized = view.photo.resize((dx1 - dx0, dy1 - dy0), method, box=source, reducing_gap=2.0)
    return resized.convert("RGBA"), (dx0, dy0)


def _aligned(region: Image.Image, corner: tuple[int, int], placement, align: str):
    """The region moved by whole pixels so that its subject, as it landed, sits where the placement meant.

    The subject's box is found in the photo to the pixel; enlarged six times, a
    pixel is six on the canvas, and the half-opaque edge may land anywhere in
    it. Measured again on the canvas, the error is taken out, on each axis not
    snapped to an edge: the centre for a centred subject, else the anchored edge.
    """
    landed = geometry.subject_box(np.asarray(region.getchannel("A")))
    if landed is None:
        return region, corner
    meant = placement.subject_on_canvas
    landed = (landed[0] + corner[0], landed[1] + corner[1], landed[2] + corner[0], landed[3] + corner[1])
    snapped = placement.snapped
    dx = 0 if {"left", "right"} & set(snapped) else _error(geometry.horizontal(align), meant[0::2], landed[0::2])
    dy = 0 if {"top", "bottom"} & set(snapped) else _error(geometry.vertical(align), meant[1::2], landed[1::2])
    if dx == 0 and dy == 0:
        return region, corner
    x, y = corner[0] + dx, corner[1] + dy
    width, height = placement.canvas
    keep = (max(0, -x), max(0, -y), min(region.width, width - x), min(region.height, height - y))
    return region.crop(keep), (x + keep[0], y + keep[1])


def _error(where: str, meant: tuple[float, float], landed: tuple[int, int]) -> int:
    if where in ("left", "top"):
        return round(meant[0] - landed[0])
    if where in ("right", "bottom"):
        return round(meant[1] - landed[1])
    return round((meant[0] + meant[1] - landed[0] - landed[1]) / 2)


def _alpha_on_canvas(size: tuple[int, int], region: Image.Image | None, corner: tuple[int, int]) -> np.ndarray:
    """The subject's alpha over the whole canvas: what the shadow is drawn from and the report measures."""
    alpha = np.zeros(size[::-1], np.uint8)
    if region is not None:
        x, y = corner
        alpha[y : y + region.height, x : x + region.width] = region.getchannel("A")
    return alpha


def _in_srgb(region: Image.Image, icc: bytes | None) -> Image.Image:
    if encoding.is_srgb(icc):
        return region
    converted = encoding.to_srgb(region.convert("RGB"), icc)
    converted.putalpha(region.getchannel("A"))
    return converted


def _composite(recipe: Recipe, rgb: np.ndarray, size, region, corner, layer) -> Image.Image:
    """Background, then the shadow darkening it, then the subject over both, all by Pillow's own blending.

    Pillow blends exactly at the ends: where the subject's alpha is 255 the
    pixel is the subject's colour, where it is 0 the background's.
    """
    canvas = _background(recipe, rgb, size)
    if layer is not None:
        opacity, (x, y) = layer
        darkness = Image.fromarray(opacity)
        if canvas.mode == "RGBA":
            black = Image.new("L", darkness.size, 0)
            canvas.paste(Image.merge("RGBA", (black, black, black, darkness)), (x, y))
        else:
            canvas.paste((0, 0, 0), (x, y, x + darkness.width, y + darkness.height), darkness)
    if region is None:
        return canvas
    if canvas.mode == "RGBA":
        canvas.alpha_composite(region, corner)
    else:
        canvas.paste(region, corner, region)
    return canvas


def _background(recipe: Recipe, rgb: np.ndarray, size: tuple[int, int]) -> Image.Image:
    if recipe.background == "transparent":
        return Image.new("RGBA", size, (0, 0, 0, 0))
    if recipe.background == "blur":
        return _blurred_cover(rgb, size)
    return Image.new("RGB", size, recipe.colour_rgb)


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
    return blurred.resize(size, Image.Resampling.BICUBIC)
