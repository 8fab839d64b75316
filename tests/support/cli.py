"""`bgremover ARGS` as a user at a shell runs it, and the one line a failed command prints."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def cli(*args: str | Path, env: dict[str, str] | None = None, cwd: Path = REPO,
        pythonpath: Path = REPO) -> subprocess.CompletedProcess:
    """`bgremover ARGS` as a child process; `env` adds BGREMOVER_* variables to a clean environment."""
    clean = {key: value for key, value in os.environ.items() if not key.startswith("BGREMOVER_")}
    clean.update(PYTHONPATH=str(pythonpath), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "bgremover", *map(str, args)], check=False,
        cwd=cwd, env=clean, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )


def one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single `bgremover: ...` line a failed command prints, with no traceback."""
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("bgremover: "), result.stderr
    return lines[0]
