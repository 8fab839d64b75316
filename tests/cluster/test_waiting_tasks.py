"""Nothing is sent while no worker is alive, and a job's time starts when a worker takes its task.

Real redis-server, supervisor and workers. Every worker is stopped for twice
the job timeout while images arrive: the supervisor says so and sends nothing,
their items wait in queued, nothing fails, and they run, each in its first
attempt, once a worker is back.
"""

from __future__ import annotations

import time

import pytest

from tests.support.cluster import Redis, Worker, celery_daemon
from tests.support.harness import drop, wait_for

pytestmark = pytest.mark.timeout(240)

TIMEOUT_SECONDS = 6


def test_tasks_waiting_for_a_worker_are_never_timed_out_and_run_once_one_is_back(tmp_path):
    root = tmp_path / "root"
    limits = {"job_timeout_seconds": TIMEOUT_SECONDS, "kill_grace_seconds": 1}
    with (
        Redis(tmp_path / "redis") as broker,
        celery_daemon(root, broker.url, job_slots=2, **limits) as daemon,
    ):
        with Worker(root, broker.url, "first", **limits):
            drop(root / "inbox", "early/a.jpg", "ok")
            daemon.wait_complete("early", timeout=60)
            said = len(daemon.events("no_worker"))  # once at start, before this worker was heard of
        # Every worker stopped: what comes now waits in the queue, where a cancel still reaches it.
        held = wait_for(lambda: daemon.events("no_worker")[said:], what="the supervisor to say no worker is left")
        for n in range(3):
            drop(root / "inbox", f"waiting/{n}.jpg", "sleep 0.5")
        wait_for(lambda: len((daemon.status("waiting") or {"items": []})["items"]) == 3, what="the three items taken")
        time.sleep(2 * TIMEOUT_SECONDS)
        meanwhile = [item["status"] for item in daemon.status("waiting")["items"]]
        sent = daemon.events("job_started")
        stopping = daemon.events("job_stopping")
        with Worker(root, broker.url, "back", **limits):
            status = daemon.wait_complete("waiting", timeout=90)
        finished = daemon.events("job_finished")
        heard = daemon.events("worker_heard")

    assert meanwhile == ["queued"] * 3
    assert len(sent) == 1, "a task was sent while no worker was alive"
    assert held[0]["note"] == "jobs wait in queued until a worker is heard of"
    assert heard and heard[-1]["workers_slots"] == 1
    assert stopping == [], "a task that only waited was stopped as over its time"
    assert [(item["status"], item["attempts"]) for item in status["items"]] == [("done", 1)] * 3
    assert [event for event in finished if event["status"] != "done"] == []


def test_a_job_over_its_time_on_a_worker_still_fails_as_a_timeout(tmp_path):
    """The worker's own deadline counts from the job's start and comes first; its answer says why it stopped
    the job, so the item fails for its time, not as a job killed by a signal."""
    root = tmp_path / "root"
    limits = {"job_timeout_seconds": TIMEOUT_SECONDS, "kill_grace_seconds": 1}
    with (
        Redis(tmp_path / "redis") as broker,
        celery_daemon(root, broker.url, job_slots=1, **limits) as daemon,
        Worker(root, broker.url, "w1", **limits),
    ):
        drop(root / "inbox", "slow/a.jpg", "sleep 60")
        status = daemon.wait_complete("slow", timeout=90)
    item = status["items"][0]
    assert (item["status"], item["attempts"]) == ("failed", 1)
    assert item["error"] == f"the job took longer than {TIMEOUT_SECONDS} s (job_timeout_seconds) and was killed"
