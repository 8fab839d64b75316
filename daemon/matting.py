"""Background removal as pure steps: manifest → session → decode → mask → cutout → encode.

No daemon policy lives here: no retries, no exit codes, no logging. Each step
raises one of the exceptions below with a sentence fit to show a user, and the
job process decides what that means.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image, ImageChops, ImageCms, ImageOps, UnidentifiedImageError, features

FORMAT_EXTENSIONS = {"png": ".png", "webp": ".webp", "avif": ".avif"}


class ModelError(Exception):
    """The model named in the settings cannot be used; one sentence saying why."""


class BadInput(Exception):
    """The input file is not an image we can process; one sentence for the user."""


class EncoderUnavailable(Exception):
    """This installation cannot write the requested output format."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    path: Path
    sha256: str
    input_size: tuple[int, int]  # (width, height) the network expects
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    output_index: int  # which of the network's outputs is the mask
    licence: str
    source: str


# ---------------------------------------------------------------- model


def models_dir() -> Path:
    """The folder holding manifest.json.

    An installed wheel carries it inside the package (hatch force-include puts
    the repo's models/ at daemon/models); a source checkout has it beside the package.
    """
    packaged = Path(__file__).parent / "models"
    return packaged if packaged.is_dir() else Path(__file__).parent.parent / "models"


def load_model_spec(name: str, directory: Path | None = None, verify: bool = True) -> ModelSpec:
    """Read the manifest entry for `name`; with verify, check the file's sha256."""
    directory = directory or models_dir()
    entry = _read_manifest(directory).get(name)
    if entry is None:
        known = ", ".join(sorted(_read_manifest(directory))) or "none"
        raise ModelError(f"model '{name}' is not in the manifest (known: {known})")
    try:
        spec = ModelSpec(
            name=name,
            path=directory / entry["file"],
            sha256=entry["sha256"].lower(),
            input_size=(int(entry["input_size"][0]), int(entry["input_size"][1])),
            mean=tuple(float(v) for v in entry["mean"]),
            std=tuple(float(v) for v in entry["std"]),
            output_index=int(entry["output_index"]),
            licence=entry["licence"],
            source=entry["source"],
        )
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise ModelError(f"the manifest entry for model '{name}' is incomplete or malformed ({exc!r})") from None
    if not spec.path.is_file():
        raise ModelError(f"model file {spec.path} is missing")
    if verify:
        _verify_sha256(spec)
    return spec


def _read_manifest(directory: Path) -> dict:
    path = directory / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ModelError(f"model manifest {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"model manifest {path} cannot be read: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"model manifest {path} is not a JSON object of model names")
    return manifest


def _verify_sha256(spec: ModelSpec) -> None:
    digest = hashlib.sha256()
    with spec.path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    actual = digest.hexdigest()
    if actual != spec.sha256:
        raise ModelError(
            f"model file {spec.path} has sha256 {actual[:12]}…, the manifest expects "
            f"{spec.sha256[:12]}…: the file is damaged or was replaced"
        )


def create_session(spec: ModelSpec, threads: int | None = None) -> onnxruntime.InferenceSession:
    """An onnxruntime CPU session for the model; threads=None lets onnxruntime pick."""
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the job's stderr is for our own one-line messages
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one image, one graph: parallelism within operators is what helps
    try:
        session = onnxruntime.InferenceSession(str(spec.path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own classes for bad protobufs, bad graphs, ...
        raise ModelError(f"model file {spec.path} cannot be loaded by onnxruntime: {exc}") from None
    shape = session.get_inputs()[0].shape
    if list(shape[2:]) != [spec.input_size[1], spec.input_size[0]]:
        raise ModelError(f"model file {spec.path} takes input {shape}, the manifest says {list(spec.input_size)}")
    return session


# ---------------------------------------------------------------- decode


def decode(path: Path) -> tuple[Image.Image, bytes | None]:
    """The image upright, as RGB or RGBA, and its ICC profile (None if it has none or we used it up).

    The whole file is read before Pillow sees it, so an OSError from here is
    about the disk, and every problem with the content becomes BadInput.
    """
    data = Path(path).read_bytes()
    if not data:
        raise BadInput("the file is empty")
    # Pillow only warns between MAX_IMAGE_PIXELS and twice that; a warning would
    # let a huge image through to exhaust memory, so it is an error here too.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            image = Image.open(io.BytesIO(data))
            image.load()  # decode now (first frame of an animation), so truncation shows up here
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise BadInput(_bomb_sentence(exc)) from None
        except UnidentifiedImageError:
            raise BadInput("the file is not an image Pillow can read") from None
        except (OSError, SyntaxError, ValueError, EOFError):
            raise BadInput("the image is truncated or corrupt") from None
    icc = image.info.get("icc_profile") or None
    image = _upright(image)
    return _to_rgb(image, icc)


def _bomb_sentence(exc: Exception) -> str:
    limit = f"{Image.MAX_IMAGE_PIXELS:,}"
    found = re.search(r"\((\d+) pixels\)", str(exc))
    if found is None:
        return f"the image has more pixels than the decompression-bomb limit of {limit}"
    return f"the image has {int(found.group(1)):,} pixels, over the decompression-bomb limit of {limit}"


def _upright(image: Image.Image) -> Image.Image:
    try:
        return ImageOps.exif_transpose(image)
    except Exception:  # a broken EXIF block should not cost the user an otherwise good image
        return image


def _to_rgb(image: Image.Image, icc: bytes | None) -> tuple[Image.Image, bytes | None]:
    """Convert any Pillow mode to RGB, or RGBA when the image carries transparency."""
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # Pillow's own convert clips 16-bit values at 255 (all but black turns
        # white); scale the 16-bit range down to 8 bits instead.
        grey = np.asarray(image, dtype=np.float64) / 257.0
        image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))
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
    """The network input, float32 [1, 3, H, W], following U²-Net's published recipe.

    U-2-Net's own loader (RescaleT then ToTensorLab) resizes to 320×320 without
    keeping the aspect, divides by the image's maximum, then subtracts the
    ImageNet mean and divides by its std; rembg does the same with a 1e-6 floor
    on the maximum. We divide by the maximum rather than by 255 because that is
    what the weights were trained on: a dim photo is stretched so its brightest
    value is 1. The floor keeps an all-black image from dividing by zero.
    """
    rgb = image.convert("RGB").resize(spec.input_size, Image.Resampling.LANCZOS)
    pixels = np.asarray(rgb, dtype=np.float32)
    pixels = pixels / max(float(pixels.max()), 1e-6)
    pixels = (pixels - np.asarray(spec.mean, dtype=np.float32)) / np.asarray(spec.std, dtype=np.float32)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1)[np.newaxis], dtype=np.float32)


def infer(session: onnxruntime.InferenceSession, tensor: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """The raw mask (H×W float32) from the output the manifest names."""
    feed = {session.get_inputs()[0].name: tensor}
    wanted = session.get_outputs()[spec.output_index].name
    (output,) = session.run([wanted], feed)  # asking for one output spares copying the six side outputs
    return np.asarray(output, dtype=np.float32).reshape(output.shape[-2:])


def postprocess(raw: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The mask as an 8-bit 'L' image of `size` (width, height), stretched to use 0..255."""
    low, high = float(raw.min()), float(raw.max())
    if high - low < 1e-6:
        # A flat map carries no shape to stretch; keep the network's own
        # (sigmoid, 0..1) confidence rather than divide by zero.
        scaled = np.clip(raw, 0.0, 1.0)
    else:
        scaled = (raw - low) / (high - low)
    mask = Image.fromarray(np.rint(scaled * 255).astype(np.uint8))  # 2-D uint8 gives mode 'L'
    return mask.resize(size, Image.Resampling.LANCZOS)


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


# ---------------------------------------------------------------- encode


def format_for_path(path: Path | str) -> str:
    """The output format named by a file's extension, e.g. 'webp' for x.WebP."""
    suffix = Path(path).suffix.lower()
    for fmt, extension in FORMAT_EXTENSIONS.items():
        if suffix == extension:
            return fmt
    known = ", ".join(FORMAT_EXTENSIONS.values())
    raise ValueError(f"cannot tell the output format from '{Path(path).name}': the extension must be one of {known}")


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
            raise EncoderUnavailable(
                "this Pillow cannot write AVIF: upgrade to Pillow ≥ 11.3 built with libavif, "
                "or install the optional plugin (pip install 'bgremover[avif]')"
            ) from None


def encode(rgba: Image.Image, path: Path, fmt: str, quality: int, icc_profile: bytes | None) -> None:
    """Write `rgba` to exactly `path` (the caller renames it into place)."""
    ensure_encoder(fmt)
    # Always pass the profile: b"" means none, where None would let Pillow fall back to rgba.info.
    options: dict = {"icc_profile": icc_profile or b""}
    if fmt == "webp":
        # Lossy colour at the user's quality, but lossless alpha (alpha_quality=100):
        # the cut edge is the product, and lossy alpha would fray it. Full
        # lossless WebP would ignore the quality setting and run 3-5× larger on photos.
        options.update(quality=quality, alpha_quality=100, method=4)
    elif fmt == "avif":
        options.update(quality=quality)
    else:
        options.update(compress_level=6)  # PNG is lossless; quality has no meaning
    rgba.save(path, format=fmt.upper(), **options)


# ---------------------------------------------------------------- the whole pipeline


def remove_background(
    src: Path, dst: Path, fmt: str, quality: int, session: onnxruntime.InferenceSession, spec: ModelSpec
) -> dict[str, float]:
    """Cut the subject of `src` out into `dst`; returns each stage's time in ms."""
    timings: dict[str, float] = {}
    clock = time.perf_counter()

    def lap(stage: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        timings[stage] = round((now - clock) * 1000, 2)
        clock = now

    image, icc = decode(src)
    lap("decode")
    tensor = preprocess(image, spec)
    lap("preprocess")
    raw = infer(session, tensor, spec)
    lap("inference")
    mask = postprocess(raw, image.size)
    rgba = cutout(image, mask)
    lap("postprocess")
    encode(rgba, dst, fmt, quality, icc)
    lap("encode")
    return timings
