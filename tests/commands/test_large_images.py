"""Images above max_megapixels: reduced to fit with a note saying so (large_images = "reduce", the default), or
refused with one sentence (large_images = "refuse").

The limit is set far below the test images' size, so small images exercise it
fast: in matting.decode, in the job process, and in a real daemon with the real model.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_large_images.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import REPO
from tests.support.images import photo
from tests.support.large_images import COFFEE, assert_fits, assert_note


def run_job(tmp_path: Path, *extra: str) -> tuple[subprocess.CompletedProcess, Path, Path]:
    """`python -m bgremover.job` on coffee.jpg to a PNG; returns the finished process, OUT and REPORT."""
    output, report = tmp_path / "out.png", tmp_path / "report.json"
    command = [
        sys.executable, "-m", "bgremover.job", "--input", str(photo("coffee")), "--output", str(output),
        "--report", str(report), "--format", "png", "--quality", "90", "--model", "u2netp", *extra,
    ]  # fmt: skip
    result = subprocess.run(command, check=False, cwd=REPO, capture_output=True, text=True, timeout=120)
    return result, output, report


def test_the_job_reduces_an_image_over_the_limit_and_reports_the_note(tmp_path):
    result, output, report = run_job(tmp_path, "--max-megapixels", "0.05")

    assert result.returncode == 0, result.stderr
    with Image.open(output) as cutout:
        assert cutout.mode == "RGBA"
        assert_fits(cutout.size, COFFEE, 0.05)
        assert_note(json.loads(report.read_text())["note"], COFFEE, cutout.size, 0.05)


def test_the_job_refuses_an_image_over_the_limit_with_exit_2(tmp_path):
    result, output, report = run_job(tmp_path, "--max-megapixels", "0.05", "--large-images", "refuse")

    assert result.returncode == 2, result.stderr
    error = json.loads(report.read_text())["error"]
    assert "0.1 megapixels (400×267)" in error and "max_megapixels = 0.05" in error, error
    assert result.stderr.strip() == error
    assert not output.exists()
