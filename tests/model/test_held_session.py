"""Each job inherits the model session the fork server made once, where that session holds no thread.

Real daemons running the bundled u2netp. With one thread per job (two job
slots on two cores or more) the fork server makes the session itself and
every job, a fresh fork, starts with a private copy-on-write copy of it
instead of building its own. With two threads per job (one slot) the session
would hold a thread pool, which a forking process must not have: each job
then builds its own, as before. Either way the fork server stays one thread.
A model only a folder's job ticket names gets no session in the server (all
it holds counts in every job's memory): its jobs build their own.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tests.conftest import REPO
from tests.daemon.test_isolation import forkserver_of, standbys_of
from tests.support.harness import Daemon, drop, wait_for
from tests.support.images import photo

PHOTOS = ("astronaut", "chelsea", "coffee")


@pytest.mark.parametrize(("slots", "threads", "session"), [(2, 1, "inherited"), (1, 2, "own")])
def test_jobs_inherit_the_fork_servers_session_only_where_it_holds_no_thread(tmp_path, slots, threads, session):
    root = tmp_path / "root"
    with Daemon(root, fake_jobs=False, job_slots=slots, threads=threads) as daemon:
        ready = daemon.events("daemon_ready")[0]
        server = forkserver_of(daemon)
        wait_for(lambda: standbys_of(daemon), what="a waiting job process")  # forked: the server held this then
        server_threads = os.listdir(f"/proc/{server}/task")
        for name in PHOTOS:
            drop(root / "inbox", f"{name}.jpg", photo(name).read_bytes())
        finished = wait_for(lambda: len(daemon.events("job_finished")) == len(PHOTOS) and daemon.events("job_finished"))
        started = daemon.events("job_started")
    assert (ready["intra_op_threads"], ready["model_session"]) == (threads, session)
    assert len(server_threads) == 1, f"the fork server runs {len(server_threads)} threads"
    assert [event["status"] for event in finished] == ["done"] * len(PHOTOS)
    assert {event["model_session"] for event in started} == {session}
    assert {event["model_session"] for event in finished} == {session}


def test_a_model_only_a_ticket_names_is_not_held_and_its_jobs_make_their_own_session(tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy(REPO / "models" / "u2netp.onnx", models / "u2netp-copy.onnx")
    entry = json.loads((REPO / "models" / "manifest.json").read_text())["u2netp"]
    (models / "manifest.json").write_text(json.dumps({"u2netp-copy": {**entry, "file": "u2netp-copy.onnx"}}))
    root = tmp_path / "root"
    with Daemon(root, fake_jobs=False, job_slots=2, threads=1, models_dir=models) as daemon:
        drop(root / "inbox", "copy/bgremover.toml", 'model = "u2netp-copy"\n')
        drop(root / "inbox", "copy/astronaut.jpg", photo("astronaut").read_bytes())
        drop(root / "inbox", "plain/astronaut.jpg", photo("astronaut").read_bytes())
        statuses = {name: daemon.wait_complete(name, timeout=120) for name in ("copy", "plain")}
        finished = {event["session"]: event["model_session"] for event in daemon.events("job_finished")}
    assert {name: status["items"][0]["status"] for name, status in statuses.items()} == {
        "copy": "done",
        "plain": "done",
    }
    assert finished == {"copy": "own", "plain": "inherited"}
