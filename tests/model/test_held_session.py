"""Each job inherits the model session the fork server made once, where that session holds no thread.

Real daemons running the bundled u2netp. With one thread per job (two job
slots on two cores or more) the fork server makes the session itself and
every job, a fresh fork, starts with a private copy-on-write copy of it
instead of building its own. With two threads per job (one slot) the session
would hold a thread pool, which a forking process must not have: each job
then builds its own, as before. Either way the fork server stays one thread.
"""

from __future__ import annotations

import os

import pytest

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
