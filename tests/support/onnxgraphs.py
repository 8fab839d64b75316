"""Tiny ONNX models built in the tests, to exercise the manifest without downloading anything.

Each graph is a real model onnxruntime loads like any other: a 1×1 convolution
that scores how red a pixel is (red minus the mean of green and blue). On the
red shapes of tests.support.images.shape_on_texture that score is a usable mask, so a
daemon running one of these gives a checkable cutout.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REDNESS = np.array([1.0, -0.5, -0.5], dtype=np.float32).reshape(1, 3, 1, 1)


def redness_model(
    path: Path, input_size: tuple[int, int] = (64, 48), decoy_first: bool = True, channels: int = 3
) -> Path:
    """Write a model taking [1, channels, height, width]; its outputs are (decoy, mask) or just (mask).

    The decoy is the mask negated: a daemon reading the wrong output index
    would cut out the background instead of the shape.
    """
    width, height = input_size
    weights = np.resize(REDNESS, (1, channels, 1, 1)).astype(np.float32)
    nodes = [helper.make_node("Conv", ["image", "weights"], ["mask"])]
    outputs = [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, height, width])]
    if decoy_first:
        nodes.append(helper.make_node("Neg", ["mask"], ["decoy"]))
        outputs.insert(0, helper.make_tensor_value_info("decoy", TensorProto.FLOAT, [1, 1, height, width]))
    graph = helper.make_graph(
        nodes,
        "redness",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, channels, height, width])],
        outputs,
        initializer=[numpy_helper.from_array(weights, "weights")],
    )
    # IR 8 and opset 13 load in every onnxruntime the project accepts (1.17 and later).
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def manifest_entry(path: Path, **fields) -> dict:
    """A complete, correct entry for a redness model at `path`; `fields` override any part."""
    entry = {
        "file": path.name,
        "sha256": sha256(path),
        "input_size": [64, 48],
        "mean": [0.5, 0.5, 0.5],
        "std": [1.0, 1.0, 1.0],
        "output_index": 1,
        "licence": "CC0-1.0",
        "source": "built by the test that uses it",
    }
    return {**entry, **fields}


def write_manifest(folder: Path, entries: dict[str, dict]) -> Path:
    path = folder / "manifest.json"
    path.write_text(json.dumps(entries, indent=2))
    return path


def half_precision_model(path: Path, input_size: tuple[int, int] = (96, 72)) -> Path:
    """Write a redness model stored as IMG.LY stores IS-Net: fp32 in and out, fp16 weights and arithmetic inside.

    Two convolutions (the redness score, then a sum of its parts) and a sigmoid;
    its only output is the mask.
    """
    width, height = input_size
    half = np.float16
    spread = np.array([1.0, 2.0, 4.0, 8.0], dtype=np.float32).reshape(4, 1, 1, 1)
    first = (spread * REDNESS).astype(half)  # four scaled copies of the redness score
    second = np.full((1, 4, 1, 1), 0.25, dtype=half)
    bias = np.array([-0.05], dtype=half)
    nodes = [
        helper.make_node("Cast", ["image"], ["image16"], to=TensorProto.FLOAT16),
        helper.make_node("Conv", ["image16", "first"], ["scores"]),
        helper.make_node("Relu", ["scores"], ["positive"]),
        helper.make_node("Conv", ["positive", "second", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["mask16"]),
        helper.make_node("Cast", ["mask16"], ["mask"], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "redness-fp16",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, height, width])],
        [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, height, width])],
        initializer=[numpy_helper.from_array(a, n) for a, n in ((first, "first"), (second, "second"), (bias, "bias"))],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(path))
    return path
