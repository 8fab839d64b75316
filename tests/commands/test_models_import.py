"""`bgremover models import`: the models rembg users already have, recognised by checksum, copied, never altered.

The one real rembg file here is the bundled u2netp, which is byte for byte the
u2netp.onnx rembg downloads (its md5 is the one rembg lists). The others are
tiny graphs (tests/support/onnxgraphs.py) saved under rembg's file names with
rembg's input shapes: their checksums are not rembg's, so they are refused as
unknown unless the user passes --trust-name.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_models_import.py.
"""

from __future__ import annotations

import hashlib
import re
import shutil

import numpy as np
import pytest
from PIL import Image

from bgremover import Session, remove
from tests.support.cli import cli
from tests.support.images import shape_on_texture
from tests.support.onnxgraphs import redness_model
from tests.unit.test_models_import import BUNDLED, manifest


@pytest.fixture
def home(tmp_path):
    """A rembg models folder: the real u2netp, two stand-ins of rembg's shapes, and a u2net of the wrong shape."""
    home = tmp_path / "u2net"
    home.mkdir()
    shutil.copy(BUNDLED, home / "u2netp.onnx")
    redness_model(home / "u2net_human_seg.onnx", (320, 320), decoy_first=False)
    redness_model(home / "birefnet-general-lite.onnx", (1024, 1024), decoy_first=False)
    redness_model(home / "u2net.onnx", (64, 48), decoy_first=False)
    return home


def snapshot(folder):
    return {path.name: path.read_bytes() for path in sorted(folder.iterdir())}


def importing(tmp_path, home, *args):
    return cli("models", "import", *args, env={"U2NET_HOME": str(home), "BGREMOVER_ROOT": str(tmp_path / "root")})


def refusals(result) -> dict[str, str]:
    """Each refused file's name and its one line (`bgremover: PATH: why`)."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert all(line.startswith("bgremover: ") for line in lines), result.stderr
    return {line.split(": ")[1].rsplit("/", 1)[-1]: line for line in lines}


def test_from_rembg_imports_what_it_recognises_refuses_the_rest_in_one_line_each_and_leaves_u2net_home_alone(
    tmp_path, home
):
    before = snapshot(home)

    first = importing(tmp_path, home, "--from-rembg")
    assert first.returncode == 1
    refused = refusals(first)
    assert sorted(refused) == ["birefnet-general-lite.onnx", "u2net.onnx", "u2net_human_seg.onnx"]
    assert refused["u2net_human_seg.onnx"].endswith(
        f"u2net_human_seg.onnx: unknown checksum: its md5 is {hashlib.md5((home / 'u2net_human_seg.onnx').read_bytes()).hexdigest()}, "
        "not the c09ddc2e0104f800e3e1bb4652583d1f rembg lists for u2net_human_seg; "
        "pass --trust-name to import it on its name"
    )
    assert (
        "u2netp: U-2-Net by Xuebin Qin et al., https://github.com/xuebinqin/U-2-Net; licence: Apache-2.0"
        in first.stdout
    )
    assert "installed u2netp (4.6 MB)" in first.stdout
    assert list(manifest(tmp_path)) == ["u2netp"]

    second = importing(tmp_path, home, "--from-rembg", "--trust-name")
    assert second.returncode == 1
    refused = refusals(second)
    assert list(refused) == ["u2net.onnx"]
    assert (
        "u2net.onnx: unknown checksum, and it does not fit rembg's recipe for u2net: model file"
        in refused["u2net.onnx"]
    )
    assert "takes input [1, 3, 48, 64]" in refused["u2net.onnx"]
    assert "u2netp is installed already" in second.stdout
    assert (
        "birefnet-general-lite: BiRefNet by Peng Zheng et al., https://github.com/ZhengPeng7/BiRefNet; licence: MIT"
        in second.stdout
    )

    entries = manifest(tmp_path)
    assert sorted(entries) == ["birefnet-general-lite", "u2net_human_seg", "u2netp"]
    folder = tmp_path / "root" / "models"
    for name, entry in entries.items():
        assert hashlib.sha256((folder / entry["file"]).read_bytes()).hexdigest() == entry["sha256"]
        assert (folder / entry["file"]).read_bytes() == (home / f"{name}.onnx").read_bytes()
    assert entries["u2netp"]["sha256"] == hashlib.sha256(BUNDLED.read_bytes()).hexdigest()
    assert "imported on the trust of its name" in entries["u2net_human_seg"]["source"]
    assert "imported on the trust of its name" not in entries["u2netp"]["source"]
    assert snapshot(home) == before  # the same names, the same bytes

    listed = cli("models", "list", env={"BGREMOVER_ROOT": str(tmp_path / "root")}).stdout
    assert (
        "installed (shadows the bundled one)" in listed and "birefnet-general-lite  installed (models folder)" in listed
    )


def test_the_imported_u2netp_gives_the_bundled_models_cutouts_exactly(tmp_path, home):
    assert importing(tmp_path, home, home / "u2netp.onnx").returncode == 0
    imported = Session("u2netp", models_dir=tmp_path / "root" / "models")
    bundled = Session("u2netp", models_dir=tmp_path / "nothing")
    assert (imported.spec.path, bundled.spec.path) == (tmp_path / "root" / "models" / "u2netp.onnx", BUNDLED)
    image, _ = shape_on_texture((320, 240))
    assert np.array_equal(np.array(remove(image, session=imported)), np.array(remove(image, session=bundled)))


def test_an_imported_model_runs_in_bgremover_remove_with_its_recipe(tmp_path, home):
    assert importing(tmp_path, home, "--trust-name", home / "birefnet-general-lite.onnx").returncode == 0
    entry = manifest(tmp_path)["birefnet-general-lite"]
    assert (entry["input_size"], entry["activation"], entry["scale"], entry["mask_range"]) == (
        [1024, 1024],
        "sigmoid",
        "max",
        "stretch",
    )
    image, _ = shape_on_texture((160, 120))
    image.save(tmp_path / "in.png")
    result = cli(
        "remove",
        tmp_path / "in.png",
        tmp_path / "out.png",
        env={"BGREMOVER_ROOT": str(tmp_path / "root"), "BGREMOVER_MODEL": "birefnet-general-lite"},
    )
    assert result.returncode == 0, result.stderr
    assert Image.open(tmp_path / "out.png").size == (160, 120)


def test_a_file_is_recognised_by_its_checksum_whatever_it_is_called(tmp_path):
    download = tmp_path / "downloads" / "from-rembg-releases.onnx"
    download.parent.mkdir()
    shutil.copy(BUNDLED, download)
    result = importing(tmp_path, tmp_path / "none", download)
    assert result.returncode == 0, result.stderr
    assert manifest(tmp_path)["u2netp"]["file"] == "u2netp.onnx"


def test_importing_again_changes_nothing(tmp_path, home):
    assert importing(tmp_path, home, home / "u2netp.onnx").returncode == 0
    written = (tmp_path / "root" / "models" / "manifest.json").read_bytes()
    again = importing(tmp_path, home, home / "u2netp.onnx")
    assert again.returncode == 0 and "u2netp is installed already" in again.stdout
    assert (tmp_path / "root" / "models" / "manifest.json").read_bytes() == written


@pytest.mark.parametrize(
    ("name", "says"),
    [
        (
            "notes.onnx",
            r"notes.onnx: is not one of rembg's model files \(md5 [0-9a-f]{32}\); bgremover imports rembg's "
            r"u2net, u2netp, u2net_human_seg, silueta, isnet-general-use, isnet-anime, birefnet-general, ",
        ),
        ("bria-rmbg.onnx", r"bria-rmbg.onnx: it is BRIA AI's RMBG-2.0, licensed CC BY-NC 4.0: non-commercial use only"),
        (
            "u2net_cloth_seg.onnx",
            r"u2net_cloth_seg.onnx: its output is three clothing masks .* cannot express as one mask",
        ),
        ("sam_vit_b_01ec64.encoder.onnx", r"sam_vit_b_01ec64.encoder.onnx: it is part of a SAM model"),
    ],
)
def test_a_file_bgremover_cannot_import_is_refused_in_one_line_and_nothing_is_written(tmp_path, name, says):
    path = redness_model(tmp_path / "in" / name, (320, 320), decoy_first=False)
    result = importing(tmp_path, tmp_path / "none", path, "--trust-name")
    assert result.returncode == 1
    (line,) = refusals(result).values()
    assert line.startswith(f"bgremover: {path}: ")
    assert re.search(says, line), line
    assert not (tmp_path / "root" / "models").exists()


def test_without_files_or_a_rembg_folder_it_says_what_it_needs(tmp_path):
    assert (
        importing(tmp_path, tmp_path).stderr == "bgremover: models import needs model files (PATH...) or --from-rembg\n"
    )
    missing = importing(tmp_path, tmp_path / "absent", "--from-rembg")
    assert missing.returncode == 2
    assert missing.stderr.startswith(f"bgremover: there is no rembg models folder at {tmp_path / 'absent'} ")
