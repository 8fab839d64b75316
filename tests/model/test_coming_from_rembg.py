"""The README's "Coming from rembg" table: every bgremover spelling in it, run as written, agrees with the daemon.

Each row's bgremover command runs through the shell in a folder holding
in.jpg (and in/in.jpg for the folder row), exactly as the README spells it;
its output must have the photo's size and the subject the daemon cut from the
same photo with the same model: an IoU of alpha >= 128 of at least 0.99, or,
over a white background, the daemon's cutout laid over white.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.support import docs
from tests.support.harness import Daemon
from tests.support.images import iou, photo

PHOTO = "chelsea"


def table_rows() -> list[tuple[str, str]]:
    """(rembg, bgremover) command lines from the section's table, in order."""
    section = docs.section("Coming from rembg")
    rows = re.findall(r"^\| `(rembg [^`]+)` \| `(bgremover [^`]+)` \|$", section, flags=re.M)
    assert len(rows) >= 5, "the table lost its rows"
    return rows


@pytest.fixture(scope="module")
def daemons_cutout(tmp_path_factory) -> np.ndarray:
    """The daemon's cutout of the photo with u2netp, H×W×4."""
    root = tmp_path_factory.mktemp("daemon") / "root"
    with Daemon(root, fake_jobs=False, model="u2netp") as daemon:
        (root / "inbox" / "shoot").mkdir(parents=True)
        shutil.copy(photo(PHOTO), root / "inbox" / "shoot" / "in.jpg")
        daemon.wait_complete("shoot", timeout=120)
        cutout = daemon.zip_members("shoot")["in.png"]
    with Image.open(io.BytesIO(cutout)) as image:
        return np.asarray(image.convert("RGBA"))


def over_white(cutout: np.ndarray) -> np.ndarray:
    alpha = cutout[..., 3:4].astype(float) / 255
    return np.round(cutout[..., :3] * alpha + 255 * (1 - alpha)).astype(int)


def subject(path: Path) -> np.ndarray:
    """Where the output shows the subject: its alpha, or its grey level for a mask."""
    with Image.open(path) as image:
        return np.asarray(image.getchannel("A") if image.mode == "RGBA" else image.convert("L")) >= 128


@pytest.mark.parametrize(("rembg", "ours"), table_rows(), ids=[row[0] for row in table_rows()])
def test_each_rembg_spelling_in_the_readme_runs_and_agrees_with_the_daemon(tmp_path, daemons_cutout, rembg, ours):
    shutil.copy(photo(PHOTO), tmp_path / "in.jpg")
    (tmp_path / "in").mkdir()
    shutil.copy(photo(PHOTO), tmp_path / "in" / "in.jpg")
    env = {key: value for key, value in os.environ.items() if not key.startswith("BGREMOVER_")}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", BGREMOVER_ROOT=str(tmp_path / "root")
    )
    result = subprocess.run(["bash", "-c", ours], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{ours}: {result.stderr}"
    out = tmp_path / ("out/in.png" if " -o out" in ours else "out.png")
    with Image.open(out) as image, Image.open(photo(PHOTO)) as original:
        assert image.size == original.size
        pixels = np.asarray(image.convert("RGBA")).astype(int)
        assert (image.mode == "L") == ("-om" in ours), f"{ours}: a {image.mode} image; -om makes the mask alone"
    if "-bgc" in ours:
        assert pixels[..., 3].min() == 255, "-bgc 255 255 255 255 gives an opaque background"
        close = (np.abs(pixels[..., :3] - over_white(daemons_cutout)).max(axis=2) <= 3).mean()
        assert close >= 0.99, f"{ours}: only {close:.3f} of the pixels match the daemon's cutout over white"
        return
    agreement = iou(subject(out), daemons_cutout[..., 3] >= 128)
    assert agreement >= 0.99, f"{ours}: IoU {agreement:.3f} against the daemon's cutout"
