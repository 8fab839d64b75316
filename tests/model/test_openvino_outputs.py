"""OpenVINO compiles a model's outputs up to the mask only, cut once per model file into the compile cache.

Models are made here with onnx: a convolution to the mask, and a side output
that upsamples a second convolution 4× (the shape of IS-Net's deep
supervision), in either order. Each OpenVINO run happens in a child process,
as in a job (OpenVINO starts threads), and its mask is compared with
onnxruntime's on the whole model.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
from onnx import TensorProto, helper, numpy_helper

from bgremover.models.manifest import load_model_spec
from bgremover.models.openvino_outputs import CUT_FOLDER
from tests.support.disks import fill, set_immutable, small_tmpfs

SIZE = 32

RUN = """
import json, sys
from pathlib import Path
import numpy as np
from bgremover.models.openvino_session import compile_session
file, cache, index = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
session = compile_session(file, "fp32", 1, Path(cache) if cache else None, index)
x = np.load(sys.argv[4])
names = [port.name for port in session.get_outputs()]
np.save(sys.argv[5], session.run([names[index]], {"x": x})[0])
print(json.dumps([port.shape for port in session.get_outputs()]))
"""


def side_output_model(path: Path, mask_first: bool = True, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)

    def weights(name: str, shape: tuple) -> onnx.TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    nodes = [
        helper.make_node("Conv", ["x", "w1"], ["h"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["h"], ["hr"]),
        helper.make_node("Conv", ["hr", "w2"], ["m"], pads=[1, 1, 1, 1]),
        helper.make_node("Sigmoid", ["m"], ["mask"]),
        helper.make_node("MaxPool", ["hr"], ["pooled"], kernel_shape=[4, 4], strides=[4, 4]),
        helper.make_node("Conv", ["pooled", "w3"], ["s"], pads=[1, 1, 1, 1]),
        helper.make_node("Resize", ["s", "", "scales"], ["up"], mode="linear"),
        helper.make_node("Sigmoid", ["up"], ["side"]),
    ]
    mask = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, SIZE, SIZE])
    side = helper.make_tensor_value_info("side", TensorProto.FLOAT, [1, 1, SIZE, SIZE])
    graph = helper.make_graph(
        nodes,
        "side-outputs",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, SIZE, SIZE])],
        [mask, side] if mask_first else [side, mask],
        [
            weights("w1", (8, 3, 3, 3)),
            weights("w2", (1, 8, 3, 3)),
            weights("w3", (1, 8, 3, 3)),
            numpy_helper.from_array(np.array([1, 1, 4, 4], np.float32), "scales"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def compiled(tmp_path: Path, file: Path, cache: Path | None, index: int = 0) -> tuple[list, np.ndarray, np.ndarray]:
    """The compiled model's output shapes, its mask, and onnxruntime's mask of the whole model, for one input."""
    x = np.random.default_rng(7).random((1, 3, SIZE, SIZE), dtype=np.float32)
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(
        [sys.executable, "-c", RUN, str(file), str(cache or ""), str(index), tmp_path / "x.npy", tmp_path / "m.npy"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    whole = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    expected = whole.run(["mask"], {"x": x})[0]
    return json.loads(run.stdout), np.load(tmp_path / "m.npy"), expected


def cut_files(cache: Path) -> list[str]:
    return sorted(path.suffix for path in (cache / CUT_FOLDER).iterdir() if not path.name.startswith("."))


def test_openvino_computes_the_mask_without_the_side_outputs_and_cuts_the_model_once(tmp_path):
    model, cache = side_output_model(tmp_path / "sides.onnx"), tmp_path / "cache"
    shapes, mask, expected = compiled(tmp_path, model, cache)
    assert shapes == [[1, 1, SIZE, SIZE]], "one output: the mask"
    np.testing.assert_allclose(mask, expected, atol=1e-5)
    assert cut_files(cache) == [".bin", ".json", ".xml"]
    (xml,) = (cache / CUT_FOLDER).glob("*.xml")
    made = (xml.stat().st_ino, xml.stat().st_mtime_ns)

    shapes, mask, expected = compiled(tmp_path, model, cache)  # the next job: the cut is not made again
    np.testing.assert_allclose(mask, expected, atol=1e-5)
    assert (xml.stat().st_ino, xml.stat().st_mtime_ns) == made


def test_a_mask_that_is_not_the_first_output_keeps_the_outputs_before_it(tmp_path):
    model = side_output_model(tmp_path / "sides.onnx", mask_first=False)
    shapes, mask, expected = compiled(tmp_path, model, tmp_path / "cache", index=1)
    assert shapes == [[1, 1, SIZE, SIZE]] * 2
    np.testing.assert_allclose(mask, expected, atol=1e-5)


def test_without_a_cache_folder_the_model_is_cut_in_memory(tmp_path):
    model = side_output_model(tmp_path / "sides.onnx")
    shapes, mask, expected = compiled(tmp_path, model, None)
    assert shapes == [[1, 1, SIZE, SIZE]]
    np.testing.assert_allclose(mask, expected, atol=1e-5)


def test_a_replaced_model_file_gets_a_new_cut_and_the_old_one_goes(tmp_path):
    model, cache = side_output_model(tmp_path / "sides.onnx"), tmp_path / "cache"
    compiled(tmp_path, model, cache)
    (old,) = (cache / CUT_FOLDER).glob("*.json")
    side_output_model(model, seed=1)  # other weights in the same file
    os.utime(model, ns=(old.stat().st_mtime_ns + 10**9,) * 2)  # a new modification time, whatever the clock
    _, mask, expected = compiled(tmp_path, model, cache)
    np.testing.assert_allclose(mask, expected, atol=1e-5)  # the new weights' mask, not the old cut's
    assert not old.exists()
    assert cut_files(cache) == [".bin", ".json", ".xml"], "one cut per model file"


def test_a_model_whose_side_outputs_feed_its_mask_is_compiled_as_it_is(tmp_path):
    # U²-Net-p's mask fuses its six side maps: leaving them out as outputs saves only their sigmoids.
    bundled = load_model_spec("u2netp").path
    cache = tmp_path / "cache"
    run = subprocess.run(
        [sys.executable, "-c", RUN, str(bundled), str(cache), "0", *blank_input(tmp_path, 320), tmp_path / "m.npy"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    assert len(json.loads(run.stdout)) == 7, "all its outputs, as the file has them"
    (record,) = (cache / CUT_FOLDER).glob("*.json")
    assert json.loads(record.read_text()) == {"source": str(bundled.resolve()), "file": None}
    assert cut_files(cache) == [".json"], "no copy of the model written"


def blank_input(tmp_path: Path, size: int) -> list[Path]:
    np.save(tmp_path / "x.npy", np.zeros((1, 3, size, size), np.float32))
    return [tmp_path / "x.npy"]


def test_a_cache_folder_that_refuses_writes_compiles_the_whole_model_with_the_same_mask(tmp_path):
    # As on a full state folder: the job goes on with every output, slower, and no item fails for it.
    model, cache = side_output_model(tmp_path / "sides.onnx"), tmp_path / "cache"
    (cache / CUT_FOLDER).mkdir(parents=True)
    set_immutable([cache / CUT_FOLDER], True)
    try:
        shapes, mask, expected = compiled(tmp_path, model, cache)
    finally:
        set_immutable([cache / CUT_FOLDER], False)
    assert shapes == [[1, 1, SIZE, SIZE]] * 2, "the model as it is"
    np.testing.assert_allclose(mask, expected, atol=1e-5)
    assert cut_files(cache) == []


def test_a_full_cache_folder_compiles_the_whole_model_and_leaves_no_half_written_cut(tmp_path):
    model = side_output_model(tmp_path / "sides.onnx")
    with small_tmpfs(tmp_path / "cache", size_kb=256) as cache:
        (cache / CUT_FOLDER).mkdir()
        (cache / CUT_FOLDER / ".lock").touch()
        filler = fill(cache)
        shapes, mask, expected = compiled(tmp_path, model, cache)
        left = cut_files(cache) + [path.name for path in (cache / CUT_FOLDER).glob(".tmp-*")]
        filler.unlink()
    assert shapes == [[1, 1, SIZE, SIZE]] * 2, "the model as it is"
    np.testing.assert_allclose(mask, expected, atol=1e-5)
    assert left == []


def test_a_cut_removed_by_hand_is_made_again(tmp_path):
    model, cache = side_output_model(tmp_path / "sides.onnx"), tmp_path / "cache"
    compiled(tmp_path, model, cache)
    (xml,) = (cache / CUT_FOLDER).glob("*.xml")
    xml.unlink()
    xml.with_suffix(".bin").unlink()
    shapes, mask, expected = compiled(tmp_path, model, cache)
    assert shapes == [[1, 1, SIZE, SIZE]]
    np.testing.assert_allclose(mask, expected, atol=1e-5)
    assert cut_files(cache) == [".bin", ".json", ".xml"]
