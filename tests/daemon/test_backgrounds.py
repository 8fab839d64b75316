"""A background colour instead of transparency, and JPEG on it: what a marketplace wants."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bgremover.intake.tickets import TICKET_NAME
from tests.conftest import REPO
from tests.support.harness import Daemon
from tests.support.images import encoded, shape_on_texture


def test_jpeg_without_a_background_colour_is_refused_at_start_up(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "bgremover", "run", "--root", str(tmp_path / "root")], cwd=REPO, capture_output=True,
        text=True, env={"PYTHONPATH": str(REPO), "BGREMOVER_OUTPUT_FORMAT": "jpeg", "PATH": "/usr/bin:/bin"},
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip().endswith(
        'output_format "jpeg" cannot keep transparency: set background to a colour, e.g. background = "white"'
    )
    assert not (tmp_path / "root").exists()  # refused before any folder was made


# -- through the real daemon and model -------------------------------------------


def drop_folder(root: Path, folder: str, ticket: str | None, image: bytes) -> None:
    staging = root.parent / "staging" / folder
    staging.mkdir(parents=True)
    if ticket:
        (staging / TICKET_NAME).write_text(ticket)
    (staging / "shape.png").write_bytes(image)
    staging.rename(root / "inbox" / folder)


def test_white_backgrounds_are_exactly_white_where_the_cutout_is_transparent(tmp_path):
    root = tmp_path / "root"
    image, _ = shape_on_texture((160, 120))
    with Daemon(root, fake_jobs=False, session_idle_seconds=1) as daemon:
        drop_folder(root, "cutout", None, encoded(image, "PNG"))
        drop_folder(root, "white", 'background = "white"', encoded(image, "PNG"))
        drop_folder(root, "shop", 'output_format = "jpeg"\nbackground = "white"\nquality = 90', encoded(image, "PNG"))
        for name in ("cutout", "white", "shop"):
            daemon.wait_complete(name, timeout=120)
        cutout = np.asarray(Image.open(io.BytesIO(daemon.zip_members("cutout")["shape.png"])))
        white = Image.open(io.BytesIO(daemon.zip_members("white")["shape.png"]))
        jpeg = Image.open(io.BytesIO(daemon.zip_members("shop")["shape.jpg"]))

    alpha = cutout[..., 3]
    assert (alpha == 0).any() and (alpha == 255).any()
    pixels = np.asarray(white)
    assert white.mode == "RGB"
    assert (pixels[alpha == 0] == 255).all()  # pure white, RGB 255,255,255
    np.testing.assert_array_equal(pixels[alpha == 255], cutout[..., :3][alpha == 255])  # the subject untouched
    assert (jpeg.format, jpeg.mode, jpeg.size) == ("JPEG", "RGB", (160, 120))
    assert np.asarray(jpeg)[alpha == 0].mean() > 250  # white, give or take JPEG's rounding
