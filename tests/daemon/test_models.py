"""More models by manifest: a user's own ONNX file, described by an entry, chosen with `model`.

Every model here is a tiny graph the test builds (tests/support/onnxgraphs.py), loaded
by the real onnxruntime and run by the real daemon.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from tests.support.cli import cli
from tests.support.harness import Daemon, drop
from tests.support.images import encoded, shape_on_texture
from tests.support.models import (
    iou,
)
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest

# ---------------------------------------------------------------- the daemon


def test_the_daemon_runs_a_model_from_its_models_folder(tmp_path):
    root = tmp_path / "root"
    model = redness_model(root / "models" / "redness.onnx")  # <root>/models: the default models_dir
    write_manifest(root / "models", {"redness": manifest_entry(model)})
    image, truth = shape_on_texture((160, 120), shape="disc")
    with Daemon(root, fake_jobs=False, model="redness", session_idle_seconds=1) as daemon:
        drop(root / "inbox", "shop/disc.png", encoded(image, "PNG"))
        status = daemon.wait_complete("shop", timeout=120)
        members = daemon.zip_members("shop")
    assert [item["status"] for item in status["items"]] == ["done"]
    ready = daemon.events("daemon_ready")[-1]
    assert ready["model"] == "redness"
    cutout = Image.open(io.BytesIO(members["disc.png"]))
    assert (cutout.mode, cutout.size) == ("RGBA", (160, 120))
    assert iou(np.asarray(cutout.getchannel("A")) >= 128, truth) >= 0.9


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        ("checksum", "sha256"),
        ("shape", "takes input [1, 3, 32, 32], but the manifest says one RGB image of 64×48"),
    ],
)
def test_a_wrong_checksum_or_shape_stops_start_up_in_one_line(folder, tmp_path, damage, says):
    if damage == "checksum":
        (folder / "redness.onnx").write_bytes((folder / "redness.onnx").read_bytes() + b"\0")
    else:
        redness_model(folder / "redness.onnx", input_size=(32, 32))
        write_manifest(folder, {"redness": manifest_entry(folder / "redness.onnx", input_size=[64, 48])})
    root = tmp_path / "root"
    result = cli("run", "--root", root, env={"BGREMOVER_MODEL": "redness", "BGREMOVER_MODELS_DIR": str(folder)})
    assert result.returncode == 2, result.stderr
    line = [line for line in result.stderr.splitlines() if line.startswith("bgremover: ")]
    assert len(line) == 1 and says in line[0], result.stderr
    assert "Traceback" not in result.stderr


def test_a_folder_cut_by_a_model_made_for_people_says_so_in_the_log_and_its_status(tmp_path):
    root = tmp_path / "root"
    model = redness_model(root / "models" / "portrait.onnx")
    write_manifest(root / "models", {"portrait": manifest_entry(model, portrait_only=True)})
    image, truth = shape_on_texture((160, 120), shape="disc")
    with Daemon(root, fake_jobs=False, session_idle_seconds=1) as daemon:
        drop(root / "inbox", "people/bgremover.toml", 'model = "portrait"\n')
        drop(root / "inbox", "people/disc.png", encoded(image, "PNG"))
        drop(root / "inbox", "shop/disc.png", encoded(image, "PNG"))
        people, shop = daemon.wait_complete("people", timeout=120), daemon.wait_complete("shop", timeout=120)
        events = daemon.events("model_made_for_people")
    note = (
        "portrait is made for people (portraits): on products, animals or cars it can miss most of the subject; "
        "choose u2net or isnet-medium for those"
    )
    assert (people["model"], people["model_note"]) == ("portrait", note)
    assert [item["status"] for item in people["items"]] == ["done"]
    assert shop["model"] == "u2netp" and "model_note" not in shop
    assert [(event["session"], event["model"], event["note"], event["level"]) for event in events] == [
        ("people", "portrait", note, "warning")
    ]
