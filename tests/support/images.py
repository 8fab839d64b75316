"""Helpers that make test images with known properties.

Everything here is deterministic (seeded) and small, so tests stay fast on two
cores. Functions that write files take the destination path first and return it.
"""

from __future__ import annotations

import functools
import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image, ImageCms

PHOTOS = Path(__file__).resolve().parent.parent.parent / "daemon" / "bgremover" / "bench" / "photos"
PHOTO_NAMES = ("astronaut", "coffee", "chelsea")


def photo(name: str = "astronaut") -> Path:
    """Path of one of the committed real photos (JPEG, 400 px on the long side)."""
    path = PHOTOS / f"{name}.jpg"
    assert path.is_file(), f"missing test photo {path}"
    return path


def shape_on_texture(
    size: tuple[int, int] = (320, 240), shape: str = "disc", seed: int = 0
) -> tuple[Image.Image, np.ndarray]:
    """A saturated red shape centred on a grey, striped, noisy background.

    Returns the RGB image and the shape's true mask (bool, height × width). The
    shape covers about a third of the frame: the kind of salient object U²-Net
    was trained to find, with a texture that is busy but clearly background.
    shape is "disc" or "square".
    """
    width, height = size
    rng = np.random.default_rng(seed)
    ys, xs = np.mgrid[0:height, 0:width]
    stripes = np.where((xs + ys) // 12 % 2 == 0, 150.0, 110.0)
    grey = stripes + rng.normal(0, 12, (height, width))
    pixels = np.repeat(np.clip(grey, 0, 255)[..., None], 3, axis=2)

    radius = 0.3 * min(width, height)
    dx, dy = xs - width / 2, ys - height / 2
    if shape == "disc":
        mask = dx**2 + dy**2 <= radius**2
    elif shape == "square":
        mask = (np.abs(dx) <= radius) & (np.abs(dy) <= radius)
    else:
        raise ValueError(f"unknown shape {shape!r}; use 'disc' or 'square'")
    pixels[mask] = (220, 30, 30)
    return Image.fromarray(pixels.astype(np.uint8)), mask


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boolean masks of the same shape."""
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def write_jpeg_with_exif_orientation(
    path: Path, image: Image.Image, orientation: int, icc: bytes | None = None
) -> Path:
    """Save `image` as JPEG with the EXIF Orientation tag (0x0112) set to `orientation` (1..8).

    The pixels are stored as given; a viewer honouring the tag rotates them
    (6: 90° clockwise, 8: 90° counter-clockwise, both swap width and height).
    `icc`, if given, is embedded as the ICC profile.
    """
    exif = Image.Exif()
    exif[0x0112] = orientation
    extra = {"icc_profile": icc} if icc else {}
    image.convert("RGB").save(path, "JPEG", quality=90, exif=exif.tobytes(), **extra)
    return path


@functools.cache
def srgb_icc_profile() -> bytes:
    """The bytes of a valid RGB ICC profile (LittleCMS's sRGB).

    Images made by these helpers carry no profile otherwise, so finding these
    exact bytes in an output proves the profile was carried through. Cached:
    LittleCMS stamps each new profile with the current time.
    """
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def write_with_icc(path: Path, image: Image.Image, fmt: str, icc: bytes | None = None) -> Path:
    """Save `image` in Pillow format `fmt` ("JPEG", "PNG", "WEBP", ...) with an embedded ICC profile.

    Returns the path; the profile bytes default to srgb_icc_profile().
    """
    icc = icc or srgb_icc_profile()
    if fmt.upper() == "JPEG":
        image = image.convert("RGB")
    image.save(path, fmt.upper(), icc_profile=icc)
    return path


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    """Copy the first `keep` fraction of `src` to `dst`, like an upload cut off mid-way."""
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: max(1, int(len(data) * keep))])
    return dst


def write_decompression_bomb_png(path: Path, size: tuple[int, int] = (20000, 10000)) -> Path:
    """A valid, all-black 1-bit PNG of `size` pixels that is only tens of KB on disk.

    The default 200 M pixels is over twice Pillow's default MAX_IMAGE_PIXELS
    (89,478,485), so Pillow raises DecompressionBombError when opening it.
    Rows are compressed as a stream, so the image is never held in memory.
    """
    width, height = size
    row = b"\x00" * (1 + (width + 7) // 8)  # filter byte 0, then packed 1-bit pixels
    packer = zlib.compressobj(9)
    idat = b"".join(packer.compress(row) for _ in range(height)) + packer.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # bit depth 1, greyscale
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    Path(path).write_bytes(png)
    return path


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    """`image` saved in memory in Pillow format `fmt`; handy for building odd inputs."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def fur_over_green(folder: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """The fur ball over the green wall (bench/composites.py) as a PNG file, with its true alpha and colour."""
    from bgremover.bench import composites

    alpha, colour = composites.subject("fur ball")
    path = folder / "fur.png"
    Image.fromarray(composites.composite(alpha, colour, composites.background("green wall"))).save(path)
    return path, alpha, colour
