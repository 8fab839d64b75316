"""`bgremover ARGS` as a user at a shell runs it, the one line a failed command prints, and a damaged install."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO


def cli(
    *args: str | Path, env: dict[str, str] | None = None, cwd: Path = REPO, pythonpath: Path = REPO
) -> subprocess.CompletedProcess:
    """`bgremover ARGS` as a child process; `env` adds BGREMOVER_* variables to a clean environment."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("BGREMOVER_")}
    clean.update(PYTHONPATH=str(pythonpath), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "bgremover", *map(str, args)],
        check=False,
        cwd=cwd,
        env=clean,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def cli_piped(*args: str | Path, stdin: bytes, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`bgremover ARGS < FILE > OUT`: `stdin` piped in, stdout kept as bytes (an image), stderr as text."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("BGREMOVER_")}
    clean.update(PYTHONPATH=str(REPO), **(env or {}))
    result = subprocess.run(
        [sys.executable, "-m", "bgremover", *map(str, args)],
        check=False,
        cwd=REPO,
        env=clean,
        input=stdin,
        capture_output=True,
        timeout=120,
    )
    return subprocess.CompletedProcess(result.args, result.returncode, result.stdout, result.stderr.decode())


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single `bgremover: ...` line a failed command prints, with no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bgremover: "), result.stderr
    return lines[0]


@pytest.fixture
def damaged_install(tmp_path) -> Path:
    """A copy of the package laid out as a wheel installs it (bgremover/models/bundled/ inside), one byte of the model flipped.

    matting.models_dir() has no setting or variable; it looks beside the package,
    so a package copy is the only way to point a real `bgremover` process at another models folder.
    """
    site = tmp_path / "site"
    shutil.copytree(REPO / "daemon" / "bgremover", site / "bgremover", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "models", site / "bgremover" / "models" / "bundled")
    model = site / "bgremover" / "models" / "bundled" / "u2netp.onnx"
    data = bytearray(model.read_bytes())
    data[len(data) // 2] ^= 0x01
    model.write_bytes(bytes(data))
    return site
