"""Faults of the broker and of the supervisor cost time, never a user's attempt, and never run an item the user stopped.

Real redis-server (restarted without persistence, as the README runs it),
real supervisor (killed with SIGKILL and started again) and real workers
(killed with SIGKILL, process tree and all, as a host that loses power).
"""

from __future__ import annotations

import time

import pytest

from tests.support.cluster import Redis, Worker, celery_daemon, kill_host, worker_events
from tests.support.harness import drop, wait_for

pytestmark = pytest.mark.timeout(300)

LEASE_SEEN_SECONDS = 6  # the supervisor looks for a running task's lease every 5 s


def test_a_redis_restart_under_running_jobs_is_not_a_lost_worker(tmp_path):
    """The workers' leases go with Redis's data; the jobs are sent again under their attempt, and no attempt is charged."""
    root = tmp_path / "root"
    with (
        Redis(tmp_path / "redis") as broker,
        celery_daemon(root, broker.url, job_slots=2) as daemon,
        Worker(root, broker.url, "w1") as first,
        Worker(root, broker.url, "w2") as second,
    ):
        for wave in range(2):  # items 1 and 2, then 3 and 4; Redis restarted under each pair
            tasks = {f"bgremover-{item}-1" for item in (2 * wave + 1, 2 * wave + 2)}
            for item in (1, 2):
                drop(root / "inbox", f"wave{wave}/{item}.jpg", "sleep 6")
            wait_for(lambda tasks=tasks: tasks <= started_tasks(first, second), timeout=120, what="both jobs running")
            time.sleep(LEASE_SEEN_SECONDS)  # the supervisor has seen both leases
            broker.stop()
            wait_for(lambda wave=wave: len(daemon.events("broker_unreachable")) > wave, what="the supervisor to notice")
            broker.start()
        statuses = [daemon.wait_complete(f"wave{wave}", timeout=180) for wave in range(2)]
        lost = daemon.events("worker_lost")
    assert lost == []
    items = [item for status in statuses for item in status["items"]]
    assert [(item["status"], item["attempts"]) for item in items] == [("done", 1)] * 4


def started_tasks(*workers: Worker) -> set[str]:
    return {event["task"] for worker in workers for event in worker_events(worker, "task_started")}


def test_the_lost_worker_budget_counts_from_the_users_retry(tmp_path):
    """Two workers lost under an item fail it; the user's retry gives it a budget afresh: one more loss runs it again."""
    root = tmp_path / "root"
    with Redis(tmp_path / "redis") as broker, celery_daemon(root, broker.url, job_slots=1) as daemon:
        drop(root / "inbox", "shoot/a.jpg", "sleep 6")
        for n in range(3):
            if n == 2:
                failed = daemon.wait_complete("shoot", timeout=120)
                (root / "retry" / "shoot" / "a.jpg").touch()
            with Worker(root, broker.url, f"doomed{n}") as doomed:
                wait_for(lambda: worker_events(doomed, "task_started"), timeout=120, what="the job on a doomed worker")
                kill_host(doomed)
            wait_for(lambda n=n: len(daemon.events("worker_lost")) > n, timeout=120, what="the worker's loss noticed")
        with Worker(root, broker.url, "spared"):
            status = wait_for(
                lambda: (seen := daemon.status("shoot"))["items"][0]["status"] in ("done", "failed") and seen,
                timeout=120,
                what="the item's end",
            )
    assert (failed["items"][0]["status"], failed["items"][0]["attempts"]) == ("failed", 2)
    assert failed["items"][0]["error"].startswith("worker lost: ")
    assert (status["items"][0]["status"], status["items"][0]["attempts"]) == ("done", 4)


def test_a_cancel_then_a_supervisor_crash_in_the_grace_window_does_not_run_the_item_again(tmp_path):
    root = tmp_path / "root"
    with Redis(tmp_path / "redis") as broker:
        daemon = celery_daemon(root, broker.url, job_slots=1, kill_grace_seconds=5)
        with daemon, Worker(root, broker.url, "w1", kill_grace_seconds=5) as worker:
            drop(root / "inbox", "shoot/a.jpg", "ignore-term")
            wait_for(lambda: worker_events(worker, "task_started"), timeout=120, what="the job on the worker")
            (root / "cancel" / "shoot").touch()
            wait_for(lambda: daemon.events("job_stopping"), what="the cancel under way")
            daemon.kill()  # within the 5 s the job is given to end after its TERM
            daemon.start()
            status = daemon.wait_complete("shoot", timeout=120)
            time.sleep(LEASE_SEEN_SECONDS)  # time enough for a task sent again to be taken
            started = worker_events(worker, "task_started")
    assert (status["items"][0]["status"], status["items"][0]["attempts"]) == ("cancelled", 1)
    assert [event["task"] for event in started] == ["bgremover-1-1"]


def test_tasks_a_restart_with_fewer_slots_does_not_take_up_are_cancelled_on_their_worker(tmp_path):
    root = tmp_path / "root"
    with Redis(tmp_path / "redis") as broker:
        daemon = celery_daemon(root, broker.url, job_slots=2).start()
        with Worker(root, broker.url, "w1", slots=2) as worker:
            drop(root / "inbox", "shoot/a.jpg", "sleep 20")
            drop(root / "inbox", "shoot/b.jpg", "sleep 20")
            wait_for(lambda: len(worker_events(worker, "task_started")) == 2, timeout=120, what="both jobs running")
            daemon.kill()
            with celery_daemon(root, broker.url, job_slots=1) as fewer:
                adopted = wait_for(lambda: fewer.events("job_adopted"), what="one task taken up")
                stopped = wait_for(
                    lambda: [
                        event for event in worker_events(worker, "task_finished") if event["stop_reason"] == "cancel"
                    ],
                    timeout=60,
                    what="the other task stopped on its worker",
                )
                status = fewer.wait_complete("shoot", timeout=180)
    assert len(adopted) == 1
    assert [event["task"] for event in stopped] == [
        task for task in ("bgremover-1-1", "bgremover-2-1") if task != adopted[0]["task_id"]
    ]
    assert sorted((item["status"], item["attempts"]) for item in status["items"]) == [("done", 1), ("done", 2)]
