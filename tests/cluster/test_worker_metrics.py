"""Each worker's failures counted, and one that fails far more than the others flagged: real redis-server,
supervisor and workers, the supervisor's metrics read from its textfile.

The broken worker passes every check a worker makes of itself, but its job
module cannot be imported (a damaged install): each task it takes fails
there, for its own reason, and is handed back, while its neighbour does the
work. None of the images fails; the broken worker is counted and flagged.
"""

from __future__ import annotations

import json

import pytest
from prometheus_client.parser import text_string_to_metric_families

import bgremover
from tests.support.cluster import Redis, Worker, celery_daemon, run_bgremover, worker_events
from tests.support.harness import drop, wait_for

pytestmark = pytest.mark.timeout(300)


def samples(textfile) -> dict[tuple, float]:
    """(sample name, its labels sorted) -> value, for every bgremover_worker* and bgremover_workers sample."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(textfile.read_text())
        for sample in family.samples
        if sample.name.startswith("bgremover_worker")
    }


def own_samples(textfile) -> dict[tuple, float]:
    """A worker's own textfile: (sample name, its labels sorted) -> value."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(textfile.read_text())
        for sample in family.samples
    }


def by_worker(found: dict[tuple, float], name: str) -> dict[tuple, float]:
    """The samples of one worker, its name's host part dropped, keyed by (sample name, other labels)."""
    return {
        (sample, tuple((key, value) for key, value in labels if key != "worker")): number
        for (sample, labels), number in found.items()
        if dict(labels).get("worker", "").split("@")[0] == name
    }


def test_a_worker_that_fails_far_more_than_the_others_is_counted_and_flagged(tmp_path):
    root = tmp_path / "root"
    textfile = tmp_path / "metrics" / "bgremover.prom"
    textfile.parent.mkdir()
    own_textfile = tmp_path / "metrics" / "broken-worker.prom"  # the broken worker's own figures
    with (
        Redis(tmp_path / "redis") as broker,
        celery_daemon(root, broker.url, job_slots="auto", metrics_textfile=textfile) as daemon,
        Worker(root, broker.url, "good"),
        Worker(
            root, broker.url, "broken", job_module="tests.support.no_such_job", metrics_textfile=own_textfile
        ) as broken,
    ):
        for n in range(16):
            drop(root / "inbox", f"shoot/{n:02}.jpg", "sleep 0.3")
        status = daemon.wait_complete("shoot", timeout=200)
        flagged = wait_for(lambda: daemon.events("worker_failing"), what="the broken worker flagged")
        found = wait_for(
            lambda: (
                (seen := samples(textfile)) and by_worker(seen, "broken").get(("bgremover_worker_flagged", ())) and seen
            ),
            what="the flag in the metrics",
        )
        handed_back = worker_events(broken, "task_handed_back")
    own = own_samples(own_textfile)  # written once more as the worker stopped

    assert [(item["status"], item["attempts"]) for item in status["items"]] == [("done", 1)] * 16
    assert len(handed_back) >= 3, handed_back
    assert [event["worker"].split("@")[0] for event in flagged] == ["broken"]
    bad, good = by_worker(found, "broken"), by_worker(found, "good")
    assert bad[("bgremover_worker_failures_total", (("kind", "handed_back"),))] == len(handed_back)
    assert bad[("bgremover_worker_flagged", ())] == 1
    assert good[("bgremover_worker_failures_total", (("kind", "handed_back"),))] == 0
    assert good[("bgremover_worker_flagged", ())] == 0
    assert good[("bgremover_worker_jobs_total", (("status", "done"),))] == 16
    assert found[("bgremover_workers", (("state", "fit"),))] == 2
    assert found[("bgremover_workers", (("state", "unfit"),))] == 0
    # The broken worker's own view: every task it took handed back, none finished, and its checks all pass.
    assert own[("bgremover_worker_tasks_ended_total", (("outcome", "handed_back"),))] == len(handed_back)
    assert own[("bgremover_worker_tasks_taken_total", ())] == len(handed_back)
    assert own[("bgremover_worker_tasks_ended_total", (("outcome", "finished"),))] == 0
    assert own[("bgremover_worker_fit", ())] == 1


def test_status_shows_the_workers_from_what_the_daemon_publishes_and_the_spare_task_as_such(tmp_path):
    """`bgremover status` in a shell with no runner setting and no broker URL: what the daemon heard is shown."""
    root = tmp_path / "root"
    with (
        Redis(tmp_path / "redis") as broker,
        celery_daemon(root, broker.url, job_slots="auto"),
        Worker(root, broker.url, "w1", slots=2),
        Worker(root, broker.url, "w2"),
    ):
        seen = wait_for(
            lambda: (
                (done := run_bgremover(tmp_path, "status", "--json"))
                and len(json.loads(done.stdout).get("workers", [])) == 2
                and json.loads(done.stdout)
            ),
            what="both workers in the status",
        )
        text = run_bgremover(tmp_path, "status").stdout.splitlines()
    workers = [(worker["name"].split("@")[0], worker["slots"], worker["version"]) for worker in seen["workers"]]
    assert workers == [("w1", 2, bgremover.__version__), ("w2", 1, bgremover.__version__)]
    assert (seen["daemon"]["job_slots"], seen["daemon"]["spare_slots"]) == (4, 1)
    assert "4 job slots: 3 on the workers, 1 task waiting in the broker for the next free one" in text[0], text
    assert text[1].startswith("workers: 2, 3 slots: w1@"), text
