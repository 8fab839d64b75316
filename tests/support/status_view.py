"""`bgremover status` and `status --follow` as child processes, and their frames.

Shared by tests/unit/test_status_view.py and tests/daemon/test_status_view.py.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO
from tests.support.cli import cli

BAD_INPUT_ERROR = "the file is not an image Pillow can read"
FRAME_START = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  every [\d.]+ s; Ctrl-C stops$", re.M)


# ---------------------------------------------------------------- the command, as a real process


def status(root: Path, *args: str) -> subprocess.CompletedProcess:
    result = cli("status", "--root", root, *args)
    assert "Traceback" not in result.stderr, result.stderr
    return result


def status_json(root: Path, *args: str) -> dict:
    result = status(root, "--json", *args)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def start_following(root: Path, *args: str) -> subprocess.Popen:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("BGREMOVER_")}
    return subprocess.Popen(
        [sys.executable, "-m", "bgremover", "status", "--root", str(root), "--follow", *args],
        cwd=REPO,
        env={**clean, "PYTHONPATH": str(REPO)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        preexec_fn=as_from_a_terminal,
    )


def as_from_a_terminal() -> None:
    """Ctrl-C as a user's shell leaves it: a suite started in the background of a script ignores SIGINT, and
    its children would inherit that."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def complete_frames(text: str) -> list[str]:
    """The frames a follower printed, less the last, which may still be arriving."""
    starts = [m.start() for m in FRAME_START.finditer(text)]
    return [text[a:b] for a, b in zip(starts, starts[1:])]


def follow_until(process: subprocess.Popen, enough, timeout: float = 30) -> list[str]:
    """Read the follower's output until `enough(frames)`; it keeps running."""
    received, deadline = b"", time.monotonic() + timeout
    while not enough(frames := complete_frames(received.decode())):
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"status --follow did not show enough within {timeout} s:\n{received.decode()}")
        if select.select([process.stdout], [], [], left)[0]:
            chunk = os.read(process.stdout.fileno(), 1 << 16)
            assert chunk, f"status --follow ended early: {process.stderr.read().decode()}"
            received += chunk
    return frames


def interrupt(process: subprocess.Popen) -> tuple[int, str]:
    """Ctrl-C, as a user stops --follow: its exit code and what it printed on stderr."""
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=10)
    return process.returncode, stderr.decode()
