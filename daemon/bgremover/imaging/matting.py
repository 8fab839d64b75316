"""Background removal as pure steps: session → decode → mask → cutout → encode.

No daemon policy lives here: no retries, no exit codes, no logging. Each step
raises one of the exceptions below with a sentence fit to show a user, and the
job process decides what that means.
"""

from __future__ import annotations

import io
import math
import re
import shlex
import sys
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, NamedTuple

import numpy as np
import onnxruntime
import pillow_heif
from PIL import (
    ExifTags,
    Image,
    ImageChops,
    ImageCms,
    ImageColor,
    JpegImagePlugin,
    PngImagePlugin,
    UnidentifiedImageError,
    features,
)

from bgremover.formats import FORMAT_EXTENSIONS, format_for_path  # noqa: F401 - part of this module's interface
from bgremover.imaging import edges, foreground, png, quality, resample
from bgremover.models.manifest import ModelError, ModelSpec, find_model_spec, load_model_spec, models_dir  # noqa: F401 - likewise
from bgremover.models.runtime import CPU, check_providers, check_shapes, create_session, optimize  # noqa: F401 - likewise
from bgremover.options import ImageOptions, values_of

# HEIC/HEIF, what phones shoot by default, opens like any other image. libheif
# applies the file's rotation while decoding (and reports EXIF orientation 1),
# and the colour profile arrives in info["icc_profile"] as for JPEG.
pillow_heif.register_heif_opener()


class BadInput(Exception):
    """The input file is not an image we can process; one sentence for the user."""


class EncoderUnavailable(Exception):
    """This installation cannot write the requested output format."""


@dataclass(frozen=True)
class Options(ImageOptions):
    """What a job does with an image beyond the model itself: the image options (bgremover/options.py), and threads."""

    threads: int = 1  # for the PNG encoder's parallel deflate

    @classmethod
    def from_settings(cls, settings, fmt: str | None = None) -> Options:
        """The options a bgremover.settings.Settings asks for; `fmt` overrides its output_format."""
        values = values_of(settings)
        return cls(**{**values, "output_format": fmt or values["output_format"]}, threads=settings.threads)


@dataclass
class Outcome:
    timings_ms: dict[str, float] = field(default_factory=dict)
    note: str | None = None  # something the user should know about this item, e.g. it was reduced
    extra: dict = field(default_factory=dict)  # what else the caller reports (the job: its recipes, its inferences)
    review: list[dict] = field(default_factory=list)  # the quality signals of the mask kept (imaging/quality.py)
    escalated: str | None = None  # review_escalate: why the second model's mask was kept, for the item's note


@dataclass
class Second:
    """The review's second model: made only when an image needs it (compared on each, or run on a flagged one)."""

    make: Callable[[], tuple[onnxruntime.InferenceSession, ModelSpec]]
    compare: bool = False
    escalate: bool = False
    made: tuple[onnxruntime.InferenceSession, ModelSpec] | None = None

    def model(self) -> tuple[onnxruntime.InferenceSession, ModelSpec]:
        if self.made is None:
            self.made = self.make()
        return self.made


# ---------------------------------------------------------------- session


class Decoded(NamedTuple):
    image: Image.Image  # upright, RGB or RGBA
    icc: bytes | None  # its ICC profile; None if it has none or we used it up
    note: str | None = None  # set when the image was reduced to fit max_megapixels


def decode(path: Path, max_megapixels: float | None = None, large_images: str = "reduce") -> Decoded:
    """The image in the file at `path`, as decode_bytes gives it.

    The whole file is read before Pillow sees it, so an OSError from here is
    about the disk, and every problem with the content becomes BadInput.
    """
    return decode_bytes(Path(path).read_bytes(), max_megapixels, large_images)


def decode_bytes(data: bytes, max_megapixels: float | None = None, large_images: str = "reduce") -> Decoded:
    """The encoded image `data` upright, as RGB or RGBA, with its ICC profile.

    An image above `max_megapixels` is refused, or reduced to fit (a JPEG is
    then decoded at reduced scale to begin with, so it never occupies its full
    size in memory). The image is decoded whole before anything else reads it,
    so a file that does not decode whole never yields a picture.
    """
    if not data:
        raise BadInput("the file is empty")
    image = None
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a warning would
    # let a huge image through to exhaust memory, so it is an error here too.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = _open(data)
            stored_size = image.size
            _check_size(image, max_megapixels, large_images)
            image.load()  # decode now (first frame of an animation), so truncation shows up here
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadInput(_pillow_bomb_sentence(exc)) from None
        except UnidentifiedImageError:
            raise BadInput("the file is not an image Pillow can read") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise BadInput(_undecodable(exc, image)) from None
    return _settled(image, stored_size, max_megapixels)


def decode_image(image: Image.Image, max_megapixels: float | None = None, large_images: str = "reduce") -> Decoded:
    """An image already open in Pillow, taken through the same steps as a decoded file.

    Its EXIF orientation is applied and its colours brought to RGB(A) as for a
    file; the caller's image itself is left as it was.
    """
    try:
        image.load()  # an image opened lazily from a damaged file fails here, as decode_bytes would
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        raise BadInput(_undecodable(exc, image)) from None
    if large_images == "refuse" and _too_large(image.size, max_megapixels):
        raise BadInput(_refusal(image, max_megapixels))  # "reduce" is _settled's: it is decoded already
    return _settled(image, image.size, max_megapixels)


# Pillow's own decompression-bomb check reads this module global at open; it
# is lifted only while a file is opened (headers, no pixels), and _check_size
# applies the limit these settings call for instead. The lock keeps two
# threads of one process from restoring each other's value.
_OPEN_LOCK = threading.Lock()


def _open(data: bytes) -> Image.Image:
    with _OPEN_LOCK:
        pillow_limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        try:
            return Image.open(io.BytesIO(data))
        finally:
            Image.MAX_IMAGE_PIXELS = pillow_limit


def _settled(image: Image.Image, stored_size: tuple[int, int], max_megapixels: float | None) -> Decoded:
    """The loaded image upright, in RGB or RGBA, reduced to fit max_megapixels if it is over."""
    orientation = _orientation(image)
    icc = image.info.get("icc_profile") or None
    image, icc = _to_rgb(_upright(image, orientation), icc)
    if not _too_large(stored_size, max_megapixels):
        return Decoded(image, icc)
    image = _fit(image, max_megapixels)
    width, height = _shown_size(stored_size, orientation)
    note = (
        f"reduced from {width}×{height} to {image.width}×{image.height} pixels "
        f"to stay within max_megapixels = {max_megapixels:g}"
    )
    return Decoded(image, icc, note)


# EXIF orientations 2 to 8 as the transposition that shows the image upright (as ImageOps.exif_transpose has them).
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation, 1 to 8; 1 when there is none or the EXIF block is broken.

    Only the EXIF reading is guarded: a broken EXIF block should not cost the
    user an otherwise good image. Call it on a decoded image (or one whose EXIF
    precedes its pixels, see _exif_read_without_decoding): Pillow's PNG reader
    decodes the whole image to look for an eXIf chunk after the pixel data, and
    a failure there belongs to the image, not to its EXIF.
    """
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # noqa: BLE001 - any parsing failure of the EXIF block alone
        return 1
    return orientation if orientation in _UPRIGHT else 1


def _exif_read_without_decoding(image: Image.Image) -> bool:
    return not (isinstance(image, PngImagePlugin.PngImageFile) and "exif" not in image.info)


def _shown_size(size: tuple[int, int], orientation: int) -> tuple[int, int]:
    """The size as the image is shown: EXIF orientations 5 to 8 turn it a quarter."""
    return (size[1], size[0]) if orientation in (5, 6, 7, 8) else size


def _upright(image: Image.Image, orientation: int) -> Image.Image:
    method = _UPRIGHT.get(orientation)
    return image if method is None else image.transpose(method)


def _too_large(size: tuple[int, int], max_megapixels: float | None) -> bool:
    return max_megapixels is not None and size[0] * size[1] > max_megapixels * 1e6


def _check_size(image: Image.Image, max_megapixels: float | None, large_images: str) -> None:
    """Refuse an opened image over the limits, or set it to decode at reduced scale; no pixel is decoded yet."""
    if large_images == "refuse" and _too_large(image.size, max_megapixels):
        raise BadInput(_refusal(image, max_megapixels))
    limit = _pixel_limit(image, max_megapixels)
    if limit is not None and image.width * image.height > limit:
        raise BadInput(_bomb_sentence(image.width * image.height, limit))
    if _too_large(image.size, max_megapixels):
        _draft(image, max_megapixels)


# With large_images = "reduce", an image over max_megapixels is decoded, then
# fitted. The decoded image may hold up to 4 × max_megapixels: a JPEG's reduced
# decoding (draft) reaches up to that anyway (it scales by halves, so it can
# land just under twice the size in each direction), and at 3 to 4 bytes a
# pixel that is no more than the cutout of a max_megapixels image needs later
# (docs/performance.md), so decoding does not set the job's peak memory. Never
# less than Pillow's own limit: what decoded before stays decodable.
DECODED_MEGAPIXELS_PER_LIMIT = 4
JPEG_DRAFT_SHRINK = 64  # a JPEG decodes at 1/8 scale in each direction at the least


def _pixel_limit(image: Image.Image, max_megapixels: float | None) -> int | None:
    """The most pixels this image may have in the file; None for no limit.

    With "refuse" (checked before this) nothing over max_megapixels gets here.
    """
    pillow = Image.MAX_IMAGE_PIXELS
    if max_megapixels is None or pillow is None:
        return pillow
    decoded = max(pillow, int(DECODED_MEGAPIXELS_PER_LIMIT * max_megapixels * 1e6))
    return decoded * JPEG_DRAFT_SHRINK if _is_jpeg(image) else decoded


def _is_jpeg(image: Image.Image) -> bool:
    return isinstance(image, JpegImagePlugin.JpegImageFile)  # cameras' MPO files are JPEGs too


def _refusal(image: Image.Image, max_megapixels: float) -> str:
    orientation = _orientation(image) if _exif_read_without_decoding(image) else 1
    shown_width, shown_height = _shown_size(image.size, orientation)
    megapixels = shown_width * shown_height / 1e6
    # One decimal reads best, unless it rounds down onto the limit ("1.0, more than 1").
    shown = f"{megapixels:.1f}" if round(megapixels, 1) > max_megapixels else f"{megapixels:.3f}"
    return (
        f"the image has {shown} megapixels ({shown_width}×{shown_height}), more than "
        f'max_megapixels = {max_megapixels:g}; raise that setting or set large_images = "reduce"'
    )


def _draft(image: Image.Image, max_megapixels: float) -> None:
    if _is_jpeg(image):
        # JPEG can decode at 1/2, 1/4 or 1/8 scale directly; draft picks the
        # smallest of those that is still at least the size we ask for.
        width, height = image.size
        scale = math.sqrt(max_megapixels * 1e6 / (width * height))
        image.draft(image.mode, (max(1, int(width * scale)), max(1, int(height * scale))))


def _fit(image: Image.Image, max_megapixels: float) -> Image.Image:
    pixels = image.width * image.height
    if pixels <= max_megapixels * 1e6:
        return image
    scale = math.sqrt(max_megapixels * 1e6 / pixels)
    size = (max(1, math.floor(image.width * scale)), max(1, math.floor(image.height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _bomb_sentence(pixels: int, limit: int) -> str:
    return f"the image has {pixels:,} pixels, over the decompression-bomb limit of {limit:,}"


def _pillow_bomb_sentence(exc: Exception) -> str:
    """For the checks Pillow's readers make themselves while decoding (a GIF frame, an icon's sizes)."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found is None:
        return f"the image has more pixels than the decompression-bomb limit of {Image.MAX_IMAGE_PIXELS:,}"
    return _bomb_sentence(int(found.group(1)), Image.MAX_IMAGE_PIXELS)


# TIFF compressions that libtiff decodes only when built with their library:
# a file using one is valid, and a build without it must say so rather than
# call the file damaged. Pillow's wheels, for one, come without WebP.
OPTIONAL_TIFF_COMPRESSIONS = {
    "webp": "WebP",
    "zstd": "Zstandard",
    "lzma": "LZMA",
    "tiff_sgilog": "SGI LogLuv",
    "tiff_sgilog24": "SGI LogLuv",
    "tiff_thunderscan": "ThunderScan",
}


def _undecodable(exc: Exception, image: Image.Image | None) -> str:
    """One sentence for a file Pillow opened or began to, but could not decode."""
    variant = _unsupported_variant(exc, image)
    if variant is not None:
        return f"the image uses a variant this build cannot decode: {variant}"
    return "the image is truncated or corrupt"


def _unsupported_variant(exc: Exception, image: Image.Image | None) -> str | None:
    """What a file uses that this build lacks, or None if it looks damaged instead.

    Pillow's readers say "Unsupported …" of a layout they know to be valid but
    do not implement (BMP bitfields, a 2-bit BMP); libtiff's missing codecs
    only show as a decoder error, so the file's own compression tells.
    """
    message = str(exc)
    if message.lower().startswith("unsupported "):
        return message[len("unsupported ") :]
    if found := re.fullmatch(r"decoder (\S+) not available", message):
        return f"no {found.group(1)} decoder"
    compression = image.info.get("compression") if image is not None and image.format == "TIFF" else None
    if compression in OPTIONAL_TIFF_COMPRESSIONS:
        return f"TIFF compression ({OPTIONAL_TIFF_COMPRESSIONS[compression]})"
    return None


def _to_rgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Convert any Pillow mode to RGB, or RGBA when the image carries transparency."""
    if image.mode in WIDE_GREY_MODES:
        image = _eight_bit(image)
    if icc is not None and _icc_colour_space(icc) != b"RGB ":
        # A CMYK or grey profile cannot describe our RGB output: convert the
        # colours to sRGB through it, and drop it (untagged output means sRGB).
        image = _profile_to_srgb(image, icc)
        icc = None
    target = "RGBA" if image.has_transparency_data else "RGB"
    try:
        return image.convert(target), icc
    except ValueError:
        raise BadInput(f"the image uses colour mode {image.mode}, which cannot be converted to RGB") from None


# Grey images of more than 8 bits. Pillow's own convert clips their values at
# 255: a 16-bit or 32-bit image turns white but for its blacks, and a float
# image, whose values are 0..1, turns black.
WIDE_GREY_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I", "F")


def _eight_bit(image: Image.Image) -> Image.Image:
    """A wide grey image as 8-bit 'L', its black..white range (_black_and_white) spread over 0..255."""
    values = np.asarray(image, dtype=np.float32)
    black, white = _black_and_white(values, image.mode)
    scaled = (values - black) * (255.0 / max(white - black, 1e-12))
    scaled = np.nan_to_num(scaled, nan=0.0, posinf=255.0, neginf=0.0)  # values that are no number are black
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))


def _black_and_white(values: np.ndarray, mode: str) -> tuple[float, float]:
    """The values shown as black and as white.

    16-bit samples span 0..65535 ("I;16", and "I", in which Pillow also holds
    the 16-bit samples of some formats, while the values stay within 16 bits).
    Float samples span 0..1 by convention (what Photoshop, GIMP and most tools
    write), so a dim picture stays dim. Beyond those ranges (32-bit integers,
    HDR or measured floats) no convention says where white lies, so the data's
    own range is used, from 0 (or its lowest value, if below 0) to its highest:
    the picture shows, and its black stays black.
    """
    finite = values[np.isfinite(values)]
    low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
    if mode.startswith("I;16") or (mode == "I" and low >= 0 and high <= 65535):
        return 0.0, 65535.0
    if mode == "F" and low >= 0 and high <= 1:
        return 0.0, 1.0
    return min(low, 0.0), high


def _icc_colour_space(icc: bytes) -> bytes:
    return icc[16:20]  # the ICC header's data colour space signature, e.g. b"RGB ", b"CMYK", b"GRAY"


def _profile_to_srgb(image: Image.Image, icc: bytes) -> Image.Image:
    if image.mode not in ("CMYK", "L", "LA", "RGB", "RGBA"):
        return image
    alpha = image.getchannel("A") if image.mode in ("LA", "RGBA") else None
    base = image.convert({"LA": "L", "RGBA": "RGB"}.get(image.mode, image.mode))
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        converted = ImageCms.profileToProfile(base, source, ImageCms.createProfile("sRGB"), outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError):
        return image  # an unusable profile: fall back to Pillow's plain conversion
    if alpha is not None:
        converted.putalpha(alpha)
    return converted


# ---------------------------------------------------------------- model input and output


def preprocess(image: Image.Image, spec: ModelSpec) -> np.ndarray:
    """The network input, float32 [1, 3, H, W], as the manifest describes it.

    The photo is resized to the input size without keeping the aspect (the
    mask is stretched back afterwards) with the entry's `resize` filter,
    brought to 0..1 and normalised with the manifest's mean and std. Most models divide by 255. U²-Net's own loader
    (RescaleT then ToTensorLab) divides by the image's maximum instead, and its
    weights were trained on that: a dim photo is stretched so its brightest
    value is 1; the manifest says so with scale "max". The 1e-6 floor keeps an
    all-black image from dividing by zero.
    """
    levels = resized_for_model(image.convert("RGB"), spec)
    # One float copy, in the network's channel-first order, normalised in place: a fresh
    # job faults in every new array, and at 1024×1024 each is 12 MB.
    planes = np.ascontiguousarray(levels.transpose(2, 0, 1), dtype=np.float32)
    planes /= max(float(levels.max()), 1e-6) if spec.scale == "max" else 255.0
    planes -= np.asarray(spec.mean, dtype=np.float32)[:, np.newaxis, np.newaxis]
    planes /= np.asarray(spec.std, dtype=np.float32)[:, np.newaxis, np.newaxis]
    return planes[np.newaxis]


def resized_for_model(rgb: Image.Image, spec: ModelSpec) -> np.ndarray:
    """The photo at the network's input size, 8 bits a channel, by the entry's `resize` filter."""
    if spec.resize == "bilinear":
        return resample.bilinear(np.asarray(rgb), spec.input_size)
    return np.asarray(_shrink_for_model(rgb, spec.input_size).resize(spec.input_size, Image.Resampling.LANCZOS))


def _shrink_for_model(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Box-average a big photo by a whole factor first, keeping at least twice the model's size.

    LANCZOS from 2000×1500 straight down to 320×320 weighs about 60 source
    pixels per output pixel in each direction; halving with a box filter first
    gives nearly the same input (the box only acts far below what the second
    resize keeps) at half the cost, the same trade Pillow's reducing_gap makes.
    """
    factor = int(min(image.width / size[0], image.height / size[1]) // 2)
    return image.reduce(factor) if factor >= 2 else image


def blank_input(spec: ModelSpec) -> np.ndarray:
    """A network input of the right shape holding no image (mid-grey after normalisation)."""
    return np.zeros((1, 3, spec.input_size[1], spec.input_size[0]), dtype=np.float32)


def infer(session: onnxruntime.InferenceSession, tensor: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The raw mask (H×W float32) from the output the manifest names, through its activation."""
    feed = {session.get_inputs()[0].name: tensor}
    wanted = session.get_outputs()[spec.output_index].name
    (output,) = session.run([wanted], feed)  # asking for one output spares copying the six side outputs
    raw = np.asarray(output, dtype=np.float32).reshape(output.shape[-2:])
    if spec.activation == "sigmoid":
        raw = 1.0 / (1.0 + np.exp(-raw))
    return raw


def postprocess(raw: np.ndarray, size: tuple[int, int], spec: ModelSpec) -> Image.Image:
    """The mask as an 8-bit 'L' image of `size` (width, height), by the entry's mask_range and resize."""
    levels = _stretched(raw) if spec.mask_range == "stretch" else _unit(raw)
    if spec.resize == "bilinear":
        return Image.fromarray(resample.bilinear(levels, size))  # 2-D uint8 gives mode 'L'
    return Image.fromarray(levels).resize(size, Image.Resampling.LANCZOS)


def _stretched(raw: np.ndarray) -> np.ndarray:
    """The map's own lowest..highest as 0..255: a saliency map's scale is its own."""
    low, high = float(raw.min()), float(raw.max())
    if high - low < 1e-6:
        # A flat map carries no shape to stretch; keep the network's own
        # (sigmoid, 0..1) confidence rather than divide by zero.
        scaled = np.clip(raw, 0.0, 1.0)
    else:
        scaled = (raw - low) / (high - low)
    return np.rint(scaled * 255).astype(np.uint8)


def _unit(raw: np.ndarray) -> np.ndarray:
    """A map that is alpha already (0..1) as 0..255, cut down to whole levels as the IS-Net package does."""
    return np.floor(np.clip(raw, 0.0, 1.0) * 255).astype(np.uint8)


def with_edges(mask: Image.Image, image: Image.Image, mode: str) -> Image.Image:
    """The mask with its edge treated as the `edges` setting asks; "raw" leaves it as the model gave it."""
    if mode == "raw":
        return mask
    treated = edges.apply(mode, np.asarray(mask), np.asarray(image.convert("RGB")))
    return Image.fromarray(treated)


def cutout(image: Image.Image, mask: Image.Image) -> Image.Image:
    """RGBA with straight alpha: the original colours untouched, alpha from the mask.

    If the source already had transparency we multiply the two alphas, so what
    the source hid stays hidden and the mask can only remove more.
    """
    alpha = mask
    if image.mode == "RGBA":
        alpha = ImageChops.multiply(image.getchannel("A"), mask)
    # merge builds a fresh image without the source's info: no EXIF (its
    # orientation is already applied; GPS stays private) and no profile unless
    # encode is given one explicitly.
    return Image.merge("RGBA", (*image.convert("RGB").split(), alpha))


def decontaminated(rgba: Image.Image) -> Image.Image:
    """The cutout with the subject's own colour estimated where its alpha is partial; alpha untouched."""
    pixels = np.array(rgba)  # a writable copy: the estimates go straight into its colour channels
    for where, colours in foreground.estimates(pixels[..., :3], np.ascontiguousarray(pixels[..., 3])):
        pixels[where + (slice(0, 3),)] = colours
    return Image.fromarray(pixels, "RGBA")


# ---------------------------------------------------------------- encode


def ensure_encoder(fmt: str) -> None:
    """Raise EncoderUnavailable unless this Pillow can write `fmt` (with alpha)."""
    if fmt not in FORMAT_EXTENSIONS:
        raise EncoderUnavailable(f"unknown output format '{fmt}' (known: {', '.join(FORMAT_EXTENSIONS)})")
    if fmt == "webp" and not features.check("webp"):
        raise EncoderUnavailable("this Pillow was built without WebP support")
    if fmt == "avif" and not features.check("avif"):
        try:
            import pillow_avif  # noqa: F401  (registering the AVIF plugin is its import side effect)
        except ImportError:
            raise EncoderUnavailable(avif_unavailable()) from None


AVIF_PLUGIN = "pillow-avif-plugin"  # what pyproject.toml's `avif` extra installs; it provides pillow_avif


def avif_unavailable() -> str:
    """Why AVIF cannot be written, with the command that adds the plugin to the environment running now.

    The command names this interpreter, so it installs into the venv bgremover
    runs from (/opt/bgremover under the shipped unit), wherever the reader's
    shell finds `pip`; and it names the plugin itself, not the `avif` extra,
    which only resolves where this bgremover is already installed.
    """
    install = f"{shlex.quote(sys.executable)} -m pip install {AVIF_PLUGIN}"
    return (
        "this Pillow cannot write AVIF: upgrade to Pillow ≥ 11.3 built with libavif, "
        f"or install the optional plugin ({install})"
    )


SUBJECT_ALPHA = 128  # a pixel at least half opaque belongs to the subject's box


def subject_box(rgba: Image.Image) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) around the pixels at least half opaque; None if there are none."""
    return rgba.getchannel("A").point(lambda a: 255 if a >= SUBJECT_ALPHA else 0).getbbox()


def framed(rgba: Image.Image, options: Options) -> Image.Image:
    """The cutout cropped to its subject, or centred on a square canvas, as `crop` asks.

    An image in which the model found no subject is left as it is: a crop to
    nothing would lose the picture, and the mask already says what was found.
    """
    box = subject_box(rgba) if options.crop != "none" else None
    if box is None:
        return rgba
    if options.crop == "subject":
        left, top, right, bottom = box
        pad = round(max(right - left, bottom - top) * options.margin / 100)
        return rgba.crop(
            (max(0, left - pad), max(0, top - pad), min(rgba.width, right + pad), min(rgba.height, bottom + pad))
        )
    return on_square(rgba.crop(box), options)


def on_square(subject: Image.Image, options: Options) -> Image.Image:
    """The subject centred on a transparent square whose side its longer side spans `fill` percent of.

    With `size`, the subject is scaled first, so it spans `fill` percent of
    exactly `size` pixels rather than of a small canvas blown up later.
    """
    longer = max(subject.size)
    if options.size:
        side = options.size
        scale = side * options.fill / 100 / longer
        subject = subject.resize(
            (max(1, round(subject.width * scale)), max(1, round(subject.height * scale))), Image.Resampling.LANCZOS
        )
    else:
        side = max(longer, round(longer * 100 / options.fill))
    canvas = Image.new("RGBA", (side, side), (0, 0, 0, 0))  # the background colour, if any, comes at encode
    canvas.paste(subject, ((side - subject.width) // 2, (side - subject.height) // 2))
    return canvas


def write_mask(rgba: Image.Image, path: Path | BinaryIO, options: Options) -> None:
    """The cutout's alpha alone, framed like the cutout, as an 8-bit grey PNG (lossless: it is a matte)."""
    png.write_png(path, np.asarray(rgba.getchannel("A")), level=options.png_compress_level, threads=options.threads)


def on_background(rgba: Image.Image, colour: str) -> Image.Image:
    """The cutout composited over a solid colour: RGB, exactly `colour` wherever alpha was 0."""
    backdrop = Image.new("RGBA", rgba.size, ImageColor.getrgb(colour)[:3] + (255,))
    return Image.alpha_composite(backdrop, rgba).convert("RGB")


def encode(rgba: Image.Image, path: Path | BinaryIO, icc_profile: bytes | None, options: Options) -> None:
    """Write `rgba` to exactly `path` (the caller renames it into place), on the background if one is set."""
    fmt = options.output_format
    ensure_encoder(fmt)
    if options.background != "transparent":
        rgba = on_background(rgba, options.background)
    elif fmt == "jpeg":
        raise EncoderUnavailable('JPEG cannot keep transparency: set background to a colour, e.g. "white"')
    if fmt == "png":
        # Our own writer: the same lossless PNG as Pillow's at a low level, but
        # the deflate runs on every core (see imaging/png.py).
        png.write_png(
            path, np.asarray(rgba), icc_profile=icc_profile, level=options.png_compress_level, threads=options.threads
        )
        return
    # Always pass the profile: b"" means none, where None would let Pillow fall back to rgba.info.
    extra: dict = {"icc_profile": icc_profile or b"", "quality": options.quality}
    if fmt == "jpeg":
        extra.update(optimize=False, subsampling="4:2:0" if options.quality < 90 else "4:4:4")
    elif fmt == "webp":
        # Lossy colour at the user's quality, but lossless alpha (alpha_quality=100):
        # the cut edge is the product, and lossy alpha would fray it. Full
        # lossless WebP would ignore the quality setting and run 3-5× larger on photos.
        extra.update(alpha_quality=100, method=options.webp_method)
    else:
        extra.update(speed=options.avif_speed)
    rgba.save(path, format=fmt.upper(), **extra)


# ---------------------------------------------------------------- the whole pipeline


# What a caller does with the unframed cutout once the result is written (the job's recipes):
# given the cutout, the photo's profile and the lap clock.
Then = Callable[[Image.Image, bytes | None, Callable[[str], None]], None]


def remove_background(
    src: Path,
    dst: Path,
    session: onnxruntime.InferenceSession,
    spec: ModelSpec,
    options: Options = Options(),
    mask_dst: Path | None = None,
    then: Then | None = None,
    alpha: Path | None = None,
    second: Second | None = None,
) -> Outcome:
    """Cut the subject of `src` out into `dst` (and its mask into `mask_dst` with output "both").

    The outcome holds each stage's time in ms and the quality signals of the
    mask (with `second`, a second model's view of it too). With output "mask",
    `dst` gets the mask. `dst` and `mask_dst` may be paths or binary files open
    for writing. `then`, if given, gets the whole unframed cutout afterwards,
    from the same one inference. `alpha`: a person's mask, used instead of the
    model's (no signals are raised on it).
    """
    outcome, lap = timed()
    decoded = decode(src, options.max_megapixels, options.large_images)
    outcome.note = decoded.note
    lap("decode")
    if alpha is not None:
        mask = given_mask(alpha, decoded.image.size, options)
        lap("mask")
    else:
        mask = judged_mask(decoded.image, session, spec, outcome, lap, second)
    unframed = unframed_from(decoded.image, mask, options)
    rgba = framed(unframed, options)
    lap("postprocess")
    write_result(rgba, decoded.icc, options, dst, mask_dst)
    lap("encode")
    if then is not None:
        then(unframed, decoded.icc, lap)
    return outcome


def timed() -> tuple[Outcome, Callable[[str], None]]:
    """A fresh outcome, and `lap(stage)`, which records the ms since the previous lap under `stage`."""
    outcome = Outcome()
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        # Added up: a stage met twice (postprocess, around the review's signals) counts both times.
        outcome.timings_ms[stage] = round(outcome.timings_ms.get(stage, 0.0) + (now - clock) * 1000, 2)
        clock = now

    return outcome, lap


def matte(
    image: Image.Image,
    session: onnxruntime.InferenceSession,
    spec: ModelSpec,
    options: Options,
    lap: Callable[[str], None] = lambda stage: None,
) -> Image.Image:
    """The decoded image's framed RGBA cutout: model input, inference, mask, edges, cutout, framing."""
    rgba = finished(image, model_mask(image, session, spec, lap), options)
    lap("postprocess")
    return rgba


def model_mask(
    image: Image.Image,
    session: onnxruntime.InferenceSession,
    spec: ModelSpec,
    lap: Callable[[str], None] = lambda stage: None,
    stage: str = "inference",
) -> Image.Image:
    """The model's own mask of the image, at the image's size, before any edge treatment."""
    tensor = preprocess(image, spec)
    lap("preprocess" if stage == "inference" else f"{stage}_preprocess")
    raw = infer(session, tensor, spec)
    lap(stage)
    return postprocess(raw, image.size, spec)


def finished(image: Image.Image, mask: Image.Image, options: Options) -> Image.Image:
    """The framed RGBA cutout from the image and its mask: edges, cutout, decontamination, framing."""
    return framed(unframed_from(image, mask, options), options)


def unframed_from(image: Image.Image, mask: Image.Image, options: Options) -> Image.Image:
    """The whole photo's RGBA cutout from its mask, before any framing: edges, cutout, decontamination."""
    rgba = cutout(image, with_edges(mask, image, options.edges))
    return decontaminated(rgba) if options.decontaminate else rgba


def judged_mask(
    image: Image.Image,
    session: onnxruntime.InferenceSession,
    spec: ModelSpec,
    outcome: Outcome,
    lap: Callable[[str], None],
    second: Second | None = None,
) -> Image.Image:
    """The model's mask and its quality signals (in `outcome`); with `second`, compared or escalated.

    Escalated, an image flagged by a signal a stronger model may clear runs with
    the second model, whose mask is kept unless it raises more signals than the first's.
    """
    mask = model_mask(image, session, spec, lap)
    lap("postprocess")
    small = signal_mask(mask)
    other = None
    if second is not None and second.compare:
        other = model_mask(image, *second.model(), lap, stage="review_inference")
        lap("review")
    outcome.review = quality.signals(small, signal_mask(other) if other is not None else None)
    lap("review")
    if quality.worth_escalating(outcome.review) and second is not None and second.escalate:
        if other is None:
            other = model_mask(image, *second.model(), lap, stage="review_inference")
            lap("review")
        theirs = quality.signals(signal_mask(other), small if second.compare else None)
        if len(theirs) <= len(outcome.review):
            raised = ", ".join(signal["code"] for signal in outcome.review)
            outcome.escalated = f"cut out with {second.model()[1].name}, since {spec.name}'s mask raised {raised}"
            mask, outcome.review = other, theirs
        lap("review")
    return mask


def signal_mask(mask: Image.Image) -> np.ndarray:
    """The mask at the size its quality signals are measured at (imaging/quality.py)."""
    return np.asarray(mask.resize(quality.small_size(mask.size), Image.Resampling.BILINEAR))


def given_mask(path: Path, size: tuple[int, int], options: Options) -> Image.Image:
    """A person's mask as the alpha of an image of `size`: its alpha channel if it has one in use, else its grey.

    A mask of another size is scaled to the image's, if its shape is the image's
    (within 2 %); one of another shape is refused (BadInput).
    """
    given = decode(path, options.max_megapixels, options.large_images).image
    if given.mode in ("RGBA", "LA") and given.getchannel("A").getextrema()[0] < 255:
        mask = given.getchannel("A")
    else:
        mask = given.convert("L")
    if mask.size != size:
        (width, height), (image_width, image_height) = mask.size, size
        if abs(width / height - image_width / image_height) > 0.02 * image_width / image_height:
            raise BadInput(
                f"the corrected mask is {width}x{height} and the photo {image_width}x{image_height}: "
                "a mask must have the photo's shape"
            )
        mask = mask.resize(size, Image.Resampling.BILINEAR)
    return mask


def write_result(
    rgba: Image.Image,
    icc: bytes | None,
    options: Options,
    dst: Path | BinaryIO,
    mask_dst: Path | BinaryIO | None,
) -> None:
    """What `output` asks for: the cutout into `dst`; or the mask into `dst`; or both, the mask into `mask_dst`."""
    if options.output in ("mask", "both"):
        write_mask(rgba, mask_dst if options.output == "both" else dst, options)
    if options.output != "mask":
        encode(rgba, dst, icc, options)
