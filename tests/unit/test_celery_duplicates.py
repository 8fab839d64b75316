"""A delivery a worker refuses (task.py) leaves nothing under its task's id in the result backend.

Redis delivers a task again past its visibility timeout, so a refused duplicate
is normal. Its task's answer key is the running delivery's alone: the
supervisor reads the job's outcome there (runners/celery/runner.py). Celery's
guard that keeps a SUCCESS from being overwritten reads the key, then writes
it, in two steps; a duplicate that wrote any state (STARTED, with
task_track_started) between the running delivery's read and write would hide
its answer, and once the lease lapsed the supervisor would count the job's
worker as lost, with the item's result discarded.

The delivery is traced here as a worker's pool process traces it, on the app
both sides use, with an in-memory result backend: no broker is needed.
"""

from __future__ import annotations

import pytest
from celery import states
from celery.app.trace import build_tracer

from bgremover.runners.celery import task as worker_task
from bgremover.runners.celery.app import TASK_NAME, make_app
from bgremover.settings import load_settings


class ConcludedMarks:
    """The marks of a task the supervisor has concluded already: every delivery of it is refused."""

    def concluded(self, task_id: str) -> bool:
        return True


@pytest.fixture
def app(monkeypatch):
    settings = load_settings(None, runner="celery", broker_url="redis://127.0.0.1:1/0")
    app = make_app(settings)
    app.conf.result_backend = "cache+memory://"
    monkeypatch.setattr(worker_task, "SLOT", worker_task.Slot(settings=settings, marks=ConcludedMarks()))
    yield app
    app.close()


def test_a_refused_delivery_writes_no_state_that_could_hide_the_running_ones_answer(app):
    run_job = app.task(name=TASK_NAME, bind=True, acks_late=True)(worker_task.run_job)
    trace = build_tracer(TASK_NAME, run_job, app=app, hostname="w1@host")
    message = {"item": 1, "attempt": 2}

    traced = trace("bgremover-1-2", [message], {}, {"id": "bgremover-1-2", "hostname": "w1@host"})

    assert traced.info is not None and traced.info.state == states.IGNORED  # refused: its outcome is recorded
    assert app.backend.get_task_meta("bgremover-1-2")["status"] == states.PENDING  # nothing written


def test_a_duplicate_refused_as_the_running_delivery_answers_leaves_the_answer_readable(app, monkeypatch):
    """The interleaving itself: the duplicate's guard read the key just before the answer was written."""
    run_job = app.task(name=TASK_NAME, bind=True, acks_late=True)(worker_task.run_job)
    answer = {"returncode": 0, "stop_reason": None, "peak_rss_kb": 1, "worker": "w2@host"}
    app.backend.store_result("bgremover-1-2", answer, states.SUCCESS)  # the running delivery's, on w2
    real_read = app.backend._get_task_meta_for
    reads = iter([{"status": states.PENDING, "result": None}])  # what the duplicate's guard read, a moment before
    monkeypatch.setattr(app.backend, "_get_task_meta_for", lambda task_id: next(reads, None) or real_read(task_id))
    trace = build_tracer(TASK_NAME, run_job, app=app, hostname="w1@host")

    trace("bgremover-1-2", [{"item": 1, "attempt": 2}], {}, {"id": "bgremover-1-2", "hostname": "w1@host"})

    meta = real_read("bgremover-1-2")
    assert (meta["status"], meta["result"]) == (states.SUCCESS, answer)
