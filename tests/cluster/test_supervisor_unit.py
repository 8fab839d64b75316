"""The supervisor as its systemd unit runs it under runner = "celery", as far as this sandbox allows.

There is no systemd to start the unit here, so its settings are applied by
hand from the unit file and the celery drop-in, as systemd would merge them:
the environment and the broker's URL as a credential file, the umask, and a
network of its own (`unshare --net`, what PrivateNetwork=yes gives) where the
merged unit asks for one. The unit alone cannot reach a broker ("Network is
unreachable", in one line); with the drop-in, the supervisor reaches a real
redis-server, a worker does an image, and the root's files are made with the
unit's umask.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.cluster import Redis, Worker
from tests.support.harness import FAST, Daemon, drop

pytestmark = pytest.mark.timeout(240)

UNIT = REPO / "systemd" / "bgremover.service"
DROP_IN = REPO / "systemd" / "bgremover.service.d" / "celery.conf"


def merged(*files: Path) -> dict[str, str]:
    """Each setting's value once the files are read in order; an empty assignment resets it, as in systemd.
    Environment= lines add up."""
    found: dict[str, str] = {}
    for path in files:
        for line in path.read_text().splitlines():
            if "=" not in line or line.lstrip().startswith(("#", ";", "[")):
                continue
            key, value = line.strip().split("=", 1)
            if key == "Environment" and value:
                found[key] = f"{found.get(key, '')} {value}".strip()
            else:
                found[key] = value
    return found


def environment(unit: dict[str, str], credentials: Path) -> dict[str, str]:
    pairs = [word.split("=", 1) for word in unit.get("Environment", "").split()]
    return {key: value.replace("%d", str(credentials)) for key, value in pairs}


def credentials_for(unit: dict[str, str], folder: Path, url: str) -> Path:
    """The folder systemd hands the service ($CREDENTIALS_DIRECTORY), holding the LoadCredential= files."""
    name, _, _source = unit["LoadCredential"].partition(":")
    folder.mkdir()
    (folder / name).write_text(url + "\n")
    (folder / name).chmod(0o400)
    return folder


def test_the_unit_alone_has_no_network_and_the_celery_drop_in_gives_it_one_for_the_broker(tmp_path):
    alone, with_drop_in = merged(UNIT), merged(UNIT, DROP_IN)
    assert (alone["PrivateNetwork"], with_drop_in["PrivateNetwork"]) == ("yes", "no")
    assert (with_drop_in["User"], with_drop_in["Group"], with_drop_in["UMask"]) == ("bgremover", "bgremover", "0007")
    assert "DynamicUser" not in with_drop_in
    with Redis(tmp_path / "redis") as broker:
        credentials = credentials_for(with_drop_in, tmp_path / "credentials", broker.url)
        settings = environment(with_drop_in, credentials)
        assert settings["BGREMOVER_RUNNER"] == "celery"
        # The unit's own network (PrivateNetwork=yes) with the drop-in's environment: refused in one line.
        refused = subprocess.run(
            ["unshare", "--user", "--map-root-user", "--net", sys.executable, "-m", "bgremover", "run"]
            + ["--root", str(tmp_path / "cut-off")],
            cwd=REPO,
            env={**FAST, "PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", **settings},
            capture_output=True,
            text=True,
            timeout=60,
        )
        # The merged unit: its umask, its environment, the host's network.
        root = tmp_path / "root"
        umask = int(with_drop_in["UMask"], 8)
        given = {key.removeprefix("BGREMOVER_").lower(): value for key, value in settings.items()}
        daemon = Daemon(root, job_slots=1, **given)
        previous = os.umask(umask)  # inherited by the daemon's process, as systemd sets it
        try:
            daemon.start()
        finally:
            os.umask(previous)
        try:
            with Worker(root, broker.url, "w1"):
                drop(root / "inbox", "shoot/a.jpg", "ok")
                status = daemon.wait_complete("shoot", timeout=120)
        finally:
            daemon.stop()
        modes = {name: (root / "state" / name).stat().st_mode & 0o777 for name in ("root-id", "originals")}

    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("bgremover: cannot start: cannot reach the broker at redis://"), (
        lines
    )
    assert "Network is unreachable" in lines[0]
    assert status["items"][0]["status"] == "done"
    assert modes == {"root-id": 0o660, "originals": 0o770}, "group-writable: the workers and the web page share them"
