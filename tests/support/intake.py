"""An inbox folder and a wake() callback that counts, for the tests that drive the real watcher.

Fixtures found by name (tests/conftest.py lists this module in pytest_plugins), shared by
tests/unit/test_intake.py and tests/commands/test_intake.py.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest


class Wakes:
    """A wake() callback that counts calls and lets a test wait for one."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.count = 0

    def __call__(self) -> None:
        self.count += 1
        self.event.set()


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    folder = tmp_path / "inbox"
    folder.mkdir()
    return folder


@pytest.fixture
def wakes() -> Wakes:
    return Wakes()
