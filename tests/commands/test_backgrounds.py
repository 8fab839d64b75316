"""A background colour instead of transparency, and JPEG on it: what a marketplace wants."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


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
