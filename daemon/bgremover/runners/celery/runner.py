"""The celery runner: each job sent as a Celery task through a Redis broker to a `bgremover worker` host.

Celery is the transport only. The supervisor still decides everything (which
item, how many at once, what an exit means); this runner sends the job under a
task id made of the item id and its attempt, and reads that task's answer. The
answer of any other task (an older attempt, a duplicate) is never read, so it
cannot change an item: the outcome is recorded by the supervisor's guarded move
of the current attempt alone. Once recorded, the task is marked concluded, and a
worker refuses any later delivery of it.

Redis away costs time, never items: a job that cannot be sent is not started
(its item stays queued), and an answer that cannot be read is read later.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from bgremover.brokerurl import shown
from bgremover.contract import JobSpec
from bgremover.runners.api import JobExit, JobHandle, JobNotStarted, JobRunner, RunnerError
from bgremover.runners.celery.app import QUEUE, TASK_NAME, make_app, task_id
from bgremover.runners.celery.fences import Fences
from bgremover.runners.celery.marks import Marks, model_queue, shared_database
from bgremover.runners.celery.message import model_of, root_identity, to_message
from bgremover.version import __version__

log = structlog.get_logger()

BROKER_RETRY_SECONDS = 2.0  # after the broker failed us: no call to it before this
# A stopped job whose worker never answers: taken as killed this long after its kill was due.
UNANSWERED_SECONDS = 10.0
TRANSIT_CHECK_SECONDS = 5.0  # how often a task with no answer yet is looked for in the broker
CAPACITY_CHECK_SECONDS = 5.0  # how often the workers' slots are read from their heartbeats
PUBLISH_CHECK_SECONDS = 5.0  # how often the root and the supervisor's facts are looked for in the broker


@dataclass
class Sent:
    task: str
    message: dict
    time_limit: float
    check_at: float  # when to look for it in the broker next (see poll)
    kill_at: float | None = None  # when a stop the supervisor asked for is due to have ended it
    cancel_pending: bool = False  # its cancel mark is still to be set (the broker refused it)
    leased: bool = False  # a worker was seen running it (its lease in Redis)
    # The broker's life when the lease was last seen: its run id and how many times we lost it since our start.
    # A lease missing from another life went with the broker's data or connection, not with its worker.
    lease_life: tuple[str, int, int] | None = None
    files: tuple[Path, ...] = ()  # what its job writes, all named after its attempt
    holder: str | None = None  # the worker whose lease was last seen on it
    sent_at: float = 0.0  # when it was sent (or taken up after a restart): its wait in the broker counts from here


class CeleryRunner(JobRunner):
    def __init__(self, settings, wake) -> None:
        self.settings = settings
        self.broker = shown(settings.broker_url.get_secret_value())  # what logs say of it: never its password
        self.app = None
        self.marks: Marks | None = None
        self.sent: dict[str, Sent] = {}  # by task id
        self.fences: Fences | None = None  # tasks concluded without their answer (fences.py)
        self.broker_back_at = 0.0
        self.broker_warned = False
        self.workers_slots: int | None = None  # the slots the workers last reported, all together
        self.capacity_check_at = 0.0
        self.identity, self.facts = "", {}  # the root's identity and what workers must match, as published
        self.publish_check_at = 0.0
        self.broker_error: str | None = None  # why the broker cannot be reached now, as status shows it
        self.broker_faults = 0  # how many times the broker failed us: a lease seen before one may have gone with it
        self.broker_emptied = 0  # how many times its root was found gone (a FLUSHALL, say): every lease went too
        self.heard: dict[str, dict] = {}  # the workers' last heartbeats, as capacity read them
        self.models_warned: set[str] = set()  # ticket models no worker had when a task of theirs was sent
        self.tally = WorkerTally()  # what each worker did with the tasks it took, since this start
        self.waits: list[float] = []  # seconds each task waited in the broker before a worker took it, unread yet

    def start(self, model: dict) -> dict:
        settings = self.settings
        try:
            self.app = make_app(settings)
            self.marks = Marks(settings.broker_url.get_secret_value())
            self.marks.ping()
            shared = shared_database(*self.marks.foreign_keys(), self.broker)
        except Exception as exc:  # noqa: BLE001 - redis raises several kinds; each means the same here
            raise RunnerError(f"cannot reach the broker at {self.broker}: {exc}") from None
        if shared:  # before anything is written or cleared: the database is another app's too
            raise RunnerError(shared)
        try:
            self.identity = root_identity(settings.state_dir, create=True)
            # What a worker must match before it takes any work (fitness.py): this bgremover and this model.
            self.facts = {"version": __version__, "model": model["model"], "sha256": model["sha256"]}
            replaced = self.marks.claim_root(self.identity)
            self.marks.publish_supervisor(self.facts)
            self.fences = Fences(self.marks, settings.root)
            self.fences.load()  # set by a previous life, for answers that may still come
        except Exception as exc:  # noqa: BLE001 - redis raises several kinds; each means the same here
            raise RunnerError(f"cannot reach the broker at {self.broker}: {exc}") from None
        if replaced:
            log.warning(
                "broker_root_replaced",
                note="the broker served another root before: its marks, answers and waiting tasks were removed",
            )
        return {"broker": self.broker}

    def can_start(self, now: float, model: dict) -> bool:
        """Not while the broker is away, nor while no worker that can do the work is heard of: a task sent
        then would only wait in Redis, out of `bgremover status`'s sight and a cancel's easy reach."""
        return now >= self.broker_back_at and self.capacity(now) != 0

    def waiting(self, handle: JobHandle) -> bool:
        """No worker has been seen running the task yet (its lease, looked for every few seconds): its time
        has not begun. The worker's own deadline counts from its start; the supervisor's follows a few seconds
        later, as the backstop it is."""
        sent = self.sent.get(handle.details["task_id"])
        return sent is not None and not sent.leased

    def capacity(self, now: float) -> int | None:
        """The slots of the workers heard of recently (their heartbeats), read every few seconds; the last
        figure while the broker cannot be asked."""
        if now >= self.capacity_check_at and now >= self.broker_back_at:
            self.capacity_check_at = now + CAPACITY_CHECK_SECONDS
            try:
                # A worker that says it cannot do the work (fitness.py) takes none: its slots count for nothing.
                self.heard = self.marks.workers()
                self.tally.handed_back = self.marks.handed_back_counts()
                slots = sum(int(worker.get("slots", 0)) for worker in self.heard.values() if not worker.get("problem"))
            except Exception as exc:  # noqa: BLE001 - read again once the broker is back
                self.broker_failed(now, exc)
                return self.workers_slots
            if slots == 0 and self.workers_slots != 0:
                log.warning("no_worker", note="jobs wait in queued until a worker is heard of")
            elif slots and self.workers_slots == 0:
                log.info("worker_heard", workers_slots=slots)
            self.workers_slots = slots
            self.say_flagged()
        return self.workers_slots

    def submit(self, spec: JobSpec, now: float) -> JobHandle:
        sent = self.sent_for(spec, now + TRANSIT_CHECK_SECONDS)
        try:
            self.send(sent)
        except Exception as exc:  # noqa: BLE001 - kombu and redis raise several kinds; each means the broker
            self.broker_failed(now, exc)
            raise JobNotStarted(f"the broker did not take the job: {exc}") from None
        self.broker_back()
        self.sent[sent.task] = sent
        return JobHandle(spec, None, {"task_id": sent.task})

    def adopt(self, spec: JobSpec, now: float) -> JobHandle | None:
        """The task a previous life sent for this attempt, watched again under its id.

        Its answer, if a worker gave one while the supervisor was down, is read
        on the first poll; a task the broker no longer holds is sent again under
        the same id by the first look (see look_for). Not taken up: a task the
        previous life had concluded or was cancelling (its answer will never
        come), or any task while the broker cannot be asked.
        """
        sent = self.sent_for(spec, now)  # looked for in the broker on the first poll
        try:
            if self.marks.concluded(sent.task):
                return None
            cancelling = self.marks.cancelled(sent.task)
        except Exception as exc:  # noqa: BLE001 - without the broker, nothing is known of the task
            self.broker_failed(now, exc)
            return None
        self.sent[sent.task] = sent
        if not cancelling:
            return JobHandle(spec, None, {"task_id": sent.task})
        # The previous life was stopping it (a cancel, most often) when it ended: the stop goes on, and the
        # item ends as that stop says, never run again. Its worker reads the mark still set, or refuses it unrun.
        sent.kill_at = now + self.settings.kill_grace_seconds
        return JobHandle(spec, None, {"task_id": sent.task, "stopping": True})

    def abandon(self, spec: JobSpec, now: float) -> None:
        """A previous life's task this one does not take up (fewer slots now): stopped on its worker, or refused
        unrun, and fenced, so that nothing of it runs on or lingers while its item runs again as a new attempt."""
        sent = self.sent_for(spec, now)
        try:
            self.marks.cancel(sent.task)
            self.marks.conclude(sent.task)
        except Exception as exc:  # noqa: BLE001 - its answer is never read; a late one is swept by the fence
            self.broker_failed(now, exc)
        self.fences.fence(sent.task, sent.files, sent.time_limit + UNANSWERED_SECONDS)
        log.warning("task_abandoned", task=sent.task, note="not taken up after a restart: cancelled on its worker")

    def sent_for(self, spec: JobSpec, check_at: float) -> Sent:
        settings = self.settings
        limits = {
            name: getattr(settings, name)
            for name in ("job_timeout_seconds", "job_memory_limit_mb", "kill_grace_seconds")
        }
        message = to_message(spec, settings.root, limits)
        # A backstop only: the worker's own deadline and kill come first.
        hard_limit = settings.job_timeout_seconds + settings.kill_grace_seconds + 30
        files = tuple(path for path in (spec.output, spec.mask, spec.report, spec.log) if path is not None)
        return Sent(
            task_id(spec.item, spec.attempt), message, hard_limit, check_at, files=files, sent_at=time.monotonic()
        )

    def send(self, sent: Sent) -> None:
        self.app.send_task(
            TASK_NAME, args=[sent.message], task_id=sent.task, time_limit=sent.time_limit, queue=self.queue_of(sent)
        )

    def queue_of(self, sent: Sent) -> str:
        """The common queue for the supervisor's model, which every worker has (fitness.py); a queue of its own
        for a model only a ticket asks for, which only the workers that have it read: no other is ever given it."""
        model = model_of(sent.message)
        if model == self.facts.get("model"):
            return QUEUE
        if model not in self.models_warned and not any(
            model in facts.get("models", ()) for facts in self.heard.values()
        ):
            self.models_warned.add(model)
            log.warning("no_worker_has_model", model=model, note="its tasks wait until a worker that has it starts")
        return model_queue(model)

    def poll(self, handle: JobHandle) -> JobExit | None:
        sent = self.sent.get(handle.details["task_id"])
        now = time.monotonic()
        if sent is None or now < self.broker_back_at:
            return None
        try:
            result = self.app.AsyncResult(sent.task)
            state, value = result.state, result.result
        except Exception as exc:  # noqa: BLE001 - read again once the broker is back
            self.broker_failed(now, exc)
            return None
        self.broker_back()
        if state == "SUCCESS" and isinstance(value, dict):
            self.tally.answered(value.get("worker"), value["returncode"], value.get("stop_reason"))
            ended = exit_of(
                value["returncode"], value.get("peak_rss_kb", 0), value.get("worker"), value.get("stop_reason")
            )
            return self.ended(sent, ended, answered=True)
        if state in ("REVOKED", "RETRY"):  # we never revoke nor retry: its worker gave it up with the broker
            return self.send_again(sent, result, now)
        if state == "FAILURE" and type(value).__name__ == "WorkerLostError":  # its pool process vanished
            log.warning("worker_lost", task=sent.task, error=str(value))
            return self.ended(sent, JobExit(signal=signal.SIGKILL, lost="the worker's pool process vanished"))
        if state == "FAILURE":  # over the hard time limit, or a worker's bug: killed, as far as we know
            log.warning("task_failed", task=sent.task, error=str(value))
            return self.ended(sent, JobExit(signal=signal.SIGKILL))
        if sent.kill_at is not None and now > sent.kill_at + UNANSWERED_SECONDS:
            log.warning("task_unanswered", task=sent.task, note="stopped, and no worker answered")
            return self.ended(sent, JobExit(signal=signal.SIGKILL))
        if now >= sent.check_at:
            return self.look_for(sent, now)
        return None

    def look_for(self, sent: Sent, now: float) -> JobExit | None:
        """Where the task is, now and then: run by a live worker, waiting, lost with its worker, or lost by the broker.

        A worker renews its task's lease while the job runs; a lease that lapsed
        with no answer means the worker was lost. A task the broker no longer
        holds at all (it restarted without its data) is sent again, under the same id.
        """
        sent.check_at = now + TRANSIT_CHECK_SECONDS
        try:
            holder = self.marks.lease_holder(sent.task)
            if holder is not None:
                if not sent.leased:
                    self.waits.append(now - sent.sent_at)
                    log.info("task_taken", task=sent.task, worker=holder, waited_ms=round((now - sent.sent_at) * 1000))
                sent.leased, sent.holder = True, holder
                sent.lease_life = (self.marks.run_id(), self.broker_faults, self.broker_emptied)
                return None
            if sent.leased and self.app.AsyncResult(sent.task).state not in ("SUCCESS", "FAILURE"):
                if self.lost_with_broker(sent):
                    # Its worker may well run it still, and renews the lease once it reaches the broker again.
                    log.warning("task_lease_lost_with_broker", task=sent.task, note="waits again; no attempt charged")
                    sent.leased = False
                    return None
                given = self.marks.handed_back(sent.task)
                if given is None:
                    self.tally.lost(sent.holder)
                    log.warning(
                        "worker_lost", task=sent.task, worker=sent.holder, note="its lease lapsed with no answer"
                    )
                    return self.ended(sent, JobExit(signal=signal.SIGKILL, lost="its lease lapsed with no answer"))
                # Its worker could not do it, and gave it back: the same attempt waits for another, at no cost.
                log.warning("task_handed_back", task=sent.task, worker=given["worker"], reason=given["reason"])
                sent.leased = False
            if self.marks.in_transit(sent.task, self.queue_of(sent)):
                return None
            self.send(sent)
        except Exception as exc:  # noqa: BLE001 - looked for again once the broker is back
            self.broker_failed(now, exc)
            return None
        log.warning("task_resent", task=sent.task, note="the broker no longer held it")
        return None

    def lost_with_broker(self, sent: Sent) -> bool:
        """Whether the broker restarted (its run id changed: a restart without persistence loses every lease),
        or failed us, or was emptied (its root found gone: a FLUSHALL keeps the run id, and takes every lease and
        answer with it), since the lease was last seen: then its absence says nothing of the worker."""
        if self.marks.root() is None:  # emptied since the last look for the root: republish() counts it
            return True
        return sent.lease_life != (self.marks.run_id(), self.broker_faults, self.broker_emptied)

    def send_again(self, sent: Sent, result, now: float) -> None:
        """The same task again, under its id: its worker gave it up with the broker connection, not its image."""
        try:
            result.forget()
            self.send(sent)
        except Exception as exc:  # noqa: BLE001 - tried again once the broker is back
            self.broker_failed(now, exc)
            return None
        log.warning("task_resent", task=sent.task, note="its worker cancelled it when the broker connection was lost")
        return None

    def ended(self, sent: Sent, exit: JobExit, answered: bool = False) -> JobExit:
        del self.sent[sent.task]
        if not answered:  # its worker may be alive after all (hung, cut off): an answer can still come
            self.fences.fence(sent.task, sent.files, sent.time_limit + UNANSWERED_SECONDS)
        try:
            self.marks.conclude(sent.task)  # a later delivery of it is refused by the worker
        except Exception as exc:  # noqa: BLE001 - a later delivery then runs for nothing; its answer is never read
            log.warning("task_not_marked_concluded", task=sent.task, error=str(exc))
        return exit

    def broker_failed(self, now: float, exc: Exception) -> None:
        self.broker_back_at = now + BROKER_RETRY_SECONDS
        if not self.broker_warned:
            self.broker_faults += 1
            self.broker_error = f"cannot reach the broker at {self.broker}: {exc}"
            log.warning(
                "broker_unreachable",
                broker=self.broker,
                error=str(exc),
                note="jobs wait in queued until it is back",
            )
        self.broker_warned = True

    def broker_back(self) -> None:
        if self.broker_warned:
            log.info("broker_reachable")
        self.broker_warned, self.broker_error = False, None

    def peak_rss_kb(self, handle: JobHandle) -> int:
        return 0  # measured and capped on the worker; its peak comes with the answer

    def stop(self, handle: JobHandle, grace: float, now: float) -> None:
        sent = self.sent.get(handle.details["task_id"])
        if sent is None:
            return
        sent.kill_at, sent.cancel_pending = now + grace, True
        self.send_cancel(sent, now)

    def send_cancel(self, sent: Sent, now: float) -> None:
        try:
            self.marks.cancel(sent.task)  # the worker reads it within a second and stops the job's group
        except Exception as exc:  # noqa: BLE001 - set again by upkeep once the broker is back
            self.broker_failed(now, exc)
            return
        sent.cancel_pending = False

    def wait(self, handle: JobHandle, timeout: float) -> None:
        time.sleep(min(timeout, 0.2))

    def upkeep(self, now: float) -> None:
        self.republish(now)
        self.capacity(now)  # followed while nothing is queued too, so `no_worker` is said when it happens
        for sent in list(self.sent.values()):
            if sent.cancel_pending and now >= self.broker_back_at:
                sent.kill_at = now + self.settings.kill_grace_seconds
                self.send_cancel(sent, now)
        if now >= self.broker_back_at:
            for task in self.fences.due(now):
                try:
                    self.fences.look(task, self.late_answer, now)
                except Exception as exc:  # noqa: BLE001 - looked at again once the broker is back
                    self.broker_failed(now, exc)
                    return

    def republish(self, now: float) -> None:
        """The root and the facts published again when the broker lost them (a restart without persistence),
        so that workers started since can check themselves against them."""
        if now < self.publish_check_at or now < self.broker_back_at:
            return
        self.publish_check_at = now + PUBLISH_CHECK_SECONDS
        try:
            if self.marks.root() is None or self.marks.supervisor() is None:
                self.broker_emptied += 1  # the leases seen before went with the root (lost_with_broker)
                self.marks.claim_root(self.identity)
                self.marks.publish_supervisor(self.facts)
                log.info("broker_root_published", note="the broker had lost the root and the supervisor's facts")
        except Exception as exc:  # noqa: BLE001 - published again once the broker is back
            self.broker_failed(now, exc)

    def fleet(self, now: float, drain: bool = False) -> dict | None:
        """For metrics, status and the log: each worker heard of (its heartbeat, its tally, whether it is
        flagged), the broker as shown, and the broker waits measured (`drain`: since the last draining call)."""
        waits = self.waits
        if drain:
            self.waits = []
        workers = {name: {**facts, **self.tally.of(name)} for name, facts in self.heard.items()}
        for name in self.tally.names():
            workers.setdefault(name, self.tally.of(name))
        return {"workers": workers, "broker_waits": waits, "broker": self.broker, "problem": self.broker_error}

    def say_flagged(self) -> None:
        for name in self.tally.newly_flagged():
            counts = self.tally.of(name)
            log.warning(
                "worker_failing",
                worker=name,
                failures=counts["failures"],
                tasks=counts["tasks"],
                note="it fails far more of its tasks than the other workers do: look at its host",
            )

    def late_answer(self, task: str) -> object:
        """A concluded task's answer, if one came after all (and then forgotten by the broker); else None."""
        result = self.app.AsyncResult(task)
        answer = result.result if result.state == "SUCCESS" else None
        if answer is not None:
            result.forget()
        return answer

    def idle(self, now: float) -> None:
        pass

    def forget(self, pid: int, started: int | None = None) -> bool:
        return False  # its jobs run on other hosts; a task of a previous life is fenced by its attempt

    def close(self) -> None:
        if self.app is not None:
            self.app.close()


def exit_of(returncode: int, peak_rss_kb: int, worker: str | None, stop_reason: str | None = None) -> JobExit:
    """The worker's answer as a JobExit; a limit it stopped the job for is kept (a cancel is ours already)."""
    stopped = stop_reason if stop_reason in ("timeout", "memory") else None
    if returncode < 0:
        return JobExit(signal=-returncode, peak_rss_kb=peak_rss_kb, worker=worker, stopped=stopped)
    return JobExit(exit_code=returncode, peak_rss_kb=peak_rss_kb, worker=worker, stopped=stopped)


FLAG_MIN_FAILURES = 3  # a worker is flagged only past this many failures of its own
FLAG_MIN_SHARE = 0.5  # ... of at least this share of the tasks it took
FLAG_RATIO = 3.0  # ... and this many times the share of the other workers together


class WorkerTally:
    """Each worker's tasks since this start: answered (and of them failed, with a nonzero exit we did not ask
    for), handed back, and lost with it; and which worker fails far more than the others."""

    KINDS = ("failed", "handed_back", "lost")

    def __init__(self) -> None:
        self.counts: dict[str, dict[str, int]] = {}  # answered, failed, lost: as the supervisor saw them
        self.handed_back: dict[str, int] = {}  # as the workers count them in Redis (marks.py)
        self.flagged: set[str] = set()

    def count(self, worker: str | None, kind: str) -> None:
        if worker:
            counts = self.counts.setdefault(worker, dict.fromkeys(("answered", "failed", "lost"), 0))
            counts[kind] += 1

    def answered(self, worker: str | None, returncode: int, stop_reason: str | None) -> None:
        self.count(worker, "answered")
        if returncode != 0 and stop_reason != "cancel":
            self.count(worker, "failed")

    def lost(self, worker: str | None) -> None:
        self.count(worker, "lost")

    def names(self) -> list[str]:
        return sorted({*self.counts, *self.handed_back})

    def of(self, worker: str) -> dict:
        counts = {**self.counts.get(worker, dict.fromkeys(("answered", "failed", "lost"), 0))}
        counts["handed_back"] = self.handed_back.get(worker, 0)
        failures, tasks = self.totals(worker)
        return {**counts, "failures": failures, "tasks": tasks, "flagged": self.failing(worker)}

    def totals(self, worker: str) -> tuple[int, int]:
        """Its failures of any kind, and the tasks it took (answered, handed back or lost with it)."""
        counts = self.counts.get(worker, {})
        handed_back = self.handed_back.get(worker, 0)
        failures = counts.get("failed", 0) + counts.get("lost", 0) + handed_back
        return failures, counts.get("answered", 0) + counts.get("lost", 0) + handed_back

    def failing(self, worker: str) -> bool:
        """Far more failures than the others: enough of them, most of its tasks, and several times their share."""
        failed, took = self.totals(worker)
        others = [self.totals(name) for name in self.names() if name != worker]
        failures, tasks = sum(f for f, _ in others), sum(t for _, t in others)
        if failed < FLAG_MIN_FAILURES or not tasks or failed < FLAG_MIN_SHARE * took:
            return False
        return failed / took > FLAG_RATIO * failures / tasks

    def newly_flagged(self) -> list[str]:
        """The workers flagged now that were not at the last call (each said once in the log per crossing)."""
        now = {name for name in self.names() if self.failing(name)}
        new, self.flagged = sorted(now - self.flagged), now
        return new
