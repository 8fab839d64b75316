"""Redis restarted five times and emptied once under a 100-image run: every image done, no attempt charged.

Real redis-server (restarted without persistence, as the README runs it, and
once emptied with FLUSHALL while it runs), real supervisor and real workers;
after each of these faults a worker that was not there before joins and must
be given work, as one that a host starts during an outage would. The slots
follow the workers (job_slots = auto), as docs/several-machines.md runs it.
"""

from __future__ import annotations

from contextlib import ExitStack

import pytest

from tests.support.cluster import Redis, Worker, celery_daemon, worker_events
from tests.support.harness import drop, wait_for

pytestmark = pytest.mark.timeout(420)

IMAGES = 100
FAULTS = ("restart", "restart", "flushall", "restart", "restart", "restart")


def test_redis_restarts_and_a_flushall_under_a_run_cost_no_attempt_and_let_new_workers_join(tmp_path):
    root = tmp_path / "root"
    with (
        Redis(tmp_path / "redis") as broker,
        celery_daemon(root, broker.url, job_slots="auto") as daemon,
        ExitStack() as workers,
    ):
        workers.enter_context(Worker(root, broker.url, "first"))
        for n in range(IMAGES):
            drop(root / "inbox", f"run/{n:03}.jpg", "sleep 2")
        wait_for(lambda: daemon.events("job_finished"), timeout=120, what="the run under way")
        joined = []
        for n, fault in enumerate(FAULTS):
            done = len(daemon.events("job_finished"))
            assert done < IMAGES, f"the run ended before fault {n}: the test needs longer jobs"
            if fault == "flushall":
                broker.client().flushall()
            else:
                broker.stop()
                restarts = FAULTS[: n + 1].count("restart")
                wait_for(
                    lambda r=restarts: len(daemon.events("broker_unreachable")) >= r, what="the supervisor to notice"
                )
                broker.start()
            newcomer = workers.enter_context(Worker(root, broker.url, f"joined-after-{fault}-{n}"))
            joined.append(newcomer)
            wait_for(
                lambda w=newcomer: worker_events(w, "task_started"), timeout=120, what=f"{newcomer.name} given work"
            )
        status = daemon.wait_complete("run", timeout=240)
        lost = daemon.events("worker_lost")
        idle = [worker.name for worker in joined if not worker_events(worker, "task_started")]
    assert lost == []
    assert idle == []
    assert len(status["items"]) == IMAGES
    charged = [(item["name"], item["status"], item["attempts"]) for item in status["items"]]
    assert [entry for entry in charged if entry[1:] != ("done", 1)] == []
