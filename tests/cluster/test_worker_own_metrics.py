"""Each worker's own metrics: real redis-server, supervisor and worker, the worker's textfile and port read.

The worker counts, in its own metrics, the tasks its slots took and how each
ended, whether its checks pass (and which one fails), its slots, its version
and models; and never shows the broker's password. Its root is given as a
link, which is then moved to an empty folder, as an NFS mount point looks once
unmounted: the worker fails its root check, and the metrics say so.
"""

from __future__ import annotations

import os
import signal
import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

import bgremover
from tests.support.cluster import Redis, Worker, celery_daemon, descendants, worker_events
from tests.support.harness import drop, wait_for

pytestmark = pytest.mark.timeout(300)


def parsed(text: str) -> dict[tuple, float]:
    """(sample name, its labels sorted) -> value, for every bgremover_ sample."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith("bgremover_")
    }


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def ended(found: dict[tuple, float], outcome: str) -> float:
    return found[("bgremover_worker_tasks_ended_total", (("outcome", outcome),))]


def failing(found: dict[tuple, float]) -> list[str]:
    return sorted(
        dict(labels)["check"]
        for (name, labels), value in found.items()
        if name == "bgremover_worker_check_failing" and value
    )


def test_a_worker_serves_its_own_tasks_slots_and_fitness_on_its_port_and_in_its_textfile(tmp_path):
    root, mount, unmounted = tmp_path / "root", tmp_path / "mnt", tmp_path / "unmounted"
    unmounted.mkdir()
    mount.symlink_to(root)
    textfile = tmp_path / "metrics" / "worker.prom"
    textfile.parent.mkdir()
    port = free_port()
    with (
        Redis(tmp_path / "redis", password="s3cret-of-the-broker") as broker,
        celery_daemon(root, broker.url, job_slots="auto") as daemon,
        Worker(mount, broker.url, "w1", slots=2, metrics_textfile=textfile, metrics_port=port),
    ):
        for n in range(5):
            drop(root / "inbox", f"shoot/{n}.jpg", "sleep 0.2")
        drop(root / "inbox", "shoot/broken.jpg", "exit 3")
        status = daemon.wait_complete("shoot", timeout=150)
        expected = {
            "finished": sum(item["attempts"] for item in status["items"] if item["status"] == "done"),
            "failed": sum(item["attempts"] for item in status["items"] if item["status"] == "failed"),
        }
        settled = wait_for(
            lambda: (
                (seen := parsed(textfile.read_text()))
                and (ended(seen, "finished"), ended(seen, "failed")) == (expected["finished"], expected["failed"])
                and seen
            ),
            what="the worker's textfile to count every task",
        )
        scraped_text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        scraped = parsed(scraped_text)

        moved = tmp_path / "mnt-moving"
        moved.symlink_to(unmounted)
        moved.replace(mount)  # the mount point is empty now: the root check fails
        unfit = wait_for(
            lambda: (seen := parsed(textfile.read_text()))[("bgremover_worker_fit", ())] == 0 and seen,
            what="the worker's textfile to say it is unfit",
        )
        back = tmp_path / "mnt-back"
        back.symlink_to(root)
        back.replace(mount)
        fit_again = wait_for(
            lambda: (seen := parsed(textfile.read_text()))[("bgremover_worker_fit", ())] == 1 and seen,
            what="the worker's textfile to say it is fit again",
        )
    final = parsed(textfile.read_text())  # written once more as the worker stopped

    assert sorted((item["status"], item["attempts"]) for item in status["items"]) == [("done", 1)] * 5 + [("failed", 1)]
    assert expected == {"finished": 5, "failed": 1}
    for found in (settled, scraped):
        assert found[("bgremover_worker_tasks_taken_total", ())] == 6
        assert [ended(found, outcome) for outcome in ("finished", "failed", "handed_back", "refused", "lost")] == [
            5,
            1,
            0,
            0,
            0,
        ]
        assert found[("bgremover_worker_slots", ())] == 2
        assert found[("bgremover_worker_jobs_running", ())] == 0
        assert found[("bgremover_worker_fit", ())] == 1
        assert failing(found) == []
        assert found[("bgremover_worker_broker_up", ())] == 1
        assert found[("bgremover_worker_info", (("version", bgremover.__version__),))] == 1
        assert found[("bgremover_worker_models", (("model", "u2netp"),))] == 1
    assert "s3cret-of-the-broker" not in scraped_text and "s3cret-of-the-broker" not in textfile.read_text()
    assert failing(unfit) == ["root"]
    assert (fit_again[("bgremover_worker_fit", ())], failing(fit_again)) == (1, [])
    assert final[("bgremover_worker_tasks_taken_total", ())] == 6
    assert ended(final, "finished") == 5


def test_a_task_whose_pool_process_dies_is_counted_as_lost_and_no_longer_as_running(tmp_path):
    """kill -9 of the pool process that runs a job, and of what it started: the process the pool starts in its
    place counts the task lost, and runs the item's next attempt."""
    root, gate = tmp_path / "root", tmp_path / "gate"
    textfile = tmp_path / "metrics" / "worker.prom"
    textfile.parent.mkdir()
    with (
        Redis(tmp_path / "redis") as broker,
        celery_daemon(root, broker.url, job_slots="auto") as daemon,
        Worker(root, broker.url, "w1", metrics_textfile=textfile) as worker,
    ):
        drop(root / "inbox", "shoot/long.jpg", f"gate {gate}")
        (started,) = wait_for(lambda: worker_events(worker, "task_started"), what="the job to start")
        running = wait_for(
            lambda: (seen := parsed(textfile.read_text()))[("bgremover_worker_jobs_running", ())] == 1 and seen,
            what="the worker's textfile to count the running job",
        )
        pool = started["pid"]
        for pid in [pool, *descendants(pool)]:  # the pool process, its fork server and the job
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        lost = wait_for(
            lambda: ended(seen := parsed(textfile.read_text()), "lost") == 1 and seen,
            what="the worker's textfile to count the task lost",
        )
        gate.touch()  # the next attempt, on the pool process started in its place, may end
        status = daemon.wait_complete("shoot", timeout=150)
        final = wait_for(
            lambda: ended(seen := parsed(textfile.read_text()), "finished") == 1 and seen,
            what="the worker's textfile to count the next attempt",
        )

    assert [(item["status"], item["attempts"]) for item in status["items"]] == [("done", 2)]
    assert running[("bgremover_worker_tasks_taken_total", ())] == 1
    assert (ended(lost, "lost"), ended(lost, "failed"), ended(lost, "handed_back")) == (1, 0, 0)
    assert final[("bgremover_worker_tasks_taken_total", ())] == 2
    assert [ended(final, outcome) for outcome in ("finished", "failed", "handed_back", "refused", "lost")] == [
        1,
        0,
        0,
        0,
        1,
    ]
    assert final[("bgremover_worker_jobs_running", ())] == 0
