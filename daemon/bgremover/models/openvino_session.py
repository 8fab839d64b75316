"""OpenVINO as a session the imaging steps can run: a compiled model behind onnxruntime's three calls.

Imported only in a job process (or a command) that runs the openvino backend:
OpenVINO starts its own thread pool when it compiles, and the fork server
must stay single-threaded to fork safely, so it never imports this module.
Compiling a model costs 0.8 to 3.4 s; with a cache folder (CACHE_DIR, under
the state folder, shared by every job) a fresh process loads the compiled
blob in a fraction of that.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bgremover.models.manifest import ModelError
from bgremover.models.openvino_outputs import compile_target
from bgremover.models.paths import NOT_INSTALLED, installed

# The precision names of bgremover, as OpenVINO's INFERENCE_PRECISION_HINT spells them. An INT8 (QDQ) model
# runs its quantised convolutions in int8 whatever the hint; the rest in f32.
HINTS = {"fp32": "f32", "bf16": "bf16", "int8": "f32"}


def missing() -> str | None:
    """Why the openvino backend cannot run here, in one sentence; None if it can."""
    # Not an import: the fork server asks this too, and must not start OpenVINO's threads.
    if not installed("openvino"):
        return NOT_INSTALLED["openvino"]
    return None


def leave_out_conversion_tools() -> None:
    """Make this process's `import openvino` skip its model-conversion tools; for a job process only.

    OpenVINO's package imports openvino.tools.ovc (convert_model) whenever it
    can, and with it a telemetry client and urllib, http and email: about 65 ms
    of CPU, half the import, paid again by every job. A job only compiles a model
    file. Marking that one submodule absent (None in sys.modules) makes the
    package's guarded import skip it, as if the tools were not installed. Never
    in a process that runs someone else's code (the Python API): they may want
    convert_model there.
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino.tools.ovc", None)


@dataclass(frozen=True)
class Port:
    name: str
    shape: list


class OpenVinoSession:
    """A compiled model with onnxruntime's get_inputs, get_outputs and run; outputs are named by their index."""

    def __init__(self, compiled, precision: str) -> None:
        self.compiled = compiled
        self.request = compiled.create_infer_request()
        self.precision = precision

    def get_inputs(self) -> list[Port]:
        return [Port(port.get_any_name(), list(port.get_partial_shape().to_shape())) for port in self.compiled.inputs]

    def get_outputs(self) -> list[Port]:
        return [Port(str(index), _shape(port)) for index, port in enumerate(self.compiled.outputs)]

    def run(self, names: list[str], feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        (tensor,) = feed.values()
        self.request.infer({0: tensor})
        return [self.request.get_output_tensor(int(name)).data.copy() for name in names]

    def describe(self) -> dict:
        import openvino

        return {
            "backend": "openvino",
            "precision": self.precision,
            "inference_precision": str(self.compiled.get_property("INFERENCE_PRECISION_HINT")),
            "intra_op_threads": int(self.compiled.get_property("INFERENCE_NUM_THREADS")),
            "openvino": openvino.get_version(),
        }


def _shape(port) -> list:
    shape = port.get_partial_shape()
    return list(shape.to_shape()) if shape.is_static else [str(dim) for dim in shape]


def compile_session(
    file: Path, precision: str, threads: int | None, cache_dir: Path | None, mask_index: int = 0
) -> OpenVinoSession:
    """The model compiled for this CPU at `precision`, through the shared compile cache when there is one.

    Only its outputs up to the mask (`mask_index`) are compiled: see openvino_outputs.
    """
    reason = missing()
    if reason:
        raise ModelError(reason)
    import openvino

    config = {
        "INFERENCE_PRECISION_HINT": HINTS[precision],
        "PERFORMANCE_HINT": "LATENCY",
        "NUM_STREAMS": "1",  # one image per process: all threads on one request
        "ENABLE_CPU_PINNING": "NO",  # jobs share the cores with each other and the daemon
    }
    if threads is not None:
        config["INFERENCE_NUM_THREADS"] = str(threads)
    if cache_dir is not None:
        cache_dir.mkdir(parents=True, exist_ok=True)
        config["CACHE_DIR"] = str(cache_dir)
    try:
        core = openvino.Core()
        compiled = core.compile_model(compile_target(core, file, mask_index, cache_dir), "CPU", config)
    except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError and its own classes for bad models
        raise ModelError(f"model file {file} cannot be compiled by OpenVINO: {exc}") from None
    return OpenVinoSession(compiled, precision)
