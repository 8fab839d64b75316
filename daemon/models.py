"""The model manifest: which ONNX models exist, where their files are, how to feed them.

Deliberately free of numpy and onnxruntime, so the supervisor can read and
verify the manifest without carrying the inference libraries in its memory.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path


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
