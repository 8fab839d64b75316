"""A daemon on the openvino backend: its jobs load one compiled model from the cache in the state folder, and
the fork server never loads OpenVINO.

A real daemon, the bundled u2netp, two job slots of one thread. OpenVINO
starts a thread when it is imported, and a process that forks must have none,
so each job imports and loads it itself; what makes that affordable is the
compile cache under state/openvino, which the first job fills and every later
one reads instead of compiling again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.daemon.test_isolation import forkserver_of
from tests.support.harness import Daemon, drop, wait_for
from tests.support.images import photo

PHOTOS = ("astronaut", "chelsea", "coffee")


def finished_jobs(daemon: Daemon, count: int) -> list[dict]:
    return wait_for(
        lambda: len(daemon.events("job_finished")) == count and daemon.events("job_finished"),
        timeout=180,
        what=f"{count} finished jobs",
    )


def test_openvino_jobs_share_one_compiled_model_in_the_state_folder_and_the_fork_server_never_loads_openvino(
    tmp_path,
):
    root = tmp_path / "root"
    cache = root / "state" / "openvino"
    with Daemon(root, fake_jobs=False, job_slots=2, threads=1, backend="openvino", precision="fp32") as daemon:
        ready = daemon.events("daemon_ready")[0]
        server = forkserver_of(daemon)
        for name in PHOTOS:
            drop(root / "inbox", f"{name}.jpg", photo(name).read_bytes())
        first = finished_jobs(daemon, len(PHOTOS))
        blobs = sorted(cache.glob("*.blob"))
        compiled = [(blob.stat().st_ino, blob.stat().st_mtime_ns) for blob in blobs]
        drop(root / "inbox", "later/astronaut.jpg", photo("astronaut").read_bytes())
        later = finished_jobs(daemon, len(PHOTOS) + 1)[-1]
        server_maps = Path(f"/proc/{server}/maps").read_text()
        server_threads = os.listdir(f"/proc/{server}/task")
    assert (ready["backend"], ready["precision"]) == ("openvino", "fp32")
    assert [event["status"] for event in first] + [later["status"]] == ["done"] * (len(PHOTOS) + 1)
    assert {event["model_session"] for event in [*first, later]} == {"own"}
    assert len(blobs) == 1, blobs
    # The later job loaded the compiled model: a compile would have written the blob again.
    assert [(blob.stat().st_ino, blob.stat().st_mtime_ns) for blob in blobs] == compiled
    assert "openvino" not in server_maps, "the fork server has OpenVINO's libraries mapped"
    assert len(server_threads) == 1, f"the fork server runs {len(server_threads)} threads"


# What a job process does before its first image, then which of OpenVINO's modules it holds.
PREPARE_AND_LIST = """
import json, sys
from bgremover.job.process import preload, prepare
config = {"model": "u2netp", "backend": "openvino", "precision": "fp32", "threads": 1, "cache_dir": sys.argv[1]}
prepared = prepare(preload(config, optimize=False))
names = ("openvino", "openvino.tools.ovc", "openvino_telemetry")
print(json.dumps([prepared.error, type(prepared.session).__name__, [n for n in names if sys.modules.get(n)]]))
"""


def test_an_openvino_job_compiles_its_model_without_importing_openvinos_conversion_tools(tmp_path):
    """The tools (convert_model, with telemetry, urllib, http and email) are half the import's CPU, in every job."""
    job = subprocess.run(
        [sys.executable, "-c", PREPARE_AND_LIST, str(tmp_path / "cache")], capture_output=True, text=True, check=True
    )
    assert json.loads(job.stdout) == [None, "OpenVinoSession", ["openvino"]], job.stderr
    # A plain import, as in a user's own program using the Python API, keeps them.
    plain = subprocess.run(
        [sys.executable, "-c", "import sys, openvino; print(sys.modules.get('openvino.tools.ovc') is not None)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert plain.stdout.strip() == "True"
