"""`bgremover models quantize NAME`: a static INT8 variant of the model, registered only if it passes the gate.

onnxruntime's static quantisation, QDQ format, convolutions only (8-bit
weights per output channel, 8-bit activations), calibrated on the project's
own photo set. Quantising every convolution ruins some models' masks (U²-Net-p
falls to IoU 0.00–0.76 against fp32): a few convolutions must stay in fp32.
Which ones is searched, not guessed: while the variant fails the agreement
gate, a bisection over the convolutions still quantised, in graph order, finds
the first whose quantisation makes the check fail, and that one is kept in
fp32. The calibration runs once; each step only re-quantises and re-checks.

A model stored in fp16 (IMG.LY's IS-Net) is widened to fp32 first: the
quantiser gives fp16 tensors fp16 scales, which DequantizeLinear refuses, so
its variant would not even load.

The variant is written beside the model (NAME.int8.onnx) and entered in the
manifest's checks only once it passes; `models verify` then measures it on
every backend like any other path.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from bgremover.imaging import matting
from bgremover.models import paths, photoset
from bgremover.models.manifest import ModelError, ModelSpec, read_checks
from bgremover.tuning import agreement

PER_CHANNEL_OPSET = 13  # DequantizeLinear takes an axis (one scale per output channel) from opset 13
MOST_KEPT = 6  # convolutions kept in fp32 before the search gives up: beyond that INT8 gains too little


def onnx_modules():
    """onnx and onnxruntime's quantisation tools, or one sentence saying what to install."""
    try:
        import onnx
        import onnx.version_converter
        from onnxruntime import quantization
    except ImportError as exc:
        raise ModelError(f"models quantize needs the onnx package: pip install 'bgremover[quantize]' ({exc})") from None
    return onnx, quantization


def named_copy(spec: ModelSpec, target: Path) -> list[str]:
    """The model saved with every node named (the quantiser excludes nodes by name); its convolutions, in order."""
    onnx, _ = onnx_modules()
    model = widened(onnx.load(str(spec.path)))
    opset = next((one.version for one in model.opset_import if one.domain in ("", "ai.onnx")), 0)
    if opset < PER_CHANNEL_OPSET:
        model = onnx.version_converter.convert_version(model, PER_CHANNEL_OPSET)
    for index, node in enumerate(model.graph.node):
        if not node.name:
            node.name = f"{node.op_type}_{index}"
    onnx.save(model, str(target))
    return [node.name for node in model.graph.node if node.op_type == "Conv"]


def widened(model):
    """The model with every fp16 weight, constant, cast and tensor type made fp32 (the same graph otherwise)."""
    import onnx
    from onnx import numpy_helper

    half, full = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT

    def wider(tensor):
        return numpy_helper.from_array(numpy_helper.to_array(tensor).astype(np.float32), tensor.name)

    graph = model.graph
    for tensor in graph.initializer:
        if tensor.data_type == half:
            tensor.CopyFrom(wider(tensor))
    for node in graph.node:
        for attribute in node.attribute:
            if node.op_type == "Cast" and attribute.name == "to" and attribute.i == half:
                attribute.i = full
            elif node.op_type == "Constant" and attribute.name == "value" and attribute.t.data_type == half:
                attribute.t.CopyFrom(wider(attribute.t))
    for value in (*graph.input, *graph.output, *graph.value_info):
        if value.type.tensor_type.elem_type == half:
            value.type.tensor_type.elem_type = full
    return model


class Calibration:
    """The photo set as the quantiser's calibration data: each photo prepared as the model is fed."""

    def __init__(self, spec: ModelSpec, input_name: str, images: list) -> None:
        self.tensors = [{input_name: matting.preprocess(image, spec)} for image in images]
        self.set_range(0, len(self.tensors))

    def __len__(self) -> int:
        return len(self.tensors)

    def set_range(self, start_index: int, end_index: int) -> None:
        """The photos the next pass reads: one at a time (see Search.build)."""
        self.feeds = iter(self.tensors[start_index:end_index])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self.feeds, None)


class Search:
    """The variants tried for one model: built from one calibration, checked against fp32 onnxruntime's masks."""

    def __init__(self, spec: ModelSpec, work: Path, images: list, threads: int, say: Callable[[str], None]) -> None:
        self.spec, self.work, self.images, self.threads, self.say = spec, work, images, threads, say
        self.source = work / "named.onnx"
        self.convs = named_copy(spec, self.source)
        self.cache = work / "calibration.json"
        reference = paths.InferencePath(*paths.REFERENCE, spec.path)
        self.reference, _, _ = agreement.masks(spec, reference, images, threads, None, with_setup=False)
        self.tried = 0

    def build(self, kept: list[str], target: Path) -> None:
        _, quantization = onnx_modules()
        import onnxruntime

        input_name = onnxruntime.InferenceSession(str(self.spec.path)).get_inputs()[0].name
        quantization.quantize_static(
            str(self.source),
            str(target),
            Calibration(self.spec, input_name, self.images),
            quant_format=quantization.QuantFormat.QDQ,
            op_types_to_quantize=["Conv"],
            nodes_to_exclude=kept,
            per_channel=True,
            activation_type=quantization.QuantType.QUInt8,
            weight_type=quantization.QuantType.QInt8,
            calibrate_method=quantization.CalibrationMethod.MinMax,
            calibration_cache_path=str(self.cache),
            # Ranges folded in after every photo: holding every intermediate tensor of all photos at once
            # would take gigabytes for a 1024×1024 model.
            extra_options={"CalibStridedMinMax": 1},
        )

    def check(self, kept: list[str]) -> dict:
        """Build the variant with `kept` in fp32 and measure it on onnxruntime against fp32."""
        self.tried += 1
        target = self.work / f"try-{self.tried}.onnx"
        self.build(kept, target)
        path = paths.InferencePath("onnxruntime", "int8", target)
        # Only whether it passes counts here; `models verify` measures the registered variant whole.
        found, ms, _ = agreement.masks(self.spec, path, self.images, self.threads, None, with_setup=False)
        record = agreement.compare(found, self.reference, ms, 0.0)
        target.unlink()
        return record

    def culprit(self, kept: list[str]) -> str:
        """The first convolution, in graph order, whose quantisation makes the variant fail (all later in fp32)."""
        candidates = [name for name in self.convs if name not in kept]
        passing, failing = 0, len(candidates)  # quantising none passes; quantising all of them failed
        while failing - passing > 1:
            middle = (passing + failing) // 2
            if self.check(kept + candidates[middle:])["allowed"]:
                passing = middle
            else:
                failing = middle
        return candidates[failing - 1]

    def run(self) -> tuple[list[str], dict] | None:
        """The convolutions kept in fp32 and the passing record; None if MOST_KEPT were not enough."""
        kept: list[str] = []
        while True:
            record = self.check(kept)
            self.say(f"{self.spec.name} int8 with {len(kept)} convolution(s) in fp32: {describe(record)}")
            if record["allowed"]:
                return kept, record
            if len(kept) == MOST_KEPT:
                return None
            kept.append(self.culprit(kept))
            self.say(f"{self.spec.name}: keeping {kept[-1]} in fp32")


def describe(record: dict) -> str:
    verdict = "passes" if record["allowed"] else "fails"
    return f"{verdict} (IoU mean {record['mean_iou']:.4f}, lowest {record['lowest_iou']:.4f})"


def quantize(name: str, folder: Path, threads: int = 1, say: Callable[[str], None] = print) -> Path | None:
    """Make, check and register the model's INT8 variant; its path, or None if no variant passed the gate."""
    onnx_modules()
    spec = matting.find_model_spec(name, folder)
    images = [image for _, image in photoset.photos()]
    with tempfile.TemporaryDirectory(prefix="bgremover-quantize-") as work:
        search = Search(spec, Path(work), images, threads, say)
        say(f"{spec.name}: {len(search.convs)} convolutions, calibrated on {len(images)} photos")
        found = search.run()
        if found is None:
            say(f"{spec.name}: no INT8 variant passed the gate with up to {MOST_KEPT} convolutions in fp32")
            return None
        kept, record = found
        target = folder / f"{spec.name}.int8.onnx"
        search.build(kept, Path(work) / "final.onnx")
        data = (Path(work) / "final.onnx").read_bytes()
    from bgremover.models.fetch import write_atomically

    write_atomically(target, data)
    variant = {"file": target.name, "sha256": hashlib.sha256(data).hexdigest(), "of": spec.sha256, "fp32": kept}
    check = read_checks(folder).get(spec.name, {})
    # What was measured of an earlier variant says nothing of this one.
    measured = {key: one for key, one in check.get("paths", {}).items() if not key.endswith("/int8")}
    agreement.record(folder, spec.name, {**check, "paths": measured, "int8": variant})
    say(f"registered {target} ({len(data) / 1e6:.1f} MB): {describe(record)}; run `bgremover models verify {name}`")
    return target
