"""The mask's edge after the model: pure functions on numpy arrays.

The `edges` setting picks one of three treatments of the alpha mask that
imaging.matting.postprocess gives (H×W uint8, already at the photo's size):

- "raw": the model's mask as it is. U²-Net sees the photo at 320×320, so at
  full size its contour is a soft, slightly wobbly upscale, and it may hold a
  few specks of false subject and pinholes of false background.
- "clean": specks and small holes are removed and the contour is smoothed and
  made crisp again: a hard cut with a two-pixel antialiased ramp. Suits
  products and other objects with hard outlines.
- "refine": only the uncertain part of a thin band around the contour is
  recomputed with a guided filter that takes the photo as its guide, so the
  alpha follows the photo's own edges there (hair, fur, soft focus). Pixels
  the model was sure were subject, and everything outside the band, stay
  exactly as the model gave them.

No daemon policy lives here: no settings, no logging. scipy is imported only
inside `clean`, so importing this module stays cheap for jobs that never use it.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image, ImageFilter

MODES = ("raw", "clean", "refine")

SUBJECT_ALPHA = 128  # at least half opaque counts as subject, as in matting.subject_box

# A component of subject smaller than this share of the largest one is a speck;
# an enclosed hole smaller than it is a pinhole. One percent keeps a second shoe
# or the inside of a mug's handle (each far larger) and drops stray blobs of a
# few of the model's 320-px grid cells, which are well under a percent of a subject.
ISLAND_SHARE = 0.01

# The contour is smoothed by a Gaussian of this many pixels per pixel of the
# longer side, at least one: U²-Net's 320-px grid, scaled up, wobbles on a scale
# that grows with the image, so the smoothing has to as well.
SMOOTHING_SIGMA_PER_PIXEL = 1 / 800
SMOOTHING_SIGMA_MIN = 1.0

# Width, in pixels, of the antialiased ramp the smoothed contour gets: one pixel
# either side of it, enough to hide the pixel grid on diagonals and narrow
# enough to read as a hard cut.
RAMP_PX = 2.0

# The band that "refine" recomputes reaches this share of the longer side from
# the contour, on either side. The model sees the photo on a 320-px grid, so one
# of its cells is about 0.3 % of the longer side; 1.5 % is five cells, room for
# a contour a few cells off, while the body of the mask is left alone.
BAND_SHARE = 0.015
BAND_MIN_PX = 3  # below this a small image's band is too thin to hold an edge at all

# The guided filter's window radius as a share of the band's width. A pixel's
# output draws on pixels up to two radii away (one window fits a and b, a
# second averages them), so at one half the filter's reach ends where the
# band does: it can move the edge across the inner part of the band, while at
# the band's outer edge, where the mask is flat, it reproduces the mask, and
# the recomputed band meets the untouched mask without a seam. A quarter moved
# the edges of our test discs too little to matter; the whole band bit deeper
# into the white rim of a saucer on a white table (any colour-guided window
# bites a little where subject and background share a colour).
FILTER_RADIUS_OF_BAND = 0.5
FILTER_RADIUS_MIN = 2  # a 3×3 window is too few pixels to fit four parameters (a, b) above the noise

# The guided filter's regularisation, on colours scaled to 0..1: a window whose
# colours vary by less than about sqrt(eps), 4 of 255 levels, counts as flat
# and its alpha is only smoothed there. 1e-2 left a soft grey rim around hair
# and cups in our photos, 1e-3 a faint one; going below 2e-4 changed nothing.
FILTER_EPS = 0.015**2

# The fast guided filter (He and Sun, 2015) fits its linear models on a copy
# subsampled so the window is about this many pixels in radius, and applies
# them to the full-size photo. a and b vary only on the window's scale, so
# they survive bilinear upsampling, and the detail comes from the full-size
# photo. The subsampled guide is also averaged, so sensor noise no longer
# passes for texture: on our noisy test discs the subsampled filter moved the
# alpha toward the true edge where the full-size one did not. Radii of 3 and 4
# gave the same edges on our photos at two and three times the cost.
SUBSAMPLED_RADIUS = 2


# A pixel the model gave at least this much alpha is sure subject, and refine
# keeps it as it is. The guided filter fits alpha as a linear function of
# colour, so inside a textured subject (fur, a patterned shirt) the shades
# that resemble the background got partial alpha: truly opaque fur came out at
# 82–93 %. Not every model says "sure" with 255: isnet-small gives its
# subject 250 to 254 and hardly ever 255, so the line is drawn a little below.
SURE_SUBJECT = 250

# Where the photo is flat, the guided filter has nothing to follow and its
# output is the mask blurred by its two windows: a halo of a few levels
# spreads into a plain background and a dip into a plain subject, on either
# side of every contour. There refine keeps the model's own detail instead (the
# mask minus its blur, added back), and it follows the filter fully where the
# window's colours vary a lot. A window counts as half flat when the variance of
# its colours, summed over the channels, is this (a spread of 0.06, about 15 of
# 255 levels, per channel): a saucer's glaze or a studio wall is flat, fur and
# a wooden table are not.
FLAT_VARIANCE = 3 * 0.06**2

# ---------------------------------------------------------------- dispatch


def preload() -> None:
    """Import what clean needs now, in the fork server, so no job pays for it.

    scipy.ndimage takes about a third of a second to import, longer than a
    job's whole inference, and a job process is fresh each time. Imported once
    in the fork server, every child has it already, for about 25 MB of pages
    they share.
    """
    from scipy import ndimage  # noqa: F401 - imported for its side effect: loaded and cached


def apply(edges: str, mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The mask with its edge treated as the `edges` setting asks: "raw", "clean" or "refine"."""
    if edges not in MODES:
        raise ValueError(f"unknown edges mode {edges!r} (known: {', '.join(MODES)})")
    _check_mask(mask)
    _check_image(image, mask)
    if edges == "clean":
        return clean(mask)
    if edges == "refine":
        return refine(mask, image)
    return mask


def _check_mask(mask: np.ndarray) -> None:
    if mask.ndim != 2 or mask.dtype != np.uint8:
        raise ValueError(f"the mask must be a 2-D uint8 array, not {mask.ndim}-D {mask.dtype}")


def _check_image(image: np.ndarray, mask: np.ndarray) -> None:
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"the image must be an H×W×3 uint8 RGB array, not {image.shape} {image.dtype}")
    if image.shape[:2] != mask.shape:
        raise ValueError(
            f"the mask is {mask.shape[1]}×{mask.shape[0]} pixels but the image is "
            f"{image.shape[1]}×{image.shape[0]}; resize the mask to the image first"
        )


# ---------------------------------------------------------------- clean


def clean(mask: np.ndarray) -> np.ndarray:
    """The mask without specks or pinholes, with a smooth contour and a two-pixel antialiased ramp.

    An island of subject, or an enclosed hole in it, smaller than ISLAND_SHARE
    of the largest piece of subject goes; larger ones are real (a pair of
    shoes, a mug's handle) and stay. A mask with no subject comes back as it is.
    """
    _check_mask(mask)
    subject = mask >= SUBJECT_ALPHA
    if not subject.any():
        return mask.copy()
    subject, largest = _without_islands(subject)
    subject = _without_pinholes(subject, largest)
    return _smoothed(subject)


def _without_islands(subject: np.ndarray) -> tuple[np.ndarray, int]:
    """The subject's 8-connected pieces that are not specks, and the largest one's area."""
    from scipy import ndimage

    labels, _ = ndimage.label(subject, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(labels.ravel())
    areas[0] = 0  # label 0 is the background
    largest = int(areas.max())
    keep = areas >= ISLAND_SHARE * largest
    keep[0] = False
    return keep[labels], largest


def _without_pinholes(subject: np.ndarray, largest: int) -> np.ndarray:
    """The subject with its small enclosed holes filled.

    Background is labelled with 4-connectivity, the complement of the
    subject's 8: two background pixels touching only at a corner are separated
    by subject there, so they belong to different holes.
    """
    from scipy import ndimage

    labels, _ = ndimage.label(~subject)
    areas = np.bincount(labels.ravel())
    fill = areas < ISLAND_SHARE * largest
    fill[0] = False  # label 0 is the subject
    border = np.concatenate((labels[0], labels[-1], labels[:, 0], labels[:, -1]))
    fill[border] = False  # background reaching the border is not enclosed
    return subject | fill[labels]


def smoothing_sigma(shape: tuple[int, ...]) -> float:
    """The Gaussian's standard deviation, in pixels, that clean smooths the contour with."""
    return max(SMOOTHING_SIGMA_MIN, max(shape[:2]) * SMOOTHING_SIGMA_PER_PIXEL)


def _smoothed(subject: np.ndarray) -> np.ndarray:
    """The region blurred and cut again at one half, with a RAMP_PX-wide antialiased edge.

    Cutting a blurred region at one half moves its contour by curvature:
    spurs and notches narrower than the blur vanish, and stairs become lines.
    Only the pixels touching the new contour get partial alpha, so a spur
    that the cut removed leaves no faint trace behind.
    """
    sigma = smoothing_sigma(subject.shape)
    # Pillow's Gaussian is three box passes, so it costs the same at any sigma:
    # at 3000×2000 and sigma 3.75 it took 75 ms, scipy.ndimage.gaussian_filter
    # (a true 31-tap kernel) 150 ms. Its 8-bit result is fine here: the ramp
    # below spans only a few of its levels per pixel.
    region = Image.fromarray(subject.astype(np.uint8) * 255)
    blurred = np.asarray(region.filter(ImageFilter.GaussianBlur(sigma)))
    alpha = np.where(blurred >= SUBJECT_ALPHA, 255, 0).astype(np.uint8)
    edge = band(alpha, 1)
    # Across a straight edge the blurred value rises with slope 1/(sigma·√(2π))
    # per pixel at one half; this steepness makes that 1/RAMP_PX, so the ramp
    # spans the pixel on either side of the contour, exactly the edge band.
    steepness = sigma * math.sqrt(2 * math.pi) / RAMP_PX
    ramp = (blurred[edge].astype(np.float32) / 255 - 0.5) * steepness + 0.5
    alpha[edge] = np.rint(np.clip(ramp, 0.0, 1.0) * 255).astype(np.uint8)
    return alpha


# ---------------------------------------------------------------- refine


def band_width(shape: tuple[int, ...]) -> int:
    """How far, in pixels, the band that refine recomputes reaches from the contour."""
    return max(BAND_MIN_PX, round(BAND_SHARE * max(shape[:2])))


def band(mask: np.ndarray, width: int) -> np.ndarray:
    """Where a (2·width+1)-pixel square around the pixel holds both subject and background (bool H×W).

    That is every pixel within `width` pixels (Chebyshev distance) of the
    contour of mask >= 128, on either side of it.
    """
    subject = mask >= SUBJECT_ALPHA
    return _near(subject, width) & _near(~subject, width)


def _near(region: np.ndarray, width: int) -> np.ndarray:
    """Whether the (2·width+1)-pixel square around each pixel holds any of `region` (bool H×W).

    A square holds some of the region when one of its rows does, so this is
    two one-dimensional passes of booleans. Each counts in uint16 and may wrap:
    a window's count is a difference of two running sums, exact modulo 2¹⁶ as
    long as the count itself (at most 2·width+1) fits. At 40 megapixels this
    needs about a third of the memory of a two-dimensional count in int32.
    """
    across = _row_window_sum(region, width, np.uint16) > 0
    down = _row_window_sum(np.ascontiguousarray(across.T), width, np.uint16) > 0
    return np.ascontiguousarray(down.T)


def refine(mask: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The mask with the uncertain part of the band around its contour recomputed, steered by `image`.

    Outside band(mask, band_width(mask.shape)) the result is the mask, byte
    for byte, and so is every pixel the model gave SURE_SUBJECT or more; a
    mask with no contour (all subject or none) comes back as it is.
    """
    _check_mask(mask)
    _check_image(image, mask)
    width = band_width(mask.shape)
    where = band(mask, width) & (mask < SURE_SUBJECT)
    if not where.any():
        return mask.copy()
    radius = max(FILTER_RADIUS_MIN, round(width * FILTER_RADIUS_OF_BAND))
    rows, cols = np.nonzero(where)
    alpha = _fast_guided_filter(image, mask, radius, FILTER_EPS, rows, cols)
    refined = mask.copy()
    refined[rows, cols] = np.rint(np.clip(alpha, 0.0, 1.0) * 255).astype(np.uint8)
    return refined


def _fast_guided_filter(
    image: np.ndarray, mask: np.ndarray, radius: int, eps: float, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """The refined alpha (0..1, unclipped) at the pixels (rows, cols) only.

    He and Sun's fast guided filter: the linear models are fitted on a copy
    subsampled so the window is about SUBSAMPLED_RADIUS pixels, scaled back up
    bilinearly, and applied to the full-size photo, q = a·I + b. Scaling them
    up only at the pixels asked for keeps the cost to the band's size. Where
    the photo is flat the filter only blurs the mask, so there the blur is
    taken out again: q + (1 − t)·(p − p̄), p the mask, p̄ its blur by the same
    windows and t how far from flat the windows are (0 flat, towards 1 textured).
    """
    factor = max(1, radius // SUBSAMPLED_RADIUS)
    height, width = mask.shape
    small = (math.ceil(width / factor), math.ceil(height / factor))
    guide = np.asarray(Image.fromarray(image).resize(small, Image.Resampling.BOX), dtype=np.float32) / 255
    source = np.asarray(Image.fromarray(mask).resize(small, Image.Resampling.BOX), dtype=np.float32) / 255
    model = _guided_filter_model(guide.transpose(2, 0, 1), source, max(1, round(radius / factor)), eps)
    # Full-size pixel i has its centre at (i + 0.5)·scale − 0.5 on the small grid, as in Pillow's resize.
    y = (rows + 0.5) * (small[1] / height) - 0.5
    x = (cols + 0.5) * (small[0] / width) - 0.5
    planes = _bilinear_at(model, y, x)
    colours = image[rows, cols].T.astype(np.float32) / 255
    followed = (planes[:3] * colours).sum(axis=0) + planes[3]
    blur, texture = planes[4], planes[5]
    return followed + (1 - texture) * (mask[rows, cols].astype(np.float32) / 255 - blur)


def _bilinear_at(planes: np.ndarray, y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """C×h×w `planes` read bilinearly at the points (y, x) of their grid (C×n); held beyond the edge."""
    _, height, width = planes.shape
    y = np.clip(y, 0, height - 1).astype(np.float32)
    x = np.clip(x, 0, width - 1).astype(np.float32)
    top, left = y.astype(np.intp), x.astype(np.intp)  # floor: both are non-negative
    bottom, right = np.minimum(top + 1, height - 1), np.minimum(left + 1, width - 1)
    down, across = y - top, x - left
    upper = planes[:, top, left] * (1 - across) + planes[:, top, right] * across
    lower = planes[:, bottom, left] * (1 - across) + planes[:, bottom, right] * across
    return upper * (1 - down) + lower * down


def _guided_filter_model(guide: np.ndarray, source: np.ndarray, radius: int, eps: float) -> np.ndarray:
    """Per pixel, the means over the windows it lies in of: the linear model (a, b), p̄ and t (6×H×W).

    He, Sun and Tang (2010), the colour guide: in each window
    a = (Σ + eps·U)⁻¹ · (mean(I·p) − mean(I)·mean(p)), Σ the 3×3 covariance
    of I, and b = mean(p) − a·mean(I). `guide` is 3×H×W, `source` H×W. With
    them, for refine's flat windows: p̄ = mean(p), the blur that b alone gives,
    and t = tr Σ / (tr Σ + FLAT_VARIANCE), how far from flat the window is.
    """
    red, green, blue = guide
    pairs = (red * red, red * green, red * blue, green * green, green * blue, blue * blue)
    means = _box_mean(np.stack((red, green, blue, source, *(guide * source), *pairs)), radius)
    mean_guide, mean_source, mean_cross, mean_pairs = means[0:3], means[3], means[4:7], means[7:13]
    mr, mg, mb = mean_guide
    products = (mr * mr, mr * mg, mr * mb, mg * mg, mg * mb, mb * mb)
    covariance = [pair - product for pair, product in zip(mean_pairs, products)]
    spread = np.maximum(covariance[0] + covariance[3] + covariance[5], 0)  # float rounding can dip below zero
    texture = spread / (spread + FLAT_VARIANCE)
    for diagonal in (0, 3, 5):  # the rr, gg and bb entries
        covariance[diagonal] += eps
    slopes = _solve_symmetric_3x3(covariance, mean_cross - mean_guide * mean_source)
    offset = mean_source - (slopes * mean_guide).sum(axis=0)
    return _box_mean(np.concatenate((slopes, offset[np.newaxis], mean_source[np.newaxis], texture[np.newaxis])), radius)


def _solve_symmetric_3x3(upper: list[np.ndarray], right: np.ndarray) -> np.ndarray:
    """x (3×H×W) with C·x = right at every pixel, C given by its upper entries rr, rg, rb, gg, gb, bb.

    By cofactors rather than np.linalg.solve: batched LAPACK on hundreds of
    thousands of 3×3 systems spends its time on per-matrix overhead. eps on
    the diagonal keeps C positive definite, so the determinant is never zero.
    """
    a, b, c, d, e, f = upper
    i00, i01, i02 = d * f - e * e, c * e - b * f, b * e - c * d
    i11, i12, i22 = a * f - c * c, b * c - a * e, a * d - b * b
    determinant = a * i00 + b * i01 + c * i02
    x, y, z = right
    solved = (i00 * x + i01 * y + i02 * z, i01 * x + i11 * y + i12 * z, i02 * x + i12 * y + i22 * z)
    return np.stack(solved) / determinant


# ---------------------------------------------------------------- box filters


def _box_mean(planes: np.ndarray, radius: int) -> np.ndarray:
    """Means over (2·radius+1)² windows, clipped at the border, of each of C×H×W planes (float32).

    Summed in float64: the guided filter subtracts these means from each
    other to get variances, and float32 running sums over long rows would lose them.
    """
    sums = _box_sum(planes.astype(np.float64), radius)
    return (sums / _window_area(planes.shape[-2:], radius)).astype(np.float32)


def _window_area(shape: tuple[int, ...], radius: int) -> np.ndarray:
    """How many pixels each clipped (2·radius+1)² window holds (H×W)."""
    return np.outer(_window_length(shape[0], radius), _window_length(shape[1], radius))


def _window_length(length: int, radius: int) -> np.ndarray:
    positions = np.arange(length)
    return np.minimum(positions + radius, length - 1) - np.maximum(positions - radius, 0) + 1


def _box_sum(values: np.ndarray, radius: int) -> np.ndarray:
    """Sums over (2·radius+1)² windows clipped at the border, over the last two axes; same cost at any radius.

    Both passes run along rows: a running sum down the columns of a C-ordered
    array strides through memory and took four times as long as a transposed
    copy plus a pass along rows.
    """
    across = _row_window_sum(values, radius)
    down = _row_window_sum(np.ascontiguousarray(np.swapaxes(across, -1, -2)), radius)
    return np.swapaxes(down, -1, -2)


def _row_window_sum(values: np.ndarray, radius: int, dtype: type | None = None) -> np.ndarray:
    """Sums over windows of 2·radius+1 along the last axis, clipped at the ends, counted in `dtype`."""
    length = values.shape[-1]
    # Zeros beyond each end stand for the pixels a clipped window lacks, and one
    # more in front makes window [i, i + 2r] the difference of two running sums.
    padding = [(0, 0)] * (values.ndim - 1) + [(radius + 1, radius)]
    running = np.cumsum(np.pad(values, padding), axis=-1, dtype=dtype or values.dtype)
    span = 2 * radius + 1
    return running[..., span : span + length] - running[..., :length]
