"""Images above max_megapixels: reduced to fit with a note saying so (large_images = "reduce", the default), or
refused with one sentence (large_images = "refuse").

The limit is set far below the test images' size, so small images exercise it
fast: in matting.decode, in the job process, and in a real daemon with the real model.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_large_images.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from PIL import Image, ImageDraw

from bgremover.settings import Settings
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


def run_job_measured(command: list[str]) -> tuple[int, int]:
    """Run the job and wait for it with wait4, which gives that one process's own peak RSS: (exit code, MB)."""
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)  # reaped here; Popen must not wait for it again
    process.stderr.close()
    return process.returncode, usage.ru_maxrss // 1024  # ru_maxrss is in KiB on Linux


def test_a_100_megapixel_photo_is_reduced_within_the_job_memory_limit(tmp_path):
    # 12000×8400: a 100 MP camera's frame, over Pillow's own decompression-bomb limit (89.5 MP).
    # Flat colour with a shape keeps the JPEG small on disk.
    original = (12000, 8400)
    big = Image.new("RGB", original, (40, 90, 160))
    ImageDraw.Draw(big).ellipse((3000, 2000, 9000, 6400), fill=(230, 200, 60))
    source = tmp_path / "camera.jpg"
    big.save(source, "JPEG", quality=80)
    del big
    output, report = tmp_path / "out.png", tmp_path / "report.json"
    command = [
        sys.executable, "-m", "bgremover.job", "--input", str(source), "--output", str(output),
        "--report", str(report), "--format", "png", "--png-compress-level", "1", "--model", "u2netp",
    ]  # fmt: skip

    code, peak_mb = run_job_measured(command)
    print(f"peak RSS of the job: {peak_mb} MB")

    assert code == 0, json.loads(report.read_text())["error"]
    limit = Settings.model_fields["max_megapixels"].default
    with Image.open(output) as cutout:
        assert_fits(cutout.size, original, limit)
        assert_note(json.loads(report.read_text())["note"], original, cutout.size, limit)
    # The supervisor stops a job whose resident memory passes job_memory_limit_mb (supervisor/dispatch.py).
    assert peak_mb < Settings.model_fields["job_memory_limit_mb"].default, f"peak RSS {peak_mb} MB"
