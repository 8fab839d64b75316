"""The model's runtime: onnxruntime sessions made, optimized and checked against the model's manifest entry.

Below imaging/ (matting runs the session it is given) and beside the manifest,
so that fetching or importing a model can prove it loads without reaching up
into the imaging steps.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import onnxruntime

from bgremover.models.manifest import ModelError, ModelSpec
from bgremover.models.paths import InferencePath

CPU = "CPUExecutionProvider"


def check_providers(providers: tuple[str, ...] | list[str]) -> None:
    """Refuse execution providers this onnxruntime cannot offer, before anything else runs."""
    available = onnxruntime.get_available_providers()
    missing = [name for name in providers if name not in available]
    if missing:
        raise ModelError(
            f"execution provider {', '.join(missing)} is not available in this onnxruntime "
            f"{onnxruntime.__version__} (available: {', '.join(available)}); change the providers setting"
        )


def optimize(spec: ModelSpec, providers: tuple[str, ...] | list[str], target: Path) -> None:
    """Save the model as onnxruntime optimizes it for these providers on this machine.

    A session spends most of its creation time (about 70 of 100 ms for
    U²-Net-p) rewriting the graph: fusing operators, choosing CPU layouts.
    Done once and saved, each fresh job process loads the result with
    optimization off and starts in about a third of the time. The saved graph
    may use layouts specific to this CPU, so it is made anew at every start
    and never shipped.
    """
    check_providers(providers)
    options = _session_options(1)  # one thread: this runs once, and must not leave a pool behind
    options.optimized_model_filepath = str(target)
    try:
        onnxruntime.InferenceSession(str(spec.path), options, providers=list(providers))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own classes for bad protobufs, bad graphs, ...
        raise ModelError(f"model file {spec.path} cannot be loaded by onnxruntime: {exc}") from None


def _session_options(threads: int | None) -> onnxruntime.SessionOptions:
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # errors only: the job's stderr is for our own one-line messages
    # Memory patterns pre-plan every buffer of the graph for a fixed input: with
    # U²-Net-p it made a fresh session's first run no faster and its peak RSS
    # about 200 MB larger, so a process that runs the graph once goes without.
    options.enable_mem_pattern = False
    # Idle onnxruntime threads spin by default, burning a core for a while
    # after creation and after each run. Here a job process being prepared runs
    # beside the job at work, and spinning made the working job's inference
    # about 15 % slower; without it a lone session ran just as fast.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1  # one image, one graph: parallelism within operators is what helps
    return options


def create_session(
    spec: ModelSpec,
    threads: int | None = None,
    providers: tuple[str, ...] | list[str] = (CPU,),
    optimized: bytes | None = None,
) -> onnxruntime.InferenceSession:
    """A session for the model on exactly the providers asked for; threads=None lets onnxruntime pick.

    `optimized` is the model as `optimize` saved it, loaded as it is. onnxruntime
    quietly falls back to the CPU when a provider it knows fails to start (a
    CUDA build without a GPU); we check what it actually runs on and refuse
    instead, so nobody believes they use a GPU they do not.
    """
    check_providers(providers)
    options = _session_options(threads)
    if optimized is not None:
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = onnxruntime.InferenceSession(optimized or str(spec.path), options, providers=list(providers))
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own classes for bad protobufs, bad graphs, ...
        raise ModelError(f"model file {spec.path} cannot be loaded by onnxruntime: {exc}") from None
    active = session.get_providers()
    if any(name not in active for name in providers):
        raise ModelError(
            f"onnxruntime could not start {', '.join(p for p in providers if p not in active)} "
            f"and would have run on {', '.join(active)} instead; check the drivers or change the providers setting"
        )
    check_shapes(session, spec)
    return session


def open_path(
    spec: ModelSpec,
    path: InferencePath,
    threads: int | None = None,
    providers: tuple[str, ...] | list[str] = (CPU,),
    optimized: bytes | None = None,
    cache_dir: Path | None = None,
):
    """A session for the model on `path`: onnxruntime's, or OpenVINO's compiled model behind the same calls."""
    variant = dataclasses.replace(spec, path=path.file)
    if path.backend == "onnxruntime":
        return create_session(variant, threads, providers, optimized)
    from bgremover.models.openvino_session import compile_session  # only here: OpenVINO starts threads

    session = compile_session(path.file, path.precision, threads, cache_dir, spec.output_index)
    check_shapes(session, variant)
    return session


def check_shapes(session: onnxruntime.InferenceSession, spec: ModelSpec) -> None:
    """Refuse a model whose input or outputs do not fit its manifest entry, in one sentence."""
    inputs, outputs = session.get_inputs(), session.get_outputs()
    width, height = spec.input_size
    shape = inputs[0].shape
    if len(inputs) != 1 or len(shape) != 4 or shape[1] != 3 or list(shape[2:]) != [height, width]:
        raise ModelError(
            f"model file {spec.path} takes input {', '.join(str(i.shape) for i in inputs)}, but the manifest "
            f"says one RGB image of {width}×{height} ([1, 3, {height}, {width}]): fix input_size or the model"
        )
    if spec.output_index >= len(outputs):
        raise ModelError(
            f"model file {spec.path} has {len(outputs)} output(s), "
            f"so the manifest's output_index {spec.output_index} does not exist"
        )
    mask_shape = outputs[spec.output_index].shape
    if len(mask_shape) < 2 or any(isinstance(n, int) and n != 1 for n in mask_shape[:-2]):
        raise ModelError(
            f"model file {spec.path} gives output {spec.output_index} the shape {mask_shape}, "
            "which is not one mask (…, height, width)"
        )


# ---------------------------------------------------------------- decode
