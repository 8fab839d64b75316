"""The model manifest: which ONNX models exist, where their files are, how to feed them.

Models come from two folders, each with a manifest.json: the user's models
folder (the `models_dir` setting, by default <root>/models) and the bundled
one. A name is looked up in the user's folder first, so a user can also
replace a bundled model with their own export.

Deliberately free of numpy and onnxruntime, so the supervisor can read and
verify the manifest without carrying the inference libraries in its memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

# How the photo's 0..255 values become the network's 0..1 before mean and std:
# "unit" divides by 255 (most models); "max" divides by the image's own maximum,
# which is what U²-Net's training loader did.
SCALINGS = ("unit", "max")
# What the chosen output holds: a map the daemon stretches to 0..1 as it is
# ("none"), or logits to pass through a sigmoid first (BiRefNet exports).
ACTIVATIONS = ("none", "sigmoid")
# How the photo is resized to the input size, and the mask back to the photo's:
# "lanczos" (antialiased; the default) or "bilinear", plain bilinear sampling
# without antialiasing, which is what the IS-Net exports' own JavaScript does.
RESIZES = ("lanczos", "bilinear")
# How the output becomes alpha: "stretch" maps the map's own lowest..highest to
# 0..255 (U²-Net's saliency maps); "unit" reads it as 0..1 already and clips.
MASK_RANGES = ("stretch", "unit")
REQUIRED = ("file", "sha256", "input_size", "mean", "std", "output_index", "licence", "source")
OPTIONAL = ("scale", "activation", "resize", "mask_range", "portrait_only")
# The one key of a models folder's manifest.json that is not a model: what `bgremover models verify` measured
# there, model by model (see models/paths.py). No model may take this name.
CHECKS = "checks"


class ModelError(Exception):
    """The model named in the settings cannot be used; one sentence saying why."""


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
    scale: str = "unit"  # one of SCALINGS
    activation: str = "none"  # one of ACTIVATIONS
    resize: str = "lanczos"  # one of RESIZES
    mask_range: str = "stretch"  # one of MASK_RANGES
    portrait_only: bool = False  # made for people: a session using it is told so (subject_note)


# ---------------------------------------------------------------- model


def models_dir() -> Path:
    """The folder holding the bundled manifest.json.

    An installed wheel carries it inside this subpackage (hatch force-include
    puts the repo's models/ at bgremover/models/bundled); a source checkout has
    it in the top-level models/ folder.
    """
    packaged = Path(__file__).parent / "bundled"
    return packaged if packaged.is_dir() else Path(__file__).resolve().parents[3] / "models"


def find_model_spec(name: str, user_folder: Path | None, verify: bool = True) -> ModelSpec:
    """The entry for `name` from the user's models folder if it has one, else from the bundled manifest."""
    if user_folder is not None and name in read_manifest(user_folder, missing_ok=True):
        return load_model_spec(name, user_folder, verify)
    if name in read_manifest(models_dir()):
        return load_model_spec(name, models_dir(), verify)
    known = sorted(set(read_manifest(models_dir())) | set(read_manifest(user_folder, missing_ok=True)))
    where = f"the bundled manifest or {user_folder / 'manifest.json'}" if user_folder else "the bundled manifest"
    raise ModelError(f"model '{name}' is in neither {where} (known: {', '.join(known)})")


def load_model_spec(name: str, directory: Path | None = None, verify: bool = True) -> ModelSpec:
    """Read the entry for `name` from the manifest in `directory`; with verify, check the file's sha256."""
    directory = directory or models_dir()
    manifest = read_manifest(directory)
    entry = manifest.get(name)
    if entry is None:
        known = ", ".join(sorted(manifest)) or "none"
        raise ModelError(f"model '{name}' is not in the manifest (known: {known})")
    spec = spec_from_entry(name, entry, directory)
    if not spec.path.is_file():
        raise ModelError(f"model file {spec.path} is missing")
    if verify:
        _verify_sha256(spec)
    return spec


def spec_from_entry(name: str, entry: object, directory: Path) -> ModelSpec:
    """Check one manifest entry field by field; the error names the model and the field."""
    where = f"the manifest entry for model '{name}' in {directory / 'manifest.json'}"
    if not isinstance(entry, dict):
        raise ModelError(f"{where} is not a JSON object")
    missing = [key for key in REQUIRED if key not in entry]
    if missing:
        raise ModelError(f"{where} lacks {', '.join(missing)}")
    unknown = sorted(set(entry) - set(REQUIRED) - set(OPTIONAL))
    if unknown:
        raise ModelError(f"{where} has unknown field {', '.join(unknown)} (known: {', '.join(REQUIRED + OPTIONAL)})")
    try:
        return ModelSpec(
            name=name,
            path=directory / _plain_file_name(entry["file"]),
            sha256=_sha256_text(entry["sha256"]),
            input_size=_size(entry["input_size"]),
            mean=_three(entry["mean"], "mean"),
            std=_three(entry["std"], "std", positive=True),
            output_index=_index(entry["output_index"]),
            licence=_text(entry["licence"], "licence"),
            source=_text(entry["source"], "source"),
            scale=_one_of(entry.get("scale", "unit"), SCALINGS, "scale"),
            activation=_one_of(entry.get("activation", "none"), ACTIVATIONS, "activation"),
            resize=_one_of(entry.get("resize", "lanczos"), RESIZES, "resize"),
            mask_range=_one_of(entry.get("mask_range", "stretch"), MASK_RANGES, "mask_range"),
            portrait_only=_flag(entry.get("portrait_only", False), "portrait_only"),
        )
    except ValueError as exc:
        raise ModelError(f"{where}: {exc}") from None


def subject_note(spec: ModelSpec) -> str | None:
    """The sentence a session cut by this model carries in its log and status JSON, if the model is made for people."""
    if not spec.portrait_only:
        return None
    return (
        f"{spec.name} is made for people (portraits): on products, animals or cars it can miss most of the "
        "subject; choose u2net or isnet-medium for those"
    )


def read_manifest(directory: Path | None, missing_ok: bool = False) -> dict:
    if directory is None:
        return {}
    path = directory / "manifest.json"
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        if missing_ok:
            return {}
        raise ModelError(f"model manifest {path} is missing") from None
    except (OSError, ValueError) as exc:
        raise ModelError(f"model manifest {path} cannot be read: {exc}") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"model manifest {path} is not a JSON object of model names")
    manifest.pop(CHECKS, None)
    return manifest


def read_checks(directory: Path) -> dict:
    """The checks recorded in the models folder's manifest, by model name; {} when there are none."""
    path = directory / "manifest.json"
    try:
        checks = json.loads(path.read_text(encoding="utf-8")).get(CHECKS, {})
    except (OSError, ValueError, AttributeError):
        return {}
    return checks if isinstance(checks, dict) else {}


# ---------------------------------------------------------------- one field each


def _plain_file_name(value: object) -> str:
    # A file in the manifest's own folder: an entry cannot point the daemon elsewhere.
    if not isinstance(value, str) or not value or "/" in value or value in (".", ".."):
        raise ValueError(f"file must be the name of a file beside the manifest (got {value!r})")
    return value


def _sha256_text(value: object) -> str:
    text = str(value).lower()
    if len(text) != 64 or any(ch not in "0123456789abcdef" for ch in text):
        raise ValueError(f"sha256 must be 64 hex digits, as `sha256sum FILE` prints them (got {value!r})")
    return text


def _size(value: object) -> tuple[int, int]:
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        raise ValueError(f"input_size must be [width, height] in pixels (got {value!r})")
    return value[0], value[1]


def _three(value: object, field: str, positive: bool = False) -> tuple[float, float, float]:
    numbers = isinstance(value, list) and len(value) == 3 and all(isinstance(v, (int, float)) for v in value)
    if not numbers or (positive and min(value) <= 0):
        rule = "three positive numbers" if positive else "three numbers"
        raise ValueError(f"{field} must be {rule}, one per channel R, G, B (got {value!r})")
    return float(value[0]), float(value[1]), float(value[2])


def _index(value: object) -> int:
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"output_index must be a whole number from 0 (got {value!r})")
    return value


def _text(value: object, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field} must be a non-empty text (got {value!r})")
    return value


def _flag(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{field} must be true or false (got {value!r})")
    return value


def _one_of(value: object, choices: tuple[str, ...], field: str) -> str:
    if value not in choices:
        raise ValueError(f"{field} must be one of {', '.join(choices)} (got {value!r})")
    return value


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
