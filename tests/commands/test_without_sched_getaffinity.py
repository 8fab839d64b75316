"""Every command but `run` works on a Python without os.sched_getaffinity, as on macOS.

Each command runs as a real process whose interpreter lost sched_getaffinity
(and sched_setaffinity) before bgremover was imported: a sitecustomize on
PYTHONPATH deletes them, so every Python the command starts is without them too.
The cores bgremover counts then come from os.cpu_count (os.process_cpu_count from
Python 3.13 on).
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from PIL import Image

from bgremover.queue.states import Status
from bgremover.queue.store import Store
from bgremover.settings import load_settings
from tests.conftest import PHOTOS, REPO

HIDE_AFFINITY = "import os\ndel os.sched_getaffinity, os.sched_setaffinity\n"


@pytest.fixture(scope="module")
def without_affinity(tmp_path_factory) -> Path:
    """A folder holding the sitecustomize that takes the affinity calls away."""
    folder = tmp_path_factory.mktemp("without-affinity")
    (folder / "sitecustomize.py").write_text(HIDE_AFFINITY)
    return folder


def python(without_affinity: Path, *args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if not key.startswith("BGREMOVER_")}
    env["PYTHONPATH"] = os.pathsep.join([str(without_affinity), str(REPO)])
    return subprocess.run(
        [sys.executable, *map(str, args)],
        check=False,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
    )


def bgremover(without_affinity: Path, *args: str | Path, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return python(without_affinity, "-m", "bgremover", *args, cwd=cwd)


def test_the_interpreter_really_has_no_affinity_calls(without_affinity):
    result = python(
        without_affinity, "-c", "import os; print(hasattr(os, 'sched_getaffinity'), hasattr(os, 'sched_setaffinity'))"
    )
    assert (result.returncode, result.stdout) == (0, "False False\n"), result.stderr


def test_settings_load_and_count_the_cores_the_os_reports(without_affinity, tmp_path):
    probe = (
        "from bgremover.settings import load_settings, usable_cores\n"
        f"settings = load_settings(root={str(tmp_path)!r})\n"
        "print(usable_cores(), settings.threads)\n"
    )
    result = python(without_affinity, "-c", probe)
    assert result.returncode == 0, result.stderr
    expected = getattr(os, "process_cpu_count", os.cpu_count)()
    assert result.stdout.split() == [str(expected), str(expected)]


def test_help_and_version_print(without_affinity):
    helped = bgremover(without_affinity, "--help")
    assert helped.returncode == 0, helped.stderr
    assert "remove" in helped.stdout and "status" in helped.stdout
    version = bgremover(without_affinity, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("bgremover ")


def test_remove_writes_a_cutout(without_affinity, tmp_path):
    out = tmp_path / "out.png"
    result = bgremover(without_affinity, "remove", PHOTOS / "astronaut.jpg", out, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"wrote {out}"
    with Image.open(PHOTOS / "astronaut.jpg") as original, Image.open(out) as cutout:
        assert (cutout.mode, cutout.size) == ("RGBA", original.size)
        low, high = cutout.getchannel("A").getextrema()
        assert low < 16 and high > 240, "a cutout has both background and subject"


@pytest.fixture
def root_with_a_failure(tmp_path) -> Path:
    """A root whose queue holds session 'catalog': a.jpg failed, b.jpg queued."""
    settings = load_settings(root=tmp_path / "root")
    settings.state_dir.mkdir(parents=True)
    with closing(Store(settings.database)) as store:
        store.create_session("catalog", "catalog", "png", 1000.0)
        failed = store.add_item("catalog", "a.jpg", "a.png", "jpg", b"a.jpg", 1000.0)
        store.add_item("catalog", "b.jpg", "b.png", "jpg", b"b.jpg", 1001.0)
        store.transition(failed.id, Status.QUEUED, Status.PROCESSING, 1010.0)
        store.transition(failed.id, Status.PROCESSING, Status.FAILED, 1020.0, error="the job crashed with exit code 3")
    return settings.root


def test_status_shows_the_session_and_its_failure(without_affinity, root_with_a_failure):
    result = bgremover(without_affinity, "status", "--root", root_with_a_failure)
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("catalog ") and "1 failed" in line for line in result.stdout.splitlines()), result.stdout
    assert "the job crashed with exit code 3" in result.stdout


def test_retry_and_cancel_touch_their_markers(without_affinity, root_with_a_failure):
    retried = bgremover(without_affinity, "retry", "--root", root_with_a_failure, "catalog")
    assert (retried.returncode, retried.stdout) == (0, "retry requested: catalog/a.jpg\n"), retried.stderr
    cancelled = bgremover(without_affinity, "cancel", "--root", root_with_a_failure, "catalog")
    assert (cancelled.returncode, cancelled.stdout) == (0, "cancel requested: catalog\n"), cancelled.stderr
    assert (root_with_a_failure / "retry" / "catalog" / "a.jpg").is_file()
    assert (root_with_a_failure / "cancel" / "catalog").is_file()


def test_models_list_shows_the_bundled_model(without_affinity, tmp_path):
    result = bgremover(without_affinity, "models", "list", "--root", tmp_path)
    assert result.returncode == 0, result.stderr
    assert any(line.startswith("u2netp ") for line in result.stdout.splitlines()), result.stdout
