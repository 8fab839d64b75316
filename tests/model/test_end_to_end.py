"""The daemon's contract, end to end, with the real job process and the bundled model.

tests/daemon/test_supervisor.py checks the loop with fake job bodies; here each dropped
file goes through `python -m bgremover.job` and u2netp, and the tests open what
comes back: the session ZIP's members are decoded with Pillow, their alpha is
compared with a known mask, and the status JSON, the log, the spool and the
archive are read as a user or an operator would. Images stay at or under
320 px so the whole file runs in well under a minute of jobs on two cores.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from tests.support.harness import Daemon, drop, wait_for
from tests.support.images import (
    PHOTO_NAMES,
    encoded,
    iou,
    photo,
    shape_on_texture,
    srgb_icc_profile,
    truncated_copy,
    write_decompression_bomb_png,
    write_jpeg_with_exif_orientation,
)

JOB_SECONDS = 120  # a real job is ~1 s (fresh python, model load); leave room for a loaded machine
EXTENSIONS = {"png": ".png", "webp": ".webp", "avif": ".avif"}
# (x, y) points kept / removed in each photo once scaled to 320 px on the long side
# (tests/unit/test_matting.py measured them at 400 px: these are the same points × 0.8).
SUBJECT_AND_BACKGROUND = {
    "astronaut": ((140, 64), (304, 16)),  # her face; the dark top-right corner
    "coffee": ((160, 120), (8, 8)),  # the cup; the table's corner
    "chelsea": ((160, 120), (312, 8)),  # the cat's face; the top-right corner
}


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "root"


# ---------------------------------------------------------------- helpers


def small_photo(name: str) -> bytes:
    """A committed photo scaled to 320 px on the long side, as JPEG bytes."""
    image = Image.open(photo(name))
    image.thumbnail((320, 320), Image.Resampling.LANCZOS)
    return encoded(image, "JPEG", quality=90)


def shape_png(size: tuple[int, int] = (320, 240), shape: str = "disc") -> tuple[bytes, np.ndarray]:
    """The synthetic red shape on grey texture as lossless PNG bytes, and its true mask."""
    image, truth = shape_on_texture(size, shape)
    return encoded(image, "PNG"), truth


def upright(data: bytes) -> Image.Image:
    """What a viewer shows for an input file: decoded and turned by its EXIF orientation."""
    image = Image.open(io.BytesIO(data))
    return ImageOps.exif_transpose(image)


def decode_member(data: bytes, fmt: str) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    assert image.format == fmt.upper()
    return image


def alpha_of(image: Image.Image) -> np.ndarray:
    assert image.mode == "RGBA", image.mode
    return np.asarray(image)[..., 3]


def items_by_name(status: dict) -> dict[str, dict]:
    return {item["name"]: item for item in status["items"]}


def assert_one_sentence(error: str | None) -> None:
    assert error and "\n" not in error and "Traceback" not in error, error
    assert ". " not in error.rstrip("."), f"more than one sentence: {error!r}"


def contents(folder: Path) -> list[bytes] | None:
    """The bytes of each file in folder, or None if one vanished while we read (the daemon is tidying)."""
    try:
        return sorted(path.read_bytes() for path in folder.iterdir())
    except FileNotFoundError:
        return None


def assert_settled(root: Path, session: str, names: list[str]) -> None:
    """Once a session reads complete, its originals are archived, and its results have left the spool
    unless an item of it can still be retried or waits for a review: then the done items' cutouts stay, to
    rebuild its ZIP."""
    status = json.loads((root / "outbox" / f"{session}.json").read_text())
    retryable = any(
        item["retry_marker"] or (item["review"] or {}).get("state") == "flagged" for item in status["items"]
    )
    kept = sorted(path.name for path in (root / "state" / "results").iterdir())
    done = [item for item in status["items"] if item["status"] == "done"]
    assert len(kept) == (len(done) if retryable else 0), kept
    assert all((root / "archive" / session / name).is_file() for name in names)


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["png", "webp", "avif"])
def test_photos_and_a_known_shape_come_back_cut_out_in_each_format(root, fmt):
    inputs = {f"{name}.jpg": small_photo(name) for name in PHOTO_NAMES}
    inputs["shape.png"], truth = shape_png()
    with Daemon(root, fake_jobs=False, output_format=fmt) as daemon:
        for name, data in inputs.items():
            drop(root / "inbox", f"shoot/{name}", data)
        status = daemon.wait_complete("shoot", JOB_SECONDS)
        members = daemon.zip_members("shoot")

    ext = EXTENSIONS[fmt]
    assert (status["state"], status["format"], status["total"], status["zip"]) == ("complete", fmt, 4, "shoot.zip")
    assert status["counts"] == {"queued": 0, "processing": 0, "done": 4, "failed": 0, "cancelled": 0}
    for name in inputs:
        output = Path(name).stem + ext
        item = dict(items_by_name(status)[name])
        review = item.pop("review")
        assert item == {
            "name": name,
            "status": "done",
            "output": output,
            "mask": None,
            "error": None,
            "note": None,
            "attempts": 1,
            "retry_marker": None,
        }
        # The astronaut and the cat run off the photo's edges, as those photos are taken: only that may be flagged.
        flags = {reason["code"] for reason in review["reasons"]} if review else set()
        assert flags <= ({"cut_by_frame"} if name in ("astronaut.jpg", "chelsea.jpg") else set()), (name, review)
    assert set(members) == {Path(name).stem + ext for name in inputs}

    for name, data in inputs.items():
        result = decode_member(members[Path(name).stem + ext], fmt)
        assert result.size == upright(data).size, name
        alpha = alpha_of(result)
        assert alpha.min() <= 5 and alpha.max() >= 250, f"{name}: a flat alpha channel"
    for name in PHOTO_NAMES:
        alpha = alpha_of(decode_member(members[name + ext], fmt))
        subject, background = SUBJECT_AND_BACKGROUND[name]
        assert alpha[subject[1], subject[0]] >= 200, f"{name}: the subject was cut away"
        assert alpha[background[1], background[0]] <= 50, f"{name}: the background was kept"

    alpha = alpha_of(decode_member(members["shape" + ext], fmt))
    assert iou(alpha >= 128, truth) >= 0.9  # tests/unit/test_matting.py measured 0.995-1.0
    height, width = truth.shape
    assert alpha[height // 2, width // 2] >= 250 and alpha[0, 0] <= 5  # subject opaque, corner transparent
    if fmt == "png":
        # Lossless in and out: straight alpha, so the colours are the original's exactly.
        source = np.asarray(Image.open(io.BytesIO(inputs["shape.png"])).convert("RGB"))
        np.testing.assert_array_equal(np.asarray(decode_member(members["shape.png"], fmt))[..., :3], source)


# ---------------------------------------------------------------- orientation and colour profile


def test_exif_orientation_is_applied_and_the_icc_profile_is_kept(root, tmp_path):
    stored, truth = shape_on_texture((160, 120))
    rotated = write_jpeg_with_exif_orientation(tmp_path / "rotated.jpg", stored, 6).read_bytes()
    icc = srgb_icc_profile()
    tagged = write_jpeg_with_exif_orientation(tmp_path / "tagged.jpg", stored, 1, icc=icc).read_bytes()
    with Daemon(root, fake_jobs=False) as daemon:
        drop(root / "inbox", "turns/rotated.jpg", rotated)
        drop(root / "inbox", "turns/tagged.jpg", tagged)
        status = daemon.wait_complete("turns", JOB_SECONDS)
        members = daemon.zip_members("turns")

    assert status["counts"]["done"] == 2
    turned = decode_member(members["rotated.png"], "png")
    assert turned.size == (120, 160)  # orientation 6: width and height swap
    # The same pixels a viewer shows, turned the right way (90° clockwise), not merely resized.
    np.testing.assert_array_equal(np.asarray(turned)[..., :3], np.asarray(upright(rotated).convert("RGB")))
    assert iou(alpha_of(turned) >= 128, np.rot90(truth, k=-1)) >= 0.9
    assert "exif" not in turned.info and 0x0112 not in turned.getexif()  # viewers must not turn it again

    kept = decode_member(members["tagged.png"], "png")
    assert kept.size == (160, 120)
    assert kept.info.get("icc_profile") == icc
    assert turned.info.get("icc_profile") in (None, b"")  # no profile in, none invented


# ---------------------------------------------------------------- bad files


def test_bad_files_fail_alone_with_a_sentence_that_says_why(root, tmp_path):
    good_png, truth = shape_png((160, 120))
    inputs = {
        "good.png": good_png,
        "photo.jpg": small_photo("coffee"),
        "empty.jpg": b"",
        "notes.png": "shopping list: milk, eggs\n",
        "cut.jpg": truncated_copy(photo("chelsea"), tmp_path / "cut.jpg", keep=0.5).read_bytes(),
        "bomb.png": write_decompression_bomb_png(tmp_path / "bomb.png").read_bytes(),
    }
    with Daemon(root, fake_jobs=False) as daemon:
        for name, data in inputs.items():
            drop(root / "inbox", f"mixed/{name}", data)
        status = daemon.wait_complete("mixed", JOB_SECONDS)
        assert_settled(root, "mixed", list(inputs))
        members = daemon.zip_members("mixed")
        finished = daemon.events("job_finished")

    items = items_by_name(status)
    assert status["counts"] == {"queued": 0, "processing": 0, "done": 2, "failed": 4, "cancelled": 0}
    errors = {name: items[name]["error"] for name in ("empty.jpg", "notes.png", "cut.jpg", "bomb.png")}
    assert errors["empty.jpg"] == "the file is empty"
    assert errors["notes.png"] == "the file is not an image Pillow can read"
    assert errors["cut.jpg"] == "the image is truncated or corrupt"
    assert errors["bomb.png"].startswith("the image has 200,000,000 pixels, over the decompression-bomb limit of ")
    for name, error in errors.items():
        assert_one_sentence(error)
        item = items[name]
        assert (item["status"], item["output"], item["attempts"]) == ("failed", None, 1)
        assert item["retry_marker"] == f"retry/mixed/{name}" and (root / item["retry_marker"]).parent.is_dir()

    for name in ("good.png", "photo.jpg"):
        assert (items[name]["status"], items[name]["error"], items[name]["attempts"]) == ("done", None, 1)
    assert set(members) == {"good.png", "photo.png"}
    assert iou(alpha_of(decode_member(members["good.png"], "png")) >= 128, truth) >= 0.9
    assert decode_member(members["photo.png"], "png").size == upright(inputs["photo.jpg"]).size

    # One job_finished line per item, carrying the same verdict and the job's exit code.
    assert sorted(e["item"] for e in finished) == sorted(inputs)
    for event in finished:
        expected = items[event["item"]]
        assert (event["status"], event["error"], event["session"]) == (expected["status"], expected["error"], "mixed")
        assert event["exit_code"] == (0 if expected["status"] == "done" else 2)

    # The spool keeps only the done cutouts a retry of a failed item would need to rebuild the ZIP,
    # and every original, good or bad, sits in the archive as dropped.
    kept = sorted(path.suffix for path in (root / "state" / "results").iterdir())
    assert kept == [".png"] * sum(item["status"] == "done" for item in items.values()), kept
    assert list((root / "state" / "originals").iterdir()) == []
    for name, data in inputs.items():
        data = data.encode() if isinstance(data, str) else data
        assert (root / "archive" / "mixed" / name).read_bytes() == data, name


# ---------------------------------------------------------------- keep_originals=false


def test_without_keep_originals_only_failed_originals_stay_for_their_retry(root):
    good, _ = shape_png((160, 120))
    with Daemon(root, fake_jobs=False, keep_originals="false") as daemon:
        drop(root / "inbox", "lean/good.png", good)
        drop(root / "inbox", "lean/notes.png", "not an image")
        status = daemon.wait_complete("lean", JOB_SECONDS)
        assert {i["name"]: i["status"] for i in status["items"]} == {"good.png": "done", "notes.png": "failed"}
        originals = root / "state" / "originals"
        wait_for(
            lambda: contents(originals) == [b"not an image"],
            10,
            what="only the failed original left in state/originals",
        )
        assert not (root / "archive" / "lean").exists()
        assert set(daemon.zip_members("lean")) == {"good.png"}

        # Its original is still there, so a retry reads it again (and fails again, for the same reason).
        (root / items_by_name(status)["notes.png"]["retry_marker"]).touch()
        wait_for(
            lambda: items_by_name(daemon.status("lean"))["notes.png"]["attempts"] == 2,
            JOB_SECONDS,
            what="the retry to run",
        )
        retried = items_by_name(daemon.wait_complete("lean", JOB_SECONDS))["notes.png"]
        assert (retried["status"], retried["error"]) == ("failed", "the file is not an image Pillow can read")
        assert contents(originals) == [b"not an image"]


# ---------------------------------------------------------------- name collisions


def test_a_jpg_and_a_png_of_one_name_become_two_distinct_members(root):
    shape, truth = shape_png((160, 120))
    inputs = {"a.jpg": small_photo("chelsea"), "a.png": shape}
    with Daemon(root, fake_jobs=False) as daemon:
        for name, data in inputs.items():
            drop(root / "inbox", f"clash/{name}", data)
        status = daemon.wait_complete("clash", JOB_SECONDS)
        members = daemon.zip_members("clash")

    outputs = {item["name"]: item["output"] for item in status["items"]}
    # outbox.member_name's rule: the first one taken keeps "a.png", the other adds its own extension.
    # Files settle in sorted order, so a.jpg comes first; either order is within the contract.
    assert outputs in ({"a.jpg": "a.png", "a.png": "a-png.png"}, {"a.png": "a.png", "a.jpg": "a-jpg.png"})
    assert set(members) == set(outputs.values())
    # Each member is the cutout of its own source, not the other one twice.
    from_jpg = decode_member(members[outputs["a.jpg"]], "png")
    from_png = decode_member(members[outputs["a.png"]], "png")
    assert from_jpg.size == upright(inputs["a.jpg"]).size == (320, 213)
    assert from_png.size == (160, 120)
    assert iou(alpha_of(from_png) >= 128, truth) >= 0.9
    assert alpha_of(from_jpg).max() >= 250 and alpha_of(from_jpg).min() <= 5
