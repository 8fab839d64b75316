"""bgremover installs beside python-daemon, whose top-level package is `daemon`, and neither hides the other.

The source tree keeps the package in a folder named daemon/ (daemon/bgremover),
so a wheel that shipped that folder, or an interpreter started in the checkout,
could take it for python-daemon's `daemon`. Here a fresh venv gets
python-daemon from the package index and bgremover's own wheel (built for real,
installed without its dependencies, so only the modules that need none are
imported), and one interpreter imports both.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import bgremover
from tests.conftest import REPO

# Imports python-daemon (3.1 dropped daemon.runner; DaemonContext and daemon.pidfile remain) and the parts of
# bgremover that need no third-party package, then says where each module came from and which files each
# distribution installed.
PROBE = """
import importlib.metadata, json
import daemon, daemon.pidfile
import bgremover, bgremover.queue.states
def files(name):
    dist = importlib.metadata.distribution(name)
    return dist.version, [str(dist.locate_file(f).resolve()) for f in dist.files]
print(json.dumps({
    "modules": {m.__name__: m.__file__ for m in (daemon, daemon.pidfile, bgremover, bgremover.queue.states)},
    "distributions": {name: files(name) for name in ("python-daemon", "bgremover")},
    "context": daemon.DaemonContext.__name__, "states": [s.value for s in bgremover.queue.states.Status],
}))
"""


def run(*args: str | Path, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return subprocess.run(
        [*map(str, args)],
        check=False,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh venv holding python-daemon (with its dependency) and bgremover's wheel (without its dependencies)."""
    work = tmp_path_factory.mktemp("python-daemon")
    python = work / "venv" / "bin" / "python"
    steps = [
        (sys.executable, "-m", "venv", work / "venv"),
        (python, "-m", "pip", "install", "--quiet", "python-daemon"),
        (python, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", work / "wheel", REPO),
    ]
    for step in steps:
        result = run(*step, cwd=work)
        assert result.returncode == 0, f"{' '.join(map(str, step))}:\n{result.stdout}{result.stderr}"
    (wheel,) = (work / "wheel").glob("bgremover-*.whl")
    result = run(python, "-m", "pip", "install", "--quiet", "--no-deps", wheel, cwd=work)
    assert result.returncode == 0, result.stdout + result.stderr
    return work / "venv"


def probe(venv: Path, cwd: Path) -> dict:
    result = run(venv / "bin" / "python", "-c", PROBE, cwd=cwd)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.mark.parametrize("where", ["elsewhere", "in-the-checkout"])
def test_daemon_is_python_daemons_and_bgremover_is_the_wheels_in_one_interpreter(venv, tmp_path, where):
    # In the checkout, the current folder comes first on sys.path and holds daemon/, a folder without __init__.py.
    found = probe(venv, REPO if where == "in-the-checkout" else tmp_path)

    python_daemon_version, python_daemon_files = found["distributions"]["python-daemon"]
    bgremover_version, bgremover_files = found["distributions"]["bgremover"]
    modules = {name: str(Path(path).resolve()) for name, path in found["modules"].items()}
    assert modules["daemon"] in python_daemon_files and modules["daemon.pidfile"] in python_daemon_files
    assert modules["bgremover"] in bgremover_files and modules["bgremover.queue.states"] in bgremover_files
    site = Path(modules["daemon"]).parent.parent
    assert site.is_relative_to(venv.resolve()) and Path(modules["bgremover"]).parent.parent == site
    assert not Path(modules["bgremover"]).is_relative_to(REPO), "bgremover must come from the wheel, not the checkout"
    assert int(python_daemon_version.split(".")[0]) >= 3
    assert bgremover_version == bgremover.__version__
    assert found["context"] == "DaemonContext" and "queued" in found["states"]


def test_the_wheel_installs_no_top_level_daemon_package(venv, tmp_path):
    found = probe(venv, tmp_path)

    site = Path(found["modules"]["bgremover"]).resolve().parent.parent
    _, bgremover_files = found["distributions"]["bgremover"]
    top_level = {Path(path).relative_to(site).parts[0] for path in bgremover_files if Path(path).is_relative_to(site)}
    assert "daemon" not in top_level, "the wheel ships the checkout's daemon/ folder, which would shadow python-daemon"
    assert "bgremover" in top_level
    _, python_daemon_files = found["distributions"]["python-daemon"]
    assert not set(bgremover_files) & set(python_daemon_files), "the two distributions share installed files"
