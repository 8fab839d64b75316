"""The worker's task: run one job, sent by the supervisor, through the local runner, and answer with its exit.

Each pool process of a worker is one slot. On its first task it starts its own
local runner (a fork server and a standby, as the daemon's), so every image runs
in a fresh isolated process with the same timeout, memory cap, TERM -> KILL
ladder and exit codes as on one machine. The pool process itself never imports
onnxruntime: only the fork server it starts does.

Two fences run before a job: a task the supervisor has concluded or cancelled
is refused, and so is a second delivery of a task another worker still runs
(its lease in Redis is alive). A refused task is ignored by Celery: no state is
stored that could hide the running one's answer.

A task this worker cannot do (fitness.py: it lost the shared root, lacks the
model, ...) is handed back to the broker unrun, for another worker, and so is
one whose job failed while such a check fails: that failure is the worker's,
not the image's, and costs the image nothing. The hand-back is marked in Redis
before the lease goes, so the supervisor never takes it for a lost worker.
"""

from __future__ import annotations

import dataclasses
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from celery.exceptions import Ignore, Reject

from bgremover.models.manifest import ModelError, find_model_spec
from bgremover.runners.api import RunnerError
from bgremover.runners.celery.fitness import Fitness, Published, one_line
from bgremover.runners.celery.marks import Marks
from bgremover.runners.celery.message import model_of, spec_from
from bgremover.runners.celery.tally import Tally
from bgremover.settings import Settings

log = structlog.get_logger()

LEASE_SECONDS = 15  # a running task's lease; renewed while it runs, so a lost worker's lapses
CHECK_SECONDS = 1.0  # how often a running job's cancel mark is read and its lease renewed
HAND_BACK_PAUSE_SECONDS = 2.0  # before a task is given back for a model this host cannot run


@dataclass
class Slot:
    """What one pool process keeps between tasks: its settings and, once started, its runner per model."""

    settings: Settings | None = None
    marks: Marks | None = None
    published: Published = Published(None, None)
    fitness: Fitness | None = None
    jobs: dict = field(default_factory=dict)  # model request (as a tuple) -> IsolatedJobs
    tally: Tally | None = None  # the worker's figures, this pool process's row of them


SLOT = Slot()


def configure(settings: Settings, published: Published, tally: Tally | None = None) -> None:
    """In the worker's main process, before the pool forks: what every slot inherits."""
    SLOT.settings, SLOT.published, SLOT.fitness, SLOT.tally = settings, published, Fitness(settings), tally


def run_job(task, message: dict) -> dict:
    """The task, counted in the worker's figures by how it ended."""
    tally = SLOT.tally
    if tally is None:
        return run_task(task, message)
    tally.took()
    try:
        answer = run_task(task, message)
    except Ignore:
        tally.ended("refused")
        raise
    except Reject:
        tally.ended("handed_back")
        raise
    except BaseException:
        tally.ended("failed")
        raise
    tally.ended("finished" if answer["returncode"] == 0 else "failed")
    return answer


def run_task(task, message: dict) -> dict:
    settings, worker, task_id = SLOT.settings, task.request.hostname, task.request.id
    if SLOT.marks is None:
        SLOT.marks = Marks(settings.broker_url.get_secret_value())
    marks = SLOT.marks
    refusal = refused(marks, task_id, message, worker)
    if refusal:
        log.warning(
            "task_refused",
            task=task_id,
            item=message.get("item"),
            attempt=message.get("attempt"),
            worker=worker,
            reason=refusal,
        )
        raise Ignore()
    limits = {**message["limits"], "job_slots": 1}
    try:
        jobs, model_dir = jobs_for(model_of(message), settings, limits)
    except (ModelError, RunnerError) as exc:  # this host lacks the model, or cannot run it: not the image's doing
        # A model a session's ticket asks for is not among the checks the gate follows, so this worker may be
        # given the task again at once: the pause keeps such a round from spinning while no worker has it.
        time.sleep(HAND_BACK_PAUSE_SECONDS)
        hand_back(marks, task_id, message, worker, one_line(exc), job_failed=False)
    # The providers are this host's (a GPU host runs CUDA, its neighbour the CPU), not the supervisor's.
    received = spec_from(message, settings.root, model_dir, settings.compile_cache, settings.models_folder)
    spec = dataclasses.replace(received, providers=tuple(settings.providers))
    log.info(
        "task_started", task=task_id, item=message["item"], attempt=message["attempt"], worker=worker, pid=os.getpid()
    )
    # The lease is left to lapse, not deleted: the answer is stored after we return, and until it
    # is, the supervisor must not take the missing lease for a lost worker.
    with SLOT.tally.running() if SLOT.tally else nullcontext():
        ended = jobs.run(spec, cancelled=Watch(marks, task_id, worker).cancelled)
    if ended.returncode != 0 and ended.stop_reason is None:
        problem = own_problem(marks)  # a job that failed by itself: the image's doing, unless this worker is unfit
        if problem:
            hand_back(marks, task_id, message, worker, problem, job_failed=True)
    log.info(
        "task_finished",
        task=task_id,
        item=message["item"],
        returncode=ended.returncode,
        stop_reason=ended.stop_reason,
        worker=worker,
    )
    return {
        "returncode": ended.returncode,
        "stop_reason": ended.stop_reason,
        "peak_rss_kb": ended.peak_rss_kb,
        "worker": worker,
    }


def refused(marks: Marks, task_id: str, message: dict, worker: str) -> str | None:
    """Why this delivery must not run, or None (and then its lease is taken); one this worker cannot do is
    handed back (Reject), before it takes the lease."""
    if marks.concluded(task_id):
        return "its outcome is recorded already"
    if marks.cancelled(task_id):
        return "it was cancelled"
    problem = own_problem(marks)
    if problem:  # before its lease: no other worker is kept from it, and nothing is marked
        said(task_id, message, worker, problem, job_failed=False)
        raise Reject(problem, requeue=True)
    if not marks.client.set(f"bgremover:lease:{task_id}", worker, nx=True, ex=LEASE_SECONDS):
        holder = marks.client.get(f"bgremover:lease:{task_id}")
        return f"a duplicate delivery: {holder.decode() if holder else 'another worker'} runs it"
    marks.taken_over(task_id)
    return None


def own_problem(marks: Marks) -> str | None:
    """What keeps this worker from the work now (fitness.py), with the supervisor's facts read again."""
    try:
        SLOT.published = SLOT.published.updated(marks.root(), marks.supervisor())
    except Exception:  # noqa: BLE001 - the broker away: the checks are this host's own, against the last facts
        pass
    return SLOT.fitness.problem(SLOT.published.root, SLOT.published.supervisor)


def hand_back(marks: Marks, task_id: str, message: dict, worker: str, reason: str, job_failed: bool) -> None:
    """The task back to the broker for another worker, the same attempt: its failure here was this worker's."""
    marks.hand_back(task_id, worker, reason)
    said(task_id, message, worker, reason, job_failed)
    raise Reject(reason, requeue=True)


def said(task_id: str, message: dict, worker: str, reason: str, job_failed: bool) -> None:
    log.warning(
        "task_handed_back",
        task=task_id,
        item=message.get("item"),
        attempt=message.get("attempt"),
        worker=worker,
        reason=reason,
        job_failed=job_failed,
    )


class Watch:
    """Read while the job runs: its cancel mark, once a second; and the lease renewed, so no duplicate runs."""

    def __init__(self, marks: Marks, task_id: str, worker: str) -> None:
        self.marks, self.task_id, self.worker = marks, task_id, worker
        self.next_check = 0.0
        self.seen = False

    def cancelled(self) -> bool:
        now = time.monotonic()
        if self.seen or now < self.next_check:
            return self.seen
        self.next_check = now + CHECK_SECONDS
        try:
            self.marks.client.set(f"bgremover:lease:{self.task_id}", self.worker, ex=LEASE_SECONDS)
            self.seen = self.marks.cancelled(self.task_id)
        except Exception as exc:  # noqa: BLE001 - the broker away: the job runs on; its answer waits for it
            log.warning("broker_unreachable", task=self.task_id, error=str(exc))
        return self.seen


def jobs_for(model_name: str, settings: Settings, limits: dict):
    """This slot's runner for the model, started on first use; and the model's folder on this host."""
    from bgremover.runners.isolated import IsolatedJobs

    model = find_model_spec(model_name, settings.models_folder)
    request = {"model": model.name, "models_dir": str(model.path.parent), "sha256": model.sha256}
    request |= {"backend": settings.backend, "precision": settings.precision}
    key = (tuple(sorted(request.items())), tuple(sorted(limits.items())))
    if key not in SLOT.jobs:
        jobs = IsolatedJobs(settings.model_copy(update={**limits, "runner": "local"}))
        jobs.start(request)
        SLOT.jobs[key] = jobs
    return SLOT.jobs[key], Path(model.path.parent)
