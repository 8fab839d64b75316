"""Colour and bytes: the subject's colours into sRGB, the file encoded, its quality searched down to a byte budget.

Colour: with `colour = "srgb"` or `"srgb-stripped"` the subject's pixels are
converted from the photo's ICC profile (Adobe RGB, Display P3, ...) to sRGB
with LittleCMS (Pillow's ImageCms); "srgb" embeds LittleCMS's sRGB profile,
"srgb-stripped" embeds none (an untagged file is read as sRGB). `"keep"`
converts nothing and embeds the photo's own profile. A background colour is
sRGB by definition and is never converted, so white stays 255,255,255.

JPEG: a flat block of white decodes to exactly 255 only if the luminance DC
step divides 1016 ((255 - 128) × 8); the encoder's own table for the quality
is kept but for that one step, set to 8 (or the largest of 4, 2, 1 not above
it). Recipes that require a pure background are written 4:4:4, so no chroma
upsampling bleeds a subject's colour into a white block beside it.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from functools import cache

from PIL import Image, ImageCms

from bgremover.recipes.declaration import Recipe

WHITE_DC_STEPS = (8, 4, 2, 1)  # the divisors of 1016 a luminance DC step may take
SUBSAMPLING_ABOVE = 90  # below this quality JPEG chroma is 4:2:0, as the daemon's own JPEGs
# libwebp's effort: on a 2048² catalogue image method 2 took half method 4's CPU (98 ms against 206 ms)
# for a file 6 % larger; the byte budget's search may encode several times, which makes speed count twice.
WEBP_METHOD = 2


@dataclass(frozen=True)
class Encoded:
    data: bytes
    quality: int | None  # the quality written (None for PNG)
    profile: str | None  # the embedded profile's description, or None
    dpi: int | None  # the DPI written, or None


@cache
def srgb_profile() -> bytes:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def description(icc: bytes | None) -> str | None:
    if not icc:
        return None
    try:
        return ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except (ImageCms.PyCMSError, OSError, ValueError):
        return "an unreadable profile"


def is_srgb(icc: bytes | None) -> bool:
    """No profile (read as sRGB), or one that says it is sRGB."""
    return icc is None or (description(icc) or "").lower().startswith("srgb")


def to_srgb(image: Image.Image, icc: bytes | None) -> Image.Image:
    """`image` (RGB) with its colours converted from `icc` to sRGB; as it is when already sRGB."""
    if is_srgb(icc) or icc[16:20] != b"RGB ":  # the daemon's decode has already converted CMYK and grey
        return image
    try:
        return ImageCms.applyTransform(image, _transform(icc))
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image  # a profile LittleCMS cannot use: the pixels as they are, as the daemon's decode does


@cache
def _transform(icc: bytes) -> ImageCms.ImageCmsTransform:
    source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    # NOCACHE: LittleCMS's one-pixel cache is written on every call, so a cached transform shared by threads
    # rendering recipes at once would race on it.
    return ImageCms.buildTransform(source, ImageCms.createProfile("sRGB"), "RGB", "RGB", flags=ImageCms.Flags.NOCACHE)


def embedded_profile(recipe: Recipe, icc: bytes | None) -> bytes:
    """What the file carries: sRGB's profile, none, or the photo's own."""
    if recipe.colour == "srgb":
        return srgb_profile()
    if recipe.colour == "keep" and icc:
        return icc
    return b""


def encode(image: Image.Image, recipe: Recipe, icc: bytes) -> Encoded:
    """The file, at the recipe's quality, or the highest quality down to min_quality that fits the byte budget.

    When even min_quality does not fit, that smallest file is returned; the report says it is over.
    """
    profile, dpi = description(icc), recipe.dpi
    data = _encoded(image, recipe, recipe.quality, icc)
    if recipe.format == "png":
        return Encoded(data, None, profile, dpi)
    budget = recipe.byte_budget
    if budget is None or len(data) <= budget:
        return Encoded(data, recipe.quality, profile, dpi)
    low, high, best = recipe.min_quality, recipe.quality - 1, None
    while low <= high:  # the highest quality that fits: size grows with quality
        middle = (low + high) // 2
        attempt = _encoded(image, recipe, middle, icc)
        if len(attempt) <= budget:
            best, low = (attempt, middle), middle + 1
        else:
            high = middle - 1
    if best is None:  # nothing fits: the smallest file, which the report calls over its budget
        best = (_encoded(image, recipe, recipe.min_quality, icc), recipe.min_quality)
    return Encoded(best[0], best[1], profile, dpi)


def _encoded(image: Image.Image, recipe: Recipe, quality: int, icc: bytes) -> bytes:
    out = io.BytesIO()
    extra: dict = {"icc_profile": icc}
    if recipe.dpi is not None and recipe.format != "webp":
        extra["dpi"] = (recipe.dpi, recipe.dpi)
    if recipe.format == "jpeg":
        subsampling = "4:4:4" if recipe.pure_background or quality >= SUBSAMPLING_ABOVE else "4:2:0"
        image.save(out, "JPEG", qtables=white_exact_tables(quality), subsampling=subsampling, optimize=True, **extra)
    elif recipe.format == "webp":
        image.save(out, "WEBP", quality=quality, alpha_quality=100, method=WEBP_METHOD, **extra)
    else:
        image.save(out, "PNG", compress_level=6, **extra)
    return out.getvalue()


@cache
def white_exact_tables(quality: int) -> tuple[tuple[int, ...], ...]:
    """The encoder's own quantization tables at `quality`, but for a luminance DC step that keeps white exact."""
    probe = io.BytesIO()
    Image.new("RGB", (8, 8)).save(probe, "JPEG", quality=quality)
    tables = Image.open(probe).quantization
    luminance = list(tables[0])
    luminance[0] = next(step for step in WHITE_DC_STEPS if step <= luminance[0])
    return (tuple(luminance), *(tuple(tables[key]) for key in sorted(tables) if key != 0))
