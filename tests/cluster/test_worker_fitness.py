"""A worker proves it can do the work before it takes any: real redis-server, supervisor and workers.

Three bad workers join a running cluster, each for real: one whose models
folder lacks the supervisor's model, one that runs another bgremover (a copy
of this package whose version says so, first on its PYTHONPATH: a second
install, as a host left un-upgraded has), and one whose root goes away under it
while its job runs (the path it was given is a link, moved to an empty folder,
as an NFS mount point looks once unmounted: the job cannot write its result).
None of their images fails or is charged an attempt, and `bgremover status`
names each of them with why.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import bgremover
from tests.conftest import REPO
from tests.support.cluster import Redis, Worker, celery_daemon, run_bgremover, worker_events
from tests.support.harness import FAST, drop, wait_for
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest

pytestmark = pytest.mark.timeout(300)

OTHER_VERSION = "0.0.9"
UNFIT = ("mounted", "bare", "older")


def another_install(folder: Path) -> Path:
    """This package copied under `folder`, its version changed: what a host not yet upgraded runs."""
    copy = folder / "bgremover"
    shutil.copytree(Path(bgremover.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    written = copy / "version.py"
    text, found = re.subn(r'__version__ = "[^"]*"', f'__version__ = "{OTHER_VERSION}"', written.read_text())
    assert found == 1
    written.write_text(text)
    return folder


def worker_of(install: Path, root: Path, broker: str, name: str) -> subprocess.CompletedProcess:
    env = {
        **FAST,
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": os.pathsep.join([str(install), str(REPO)]),
        "BGREMOVER_BROKER_URL": broker,
    }
    return subprocess.run(
        [sys.executable, "-m", "bgremover", "worker", "--root", str(root), "--name", name],
        cwd=install,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def listed(tmp_path: Path, broker: str) -> dict[str, dict]:
    said = run_bgremover(tmp_path, "status", "--json", runner="celery", broker_url=broker)
    return {worker["name"].split("@")[0]: worker for worker in json.loads(said.stdout)["workers"]}


def test_workers_that_cannot_do_the_work_take_none_and_cost_no_image_an_attempt(tmp_path):
    root, mount, unmounted = tmp_path / "root", tmp_path / "mnt", tmp_path / "unmounted"
    model = redness_model(root / "models" / "redness.onnx")
    write_manifest(root / "models", {"redness": manifest_entry(model)})
    (tmp_path / "empty-models").mkdir()
    unmounted.mkdir()
    mount.symlink_to(root)
    install = another_install(tmp_path / "other-install")
    with (
        Redis(tmp_path / "redis") as broker,
        celery_daemon(root, broker.url, job_slots="auto", model="redness") as daemon,
        Worker(root, broker.url, "good"),
        Worker(mount, broker.url, "mounted") as mounted,
    ):
        for n in range(4):
            drop(root / "inbox", f"before/{n}.jpg", "sleep 0.5")
        daemon.wait_complete("before", timeout=120)
        assert worker_events(mounted, "task_started"), "the mounted worker took no work while it could"

        taken = len(worker_events(mounted, "task_started"))
        for n in range(2):  # one for each worker
            drop(root / "inbox", f"after/long{n}.jpg", "sleep 8")
        wait_for(lambda: len(worker_events(mounted, "task_started")) > taken, what="a long job on the mounted worker")
        time.sleep(6)  # the supervisor has seen its lease (it looks every 5 s)
        moved = tmp_path / "mnt-moving"
        moved.symlink_to(unmounted)
        moved.replace(mount)  # the mount point is empty now: the job will not find where to write
        bare = run_bgremover(
            tmp_path, "worker", "--name", "bare", broker_url=broker.url, models_dir=tmp_path / "empty-models"
        )
        older = worker_of(install, root, broker.url, "older")
        for n in range(6):
            drop(root / "inbox", f"late/{n}.jpg", "sleep 0.5")
        unfit = wait_for(
            lambda: all((seen := listed(tmp_path, broker.url)).get(n, {}).get("problem") for n in UNFIT) and seen,
            what="status to name the three workers that cannot work, the one that lost its root too",
        )
        status = daemon.wait_complete("after", timeout=150)
        late = daemon.wait_complete("late", timeout=150)
        before = daemon.status("before")
        finished = daemon.events("job_finished")
        lost = daemon.events("worker_lost")
        slots = daemon.events("job_slots_changed")
        fit_log = worker_events(mounted, "worker_unfit")
        given_back = worker_events(mounted, "task_handed_back")

    assert (bare.returncode, older.returncode) == (2, 2), (bare.stderr, older.stderr)
    assert bare.stderr.splitlines() == [
        "bgremover: the supervisor's model 'redness' cannot be used here: model 'redness' is in neither "
        f"the bundled manifest or {tmp_path / 'empty-models' / 'manifest.json'} (known: u2netp)"
    ]
    assert older.stderr.splitlines() == [
        f"bgremover: this worker runs bgremover {OTHER_VERSION} and the supervisor {bgremover.__version__}: "
        "install the same version on both"
    ]
    problem = f"{mount} is not the supervisor's root (its state/root-id differs, or is missing): mount the supervisor's root there"
    assert [event["problem"] for event in fit_log] == [problem]
    assert unfit["mounted"]["problem"] == problem
    assert unfit["bare"]["problem"] == bare.stderr.splitlines()[0].removeprefix("bgremover: ")
    assert unfit["older"]["problem"] == older.stderr.splitlines()[0].removeprefix("bgremover: ")
    assert unfit["older"]["version"] == OTHER_VERSION
    assert unfit["good"]["problem"] is None
    # The long job failed on the mounted worker for want of its root: given back, and run again by the good
    # one under the same attempt (every item of "after" was made by it, each in one attempt: below).
    assert [(event["reason"], event["attempt"]) for event in given_back if event["job_failed"]] == [(problem, 1)]
    assert {event["reason"] for event in given_back} == {problem}  # and any task it held unrun likewise

    items = before["items"] + status["items"] + late["items"]
    assert [(item["status"], item["attempts"]) for item in items] == [("done", 1)] * 12, items
    assert {item["worker"].split("@")[0] for item in status["items"] + late["items"]} == {"good"}
    assert [event for event in finished if event["status"] != "done"] == []
    assert lost == []
    assert slots[-1]["workers_slots"] == 1, slots  # the good worker's slot alone


def test_a_model_only_a_ticket_asks_for_goes_only_to_the_workers_that_have_it(tmp_path):
    """The supervisor's own model is on every worker (they check it); a ticket's may not be. Its tasks wait in a
    queue of that model's, which only workers with the model read: one without it is never given them."""
    root = tmp_path / "root"
    model = redness_model(root / "models" / "redness.onnx")
    write_manifest(root / "models", {"redness": manifest_entry(model)})
    (tmp_path / "empty-models").mkdir()
    with (
        Redis(tmp_path / "redis") as broker,
        celery_daemon(root, broker.url, job_slots="auto") as daemon,
        Worker(root, broker.url, "bare", models_dir=tmp_path / "empty-models") as bare,
        Worker(root, broker.url, "equipped") as equipped,
    ):
        drop(root / "inbox", "red/bgremover.toml", 'model = "redness"\n')
        for n in range(6):
            drop(root / "inbox", f"red/{n}.jpg", "sleep 0.3")
        for n in range(4):
            drop(root / "inbox", f"plain/{n}.jpg", "sleep 0.3")
        red = daemon.wait_complete("red", timeout=150)
        plain = daemon.wait_complete("plain", timeout=150)
        listed_models = listed(tmp_path, broker.url)

    assert [(item["status"], item["attempts"]) for item in red["items"] + plain["items"]] == [("done", 1)] * 10
    assert {item["worker"].split("@")[0] for item in red["items"]} == {"equipped"}
    assert worker_events(bare, "task_handed_back") == []
    assert worker_events(equipped, "task_handed_back") == []
    assert "redness" in listed_models["equipped"]["models"] and "redness" not in listed_models["bare"]["models"]
