"""Fixtures shared by every test: no test may leak a thread or a process."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest
from hypothesis import settings as hypothesis_settings

# Fixtures shared by several test folders, found by name: a model folder, a damaged install, a notify socket,
# an inbox and its wake() callback.
pytest_plugins = ["tests.support.models", "tests.support.cli", "tests.support.notify", "tests.support.intake"]

REPO = Path(__file__).resolve().parent.parent
PHOTOS = Path(__file__).resolve().parent.parent / "daemon" / "bgremover" / "bench" / "photos"


def _children_of(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces or parentheses; the ppid follows the last ')'.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append(int(entry.name))
    return found


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if text.encode() in cmdline:
            found.append(int(entry.name))
    return found


# The tiers in the order a run starts them: the longest first, so that with several workers
# (make test) the short files fill in around them instead of one long file running last, alone.
TIER_ORDER = ("soak", "cluster", "bench", "packaging", "web", "model", "daemon", "commands", "unit")


def tier_rank(item: pytest.Item) -> int:
    parts = Path(str(item.path)).relative_to(REPO / "tests").parts
    return TIER_ORDER.index(parts[0]) if parts[0] in TIER_ORDER else len(TIER_ORDER)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    items.sort(key=tier_rank)  # stable: within a tier, files and tests keep their order


@pytest.fixture(autouse=True)
def no_leaks(request, tmp_path):
    """Fail a test that leaves a thread, a child process, or any process working on its tmp_path."""
    threads_before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5
    while True:
        threads = [t for t in threading.enumerate() if t not in threads_before and t.is_alive()]
        children = _children_of(os.getpid())
        strays = _processes_mentioning(str(tmp_path))
        if not (threads or children or strays) or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in set(children) | set(strays):
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
    for pid in children:  # reaped too: a zombie child would fail every later test of this worker as a leak
        try:
            os.waitpid(pid, 0)
        except ChildProcessError:
            pass  # reaped already, by the subprocess object that started it
    assert not threads, f"test leaked threads: {threads}"
    assert not children, f"test leaked child processes: {children}"
    assert not strays, f"test left processes working on its folder: {strays}"


# -- how hard the property tests look ---------------------------------------------------
# "quick", the default, draws few sequences per run: each run draws new ones, and the
# replays in tests/unit/test_queue_properties.py keep every sequence found so far.
# "thorough" is for the soak tier and for a change to the queue:
#   pytest --hypothesis-profile=thorough tests/unit/test_queue_properties.py
hypothesis_settings.register_profile("quick", max_examples=30)
hypothesis_settings.register_profile("thorough", max_examples=100)
hypothesis_settings.load_profile("quick")


# -- the crash soak's options (tests/soak/test_crash_soak.py) ----------------------------

SOAK_DEFAULT_SEED = 20261127
RETENTION_DEFAULT_SESSIONS = 300


def pytest_addoption(parser):
    group = parser.getgroup("soak", "the crash soak (tests/soak/test_crash_soak.py)")
    group.addoption("--soak-images", type=int, default=40, metavar="N", help="images the crash soak drops (default 40)")
    group.addoption(
        "--soak-kills",
        type=int,
        default=6,
        metavar="K",
        help="the least number of times the crash soak kills the daemon with SIGKILL (default 6)",
    )
    group.addoption(
        "--soak-seed",
        type=int,
        default=SOAK_DEFAULT_SEED,
        metavar="S",
        help=f"seed of the crash soak's random choices (default {SOAK_DEFAULT_SEED})",
    )

    group = parser.getgroup("retention", "the retention stream (tests/daemon/test_retention.py)")
    group.addoption(
        "--retention-sessions",
        type=int,
        default=RETENTION_DEFAULT_SESSIONS,
        metavar="N",
        help=f"one-file sessions the retention stream drops (default {RETENTION_DEFAULT_SESSIONS}; the issue's 2000 by hand)",
    )


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "soak: the crash soak; part of the normal run at 40 images, and longer in `make soak` or by hand: "
        "pytest -m soak --soak-images 2000 --soak-kills 100",
    )
