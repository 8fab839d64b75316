"""Quality signals and the review with the real job and the bundled model: what no one would otherwise look at."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.support.cli import cli
from tests.support.harness import Daemon, drop, wait_for
from tests.support.images import encoded, photo
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest


def small_photo(name: str) -> bytes:
    image = Image.open(photo(name))
    image.thumbnail((320, 320), Image.Resampling.LANCZOS)
    return encoded(image, "JPEG", quality=90)


def items_by_name(status: dict) -> dict[str, dict]:
    return {item["name"]: item for item in status["items"]}


def test_a_photo_with_no_subject_is_flagged_and_a_good_one_is_not(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, fake_jobs=False) as daemon:
        drop(root / "inbox", "shoot/wall.png", encoded(Image.new("RGB", (320, 240), "#d8c8b0"), "PNG"))
        drop(root / "inbox", "shoot/coffee.jpg", small_photo("coffee"))
        status = daemon.wait_complete("shoot", timeout=240)

    items = items_by_name(status)
    assert items["wall.png"]["status"] == "done", "the item is done, as before: its state machine is unchanged"
    review = items["wall.png"]["review"]
    assert review is not None, "an empty cutout must be flagged"
    assert review["state"] == "flagged"
    assert [reason["code"] for reason in review["reasons"]] == ["no_subject"]
    assert review["reasons"][0]["reason"].startswith("No subject was found")
    assert items["coffee.jpg"]["review"] is None, "a good cutout raises nothing"
    assert status["review"]["flagged"] == 1


def test_a_corrected_mask_becomes_the_items_alpha(tmp_path):
    root = tmp_path / "root"
    mask = Image.new("L", (160, 120), 0)
    mask.paste(255, (40, 30, 120, 90))  # half the photo's size: scaled up to it
    mask_file = tmp_path / "mask.png"
    mask.save(mask_file)
    with Daemon(root, fake_jobs=False) as daemon:
        drop(root / "inbox", "shoot/wall.png", encoded(Image.new("RGB", (320, 240), "#d8c8b0"), "PNG"))
        daemon.wait_complete("shoot", timeout=240)
        assert cli("review", "mask", "shoot", "wall.png", mask_file, "--root", root).returncode == 0
        wait_for(
            lambda: (doc := daemon.status("shoot"))["state"] == "complete" and doc["review"]["corrected"] == 1,
            timeout=240,
            what="the corrected item done",
        )
        cutout = Image.open(io.BytesIO(daemon.zip_members("shoot")["wall.png"]))

    alpha = np.asarray(cutout.getchannel("A"))
    assert alpha.shape == (240, 320)
    assert alpha[120, 160] == 255 and alpha[10, 10] == 0 and alpha[230, 310] == 0
    assert abs(int((alpha >= 128).sum()) - 160 * 120) < 160 * 120 * 0.03


def test_escalation_runs_the_second_model_only_on_a_flagged_image_and_says_so(tmp_path):
    root = tmp_path / "root"
    models = tmp_path / "models"
    write_manifest(models, {"redness": manifest_entry(redness_model(models / "redness.onnx"))})
    with Daemon(root, fake_jobs=False, models_dir=models, review_model="redness", review_escalate="true") as daemon:
        drop(root / "inbox", "shoot/wall.png", encoded(Image.new("RGB", (320, 240), "#d8c8b0"), "PNG"))
        drop(root / "inbox", "shoot/coffee.jpg", small_photo("coffee"))
        items = items_by_name(daemon.wait_complete("shoot", timeout=240))
        finished = {event["item"]: event for event in daemon.events("job_finished")}

    assert items["wall.png"]["note"] == "cut out with redness, since u2netp's mask raised no_subject"
    assert "review_inference" in finished["wall.png"]["timings_ms"], "the flagged image ran the second model"
    assert items["coffee.jpg"]["note"] is None and items["coffee.jpg"]["review"] is None
    assert "review_inference" not in finished["coffee.jpg"]["timings_ms"], "a good image costs the first model only"
