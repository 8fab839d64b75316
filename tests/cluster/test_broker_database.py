"""One Redis database for bgremover alone: a real redis-server shared with another, unrelated Celery app.

The other app keeps its queue, a task waiting in it and a stored answer in
database 1; bgremover runs in database 0, through two roots one after the
other (the second start claims the database for a new root, which clears what
the broker held for the old one). The other app's database is untouched, every
key bgremover made carries its prefix, and bgremover pointed at the other app's
database refuses to start, supervisor and worker alike, each in one line.
"""

from __future__ import annotations

import pytest
from celery import Celery

from bgremover.runners.celery.marks import PREFIX
from tests.support.cluster import Redis, Worker, celery_daemon, run_bgremover
from tests.support.harness import drop

pytestmark = pytest.mark.timeout(240)


def snapshot(client) -> dict[bytes, bytes]:
    """Every key of a database and its value, serialized by Redis itself."""
    return {key: client.dump(key) for key in client.scan_iter(count=1000)}


def other_app(url: str) -> None:
    """What another Celery app leaves in its database: its queue with a task waiting, an answer, a key of its own."""
    app = Celery("other", broker=url, backend=url)
    app.send_task("other.add", args=[1, 2], task_id="other-1")
    app.backend.store_result("other-0", 3, "SUCCESS")
    app.close()


def test_bgremover_keeps_to_a_database_of_its_own_and_refuses_one_another_app_uses(tmp_path):
    with Redis(tmp_path / "redis") as broker:
        ours, theirs = broker.url_of(0), broker.url_of(1)
        other_app(theirs)
        other = broker.client(1)
        other.set("other:config", "kept")
        before = snapshot(other)

        for name in ("first", "second"):  # the second root's start clears what the broker held for the first
            root = tmp_path / name
            with celery_daemon(root, ours, job_slots=1) as daemon, Worker(root, ours, "w1"):
                drop(root / "inbox", "shoot/a.jpg", "ok")
                status = daemon.wait_complete("shoot", timeout=120)
                replaced = daemon.events("broker_root_replaced")
            assert status["items"][0]["status"] == "done"
        after = snapshot(other)
        keys = sorted(key.decode() for key in broker.client(0).scan_iter(count=1000))

        supervisor = run_bgremover(tmp_path, "run", runner="celery", broker_url=theirs)
        worker = run_bgremover(tmp_path, "worker", broker_url=theirs)

    assert replaced, "the second root did not claim the database"
    assert after == before
    assert keys and [key for key in keys if not key.startswith(PREFIX)] == []
    assert {f"{PREFIX}_kombu.binding.jobs", f"{PREFIX}celery-task-meta-bgremover-1-1", f"{PREFIX}root"} <= set(keys), (
        keys
    )
    shown = f"redis://127.0.0.1:{broker.port}/1"
    refusal = (
        f"the broker's database {shown} holds 5 keys that are not bgremover's (_kombu.binding.celery, "
        "_kombu.binding_permanent.celery, celery, ...): another application uses it. Give bgremover a Redis database of its own "
        "(another number at the end of broker_url)"
    )
    assert (supervisor.returncode, supervisor.stderr.splitlines()) == (2, [f"bgremover: cannot start: {refusal}"])
    assert (worker.returncode, worker.stderr.splitlines()) == (2, [f"bgremover: {refusal}"])
