"""Inference paths as data: each backend × precision, the gate a path must pass, and what `auto` chooses.

A path is allowed for a model only where `bgremover models verify` measured it
on this machine's CPU features against fp32 onnxruntime: mean IoU at least
0.995 and lowest at least 0.98 over the project's own photos. The record
lives in the models folder's manifest (its `checks` key), beside the model's
checksum and the CPU features it was measured on, so a replaced model file or
a move to another CPU makes it stale and `auto` falls back to fp32
onnxruntime until the check runs again.

Free of numpy, onnxruntime and openvino: the supervisor reads it.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from bgremover.models.manifest import ModelError, ModelSpec, read_checks

BACKENDS = ("onnxruntime", "openvino")
PRECISIONS = ("fp32", "bf16", "int8")
# What each backend can compute on a CPU; int8 needs the variant `models quantize` made.
OFFERED = {"onnxruntime": ("fp32", "int8"), "openvino": ("fp32", "bf16", "int8")}
REFERENCE = ("onnxruntime", "fp32")  # what every other path is measured against
NOT_INSTALLED = {
    "openvino": "the openvino backend needs OpenVINO, which is not installed: pip install 'bgremover[openvino]'"
}
MIN_MEAN_IOU = 0.995
MIN_LOWEST_IOU = 0.98
# `auto` leaves fp32 onnxruntime only for a path measured at most this share of its CPU time: two runs of one
# path on a shared machine differ by a few percent, and that is no reason to change backends.
WORTH_A_CHANGE = 0.9
# The flags that change which kernels a backend runs (and so what a lower precision computes).
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class InferencePath:
    """One way to run a model: the backend, the precision and the ONNX file it reads."""

    backend: str
    precision: str
    file: Path

    @property
    def name(self) -> str:
        return f"{self.backend}/{self.precision}"


def cpu_features(cpuinfo: Path = Path("/proc/cpuinfo")) -> list[str]:
    """The CPU flags of CPU_FLAGS this machine has, in that order; a record holds them."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return []
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    return [flag for flag in CPU_FLAGS if flag in flags]


def passes(record: dict) -> bool:
    """The gate: a path may be used only if its masks agree with fp32 onnxruntime this closely."""
    return record.get("mean_iou", 0.0) >= MIN_MEAN_IOU and record.get("lowest_iou", 0.0) >= MIN_LOWEST_IOU


def variant_file(spec: ModelSpec, folder: Path, precision: str) -> Path | None:
    """The model's registered variant for `precision`, if one was made for this very model file.

    int8: the QDQ model `models quantize` made. bf16: the OpenVINO IR with its
    last convolutions kept in fp32, which `models verify` makes when plain bf16
    fails the gate (tuning/mixed.py).
    """
    variant = read_checks(folder).get(spec.name, {}).get(precision)
    if not isinstance(variant, dict) or variant.get("of") != spec.sha256:
        return None
    path = folder / str(variant.get("file", ""))
    return path if path.is_file() and path.parent == folder else None


def path_for(spec: ModelSpec, folder: Path | None, backend: str, precision: str) -> InferencePath:
    """The path asked for, by name; one sentence when it cannot be taken."""
    if backend not in BACKENDS:
        raise ModelError(f"unknown backend '{backend}' (known: {', '.join(BACKENDS)})")
    if precision not in OFFERED[backend]:
        offered = ", ".join(OFFERED[backend])
        raise ModelError(f"there is no {backend}/{precision} path: {backend} offers {offered} on the CPU")
    if precision == "bf16":
        variant = variant_file(spec, folder, "bf16") if folder is not None else None
        return InferencePath(backend, precision, variant or spec.path)
    if precision != "int8":
        return InferencePath(backend, precision, spec.path)
    variant = variant_file(spec, folder, "int8") if folder is not None else None
    if variant is None:
        raise ModelError(
            f"model {spec.name} has no INT8 variant that passed its check: run `bgremover models quantize {spec.name}`"
        )
    return InferencePath(backend, precision, variant)


def current_records(spec: ModelSpec, folder: Path | None, features: list[str] | None = None) -> dict:
    """The model's checked paths, by name, if they were measured on this model file and these CPU features."""
    if folder is None:
        return {}
    check = read_checks(folder).get(spec.name, {})
    if check.get("sha256") != spec.sha256 or check.get("cpu") != (cpu_features() if features is None else features):
        return {}
    paths = check.get("paths", {})
    return paths if isinstance(paths, dict) else {}


def choose(spec: ModelSpec, folder: Path | None, backend: str, precision: str) -> InferencePath:
    """The path a job runs: the backend and precision named, or with `auto` the passed path cheapest per image, else fp32.

    `auto` chooses the backend too, among those installed (OpenVINO is an
    extra), and falls back to fp32 onnxruntime where no path passed.
    """
    if backend in BACKENDS and not installed(backend):
        raise ModelError(NOT_INSTALLED[backend])  # named in the settings or a ticket: never quietly another
    if precision != "auto":
        return path_for(spec, folder, backend, precision)
    records = current_records(spec, folder)
    reference = per_image(records.get("/".join(REFERENCE), {}))
    passed = [
        (per_image(record), name)
        for name, record in records.items()
        if passes(record)
        and per_image(record) is not None
        and installed(name.split("/", 1)[0])
        and (reference is None or per_image(record) <= WORTH_A_CHANGE * reference)
    ]
    for _, name in sorted(passed):
        try:
            return path_for(spec, folder, *name.split("/", 1))
        except ModelError:
            continue  # an unknown name, or its INT8 variant is gone since: the next fastest
    return InferencePath(*REFERENCE, spec.path)


def auto_line(spec: ModelSpec, folder: Path | None) -> str:
    """What `precision = "auto"` runs for the model and why, in one line (`bgremover models list` shows it)."""
    chosen, reference = choose(spec, folder, REFERENCE[0], "auto"), "/".join(REFERENCE)
    records = current_records(spec, folder)
    said = f"precision auto runs {chosen.name}"
    if not records:
        return f"{said}: not checked on this CPU (bgremover models verify {spec.name})"
    if chosen.name == reference:
        return f"{said}: no faster path passed models verify on this CPU"
    cost, usual = per_image(records[chosen.name]), per_image(records.get(reference, {}))
    against = f" against {usual:.0f} for {reference}" if usual is not None else ""
    return f"{said}: {cost:.0f} ms of CPU per image{against}, as models verify measured on this CPU"


def per_image(record: dict) -> float | None:
    """What a path costs each job in CPU ms: one inference, and setting the path up in the fresh process.

    Each job runs the model once, so a backend that spends 0.6 s loading its
    compiled model is slower per image than one 0.3 s slower per inference.
    A record made before set-up was measured counts none.
    """
    ms, setup = record.get("ms"), record.get("setup_ms", 0.0)
    if not isinstance(ms, (int, float)) or not isinstance(setup, (int, float)):
        return None
    return ms + setup


def installed(backend: str) -> bool:
    """Whether this Python has the backend, without importing it (the fork server must not start its threads)."""
    if backend != "openvino":
        return backend in BACKENDS
    try:
        return importlib.util.find_spec("openvino") is not None
    except ImportError:
        return False
