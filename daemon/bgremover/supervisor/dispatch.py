"""Jobs: which item runs next, when a job must stop, and what its end means for the item.

Every decision about a job is made here, and only here: items start oldest
first, at most `job_slots` at a time (the design's backpressure: a bound on the
work in flight, however long the queue), and a slot that frees starts the next
item on the same pass; a job past its deadline or over its memory limit is
stopped; a job a previous life left running on another host is taken up
again where the runner can; and the item's next status is `verdict()`
(verdict.py), a function of what was asked of the job, its exit and its
result file. How a job is started, watched, stopped and measured is the
runner's business (runners/), behind the JobRunner interface.
"""

from __future__ import annotations

import contextlib
import errno
import json
import math
import time
from collections.abc import Callable
from pathlib import Path

import structlog

from bgremover.backoff import is_storage_error
from bgremover.contract import ExitCode, JobSpec, read_report
from bgremover.formats import FORMAT_EXTENSIONS
from bgremover.models.manifest import ModelError, ModelSpec
from bgremover.options import ImageOptions, values_of
from bgremover.queue.spool import Spool
from bgremover.queue.states import Status
from bgremover.queue.store import Item, Session, Store
from bgremover.review import record
from bgremover.runners.api import JobHandle, JobNotStarted, JobRunner
from bgremover.runners.isolated import over_limit, stop_grace
from bgremover.service.metrics import Metrics
from bgremover.settings import Settings
from bgremover.supervisor.items import ItemMoves
from bgremover.supervisor.lost import WORKER_LOST, lost_verdict
from bgremover.supervisor.running import RunningJob
from bgremover.supervisor.slots import WORKERS_SPARE, Slots
from bgremover.supervisor.verdict import tail, verdict

log = structlog.get_logger()


class Dispatch:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        spool: Spool,
        runner: JobRunner,
        moves: ItemMoves,
        metrics: Metrics,
        stopping: Callable[[], bool],
        follows_workers: bool = False,
        on_slots: Callable[[int], None] = lambda count: None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.spool = spool
        self.runner = runner
        self.moves = moves
        self.options = moves.sessions.options
        self.publisher = moves.publisher
        self.refusals = self.publisher.refusals
        self.metrics = metrics
        self.stopping = stopping
        self.jobs: dict[int, RunningJob] = {}  # by item id, in the order they started
        self.slots = Slots(settings.job_slots, time.monotonic())
        self.follows_workers = follows_workers  # job_slots = auto under a runner of other hosts: their slots
        self.on_slots = on_slots  # told the new count when it follows the workers'
        self.memory_warned = False  # the jobs' memory together passed slots x limit; said once per crossing

    @property
    def running(self) -> list[RunningJob]:
        return list(self.jobs.values())

    # -- starting -------------------------------------------------------------------

    def start_next(self, now: float) -> None:
        """Fill every free slot with the oldest queued items, until none is free or nothing can start."""
        if self.follows_workers:
            self.follow_workers(now)
        while not self.stopping() and self.slots.in_use < self.slots.count and self.start_one(now):
            pass

    def follow_workers(self, now: float) -> None:
        """As many slots as the workers report, plus the spare; unchanged while the runner cannot tell."""
        reported = self.runner.capacity(now)
        if reported is None or reported + WORKERS_SPARE == self.slots.count:
            return
        log.info("job_slots_changed", slots=reported + WORKERS_SPARE, was=self.slots.count, workers_slots=reported)
        self.slots.resize(reported + WORKERS_SPARE)
        self.on_slots(self.slots.count)

    def start_one(self, now: float) -> bool:
        """Claim the oldest queued item and start its job; False when nothing more can start on this pass."""
        queued = self.store.next_queued()
        if queued is None:
            # A standby's warm-up is a whole inference: only with nothing to do, not while a ZIP its user waits for is written.
            if not self.jobs and not self.moves.sessions.builder.busy():
                self.runner.idle(now)
            return False
        session = self.store.session(queued.session)  # one read serves the model, the refusal and the job
        try:
            model = self.options.model_of(session, queued.own_options)
        except ModelError as exc:  # its model was removed, or its file damaged, since the session opened
            self.moves.finish(self.moves.move(queued, Status.PROCESSING, "claimed"), Status.FAILED, str(exc))
            return True
        if not self.runner.can_start(now, variant_request(model, self.options.options_for(session.ticket))):
            return False  # the item stays queued; we try again on a later pass
        item = self.moves.move(queued, Status.PROCESSING, "claimed")  # QUEUED -> PROCESSING
        original = self.spool.original(item)
        if original is None:
            self.moves.finish(item, Status.FAILED, "the original file is missing from the daemon's store")
            return True
        if session.error:  # its folder's job ticket is invalid: no guessing what it meant
            self.moves.finish(item, Status.FAILED, session.error)
            return True
        job = self.launch(self.job_spec(item, original, session, model), item, model, now)
        if job is None:
            return False  # its process was lost: the item is queued again, and a later pass tries anew
        self.jobs[item.id] = job
        self.publisher.publish(item.session)
        return True

    def job_spec(self, item: Item, original: Path, session: Session, model: ModelSpec) -> JobSpec:
        settings = self.settings
        # The settings' options, its ticket's over them, in the format, output and model the session was given.
        # A review's options for this item go over its session's.
        chosen = {**values_of(settings), **self.options.options_for(session.ticket), **item.own_options}
        given = {"output_format": session.format, "output": self.options.output_of(session), "model": model.name}
        options = ImageOptions(**{**chosen, **given})
        alpha = self.spool.corrected_mask(item)
        return JobSpec(
            input=original, output=self.spool.result(item, FORMAT_EXTENSIONS[session.format]),
            report=self.spool.report(item), log=self.spool.job_log(item), options=options,
            mask=self.spool.mask_result(item) if options.output == "both" else None,
            alpha=alpha if alpha.is_file() else None, review_models_dir=self.review_models_dir(options),
            models_dir=model.path.parent, threads=settings.threads, providers=tuple(settings.providers),
            cache_dir=settings.compile_cache, checks_dir=settings.models_folder,
            item=item.id, attempt=item.attempts, **self.naming(item, options),
        )  # fmt: skip

    def naming(self, item: Item, options: ImageOptions) -> dict:
        """With recipes or loose files: where the matte and the recipes' files go, and what names them."""
        if not (options.recipes or options.loose_files):
            return {}
        index = next((n for n, one in enumerate(self.store.items(item.session), 1) if one.id == item.id), 1)
        loose = self.settings.outbox / item.session if options.loose_files else None
        recipes = {"matte": self.spool.matte(item), "renders": self.spool.renders(item)} if options.recipes else {}
        return {"member": item.member, "session": item.session, "index": index, "loose": loose, **recipes}

    def review_models_dir(self, options: ImageOptions) -> Path | None:
        """The folder of the review's second model, if one is asked for and found; else the job says why not."""
        if not options.review_model or not (options.review_escalate or options.review_compare):
            return None
        try:
            return self.options.model_named(options.review_model).path.parent
        except ModelError:
            return None  # the job looks for it itself, and fails the item with the reason

    def launch(self, spec: JobSpec, item: Item, model: ModelSpec, now: float) -> RunningJob | None:
        try:
            handle = self.runner.submit(spec, now)
        except JobNotStarted as exc:
            self.moves.move(item, Status.QUEUED, "job process lost before it started")  # PROCESSING -> QUEUED
            log.warning("job_process_lost", session=item.session, item=item.name, pid=exc.pid, error=str(exc))
            return None
        if handle.pid is not None:
            try:
                # Read now, while the job is our unreaped child: its pid cannot have been reused yet.
                self.store.set_job_pid(item.id, handle.pid, self.runner.started_at(handle.pid))
            except Exception as exc:  # noqa: BLE001 - the job runs already; only a restart's clean-up needs the pid
                log.warning("job_pid_not_recorded", session=item.session, item=item.name, error=str(exc))
        slot = self.slots.take(now)
        log.info(
            "job_started",
            session=item.session,
            item=item.name,
            model=model.name,
            pid=handle.pid,
            attempt=item.attempts,
            slot=slot,
            jobs_running=self.slots.in_use,
            **handle.details,
        )
        return RunningJob(item, handle, now, self.deadline_from(handle, now), slot=slot)

    def deadline_from(self, handle: JobHandle, now: float) -> float | None:
        """A job's time runs from when a host takes it: none while it only waits for one (see follow_deadline)."""
        return None if self.runner.waiting(handle) else now + self.settings.job_timeout_seconds

    # -- a previous life's jobs -----------------------------------------------------

    def adopt_stranded(self, now: float) -> set[int]:
        """At start-up: take up the jobs a previous life left running, where the runner can; their item ids.

        An adopted job keeps its item in processing and its attempt: no new
        claim, so a job that finished while the supervisor was down is concluded
        from its answer, and one still running is not run a second time. The
        runner of this host's own processes adopts none (they died with their
        supervisor, or are ended by recovery), and their items run again.
        """
        if self.follows_workers:
            self.follow_workers(now)
        for item in self.store.items(None, Status.PROCESSING):
            spec = self.stranded_spec(item)
            if spec is None:
                continue  # its claim would not have started a job now either: recovery queues it again
            if self.slots.in_use >= self.slots.count:
                # Fewer slots than the previous life had: the rest run again, as new attempts, so their
                # old jobs are stopped wherever they still run.
                self.runner.abandon(spec, now)
                continue
            job = self.adopt(item, spec, now)
            if job is not None:
                self.jobs[item.id] = job
        return set(self.jobs)

    def stranded_spec(self, item: Item) -> JobSpec | None:
        """The JobSpec a previous life started for `item`'s attempt, as far as this life can make it."""
        session = self.store.session(item.session)
        original = self.spool.original(item)
        if session is None or session.error or original is None:
            return None
        try:
            model = self.options.model_of(session)
        except ModelError:
            return None
        return self.job_spec(item, original, session, model)

    def adopt(self, item: Item, spec: JobSpec, now: float) -> RunningJob | None:
        handle = self.runner.adopt(spec, now)
        if handle is None:
            return None
        slot = self.slots.take(now)
        log.info(
            "job_adopted",
            session=item.session,
            item=item.name,
            attempt=item.attempts,
            slot=slot,
            note="started by the previous life of the supervisor",
            **handle.details,
        )
        job = RunningJob(item, handle, now, self.deadline_from(handle, now), slot=slot)
        if handle.details.get("stopping"):  # a cancel the previous life had begun: it goes on, and decides the item
            job.stop_reason = "cancel"
        return job

    # -- limits and stops -----------------------------------------------------------

    def enforce_limits(self, now: float) -> None:
        limit_kb = self.settings.job_memory_limit_mb * 1024
        for job in self.running:
            job.peak_rss_kb = max(job.peak_rss_kb, self.runner.peak_rss_kb(job.handle))
            self.follow_deadline(job, now)
            passed = over_limit(job.peak_rss_kb, now, math.inf if job.deadline is None else job.deadline, self.settings)
            if job.stop_reason is None and passed:
                self.stop_job(job, passed, grace=stop_grace(passed, self.settings), now=now)
        self.watch_memory_sum(limit_kb)

    def follow_deadline(self, job: RunningJob, now: float) -> None:
        """The deadline set once a host takes the job, and cleared while it waits again (handed back, or sent
        again after the broker lost it): a task that only waits in the broker is never over its time."""
        if job.stop_reason is not None:
            return  # being stopped already: its stop, not its time, decides now
        if self.runner.waiting(job.handle):
            job.deadline = None
        elif job.deadline is None:
            job.deadline = now + self.settings.job_timeout_seconds

    def watch_memory_sum(self, limit_kb: int) -> None:
        """Each job is capped on its own; their sum past slots x limit is said in the log, never left to the OOM killer."""
        total_kb = sum(job.peak_rss_kb for job in self.jobs.values() if job.returncode is None)
        over = total_kb > self.slots.count * limit_kb
        if over and not self.memory_warned:
            log.warning(
                "jobs_memory_high",
                jobs_running=len(self.jobs),
                peak_rss_mb_sum=round(total_kb / 1024),
                limit_mb=self.slots.count * self.settings.job_memory_limit_mb,
                note="the running jobs together passed job_slots x job_memory_limit_mb",
            )
        self.memory_warned = over

    def stop_job(self, job: RunningJob, reason: str, grace: float, now: float) -> None:
        if job.stop_reason is not None:
            return
        job.stop_reason = reason
        self.runner.stop(job.handle, grace, now)
        log.info("job_stopping", session=job.item.session, item=job.item.name, pid=job.handle.pid, reason=reason)

    def stop_all(self, reason: str, grace: float, now: float) -> None:
        for job in self.running:
            self.stop_job(job, reason, grace, now)

    def cancel_jobs_of(self, session: str) -> None:
        for job in self.running:
            if job.item.session == session:
                self.stop_job(job, "cancel", grace=self.settings.kill_grace_seconds, now=time.monotonic())

    # -- the end of a job -----------------------------------------------------------

    def reap(self, now: float) -> None:
        refused: Exception | None = None
        for job in self.running:
            if job.returncode is None:
                ended = self.runner.poll(job.handle)
                if ended is None:
                    continue
                job.returncode = ended.returncode
                job.peak_rss_kb = max(job.peak_rss_kb, ended.peak_rss_kb)
                job.worker = ended.worker
                if ended.lost and job.stop_reason is None:  # a stop we asked for says more than the loss
                    job.stop_reason, job.lost = WORKER_LOST, ended.lost
                elif ended.stopped in ("timeout", "memory") and job.stop_reason is None:
                    job.stop_reason = ended.stopped  # its host held it to the limit before we did
            if not self.refusals.state.due(now):
                continue  # its outcome is recorded once the state folder takes writes again
            refused = self.conclude_alone(job, now) or refused
        if refused is not None:
            raise refused  # the loop's guard backs off the state folder; these jobs are concluded later

    def conclude_alone(self, job: RunningJob, now: float) -> Exception | None:
        """Conclude one job and free its slot, whatever any other job's conclusion does; a refused write, if any.

        A refused write raises before anything changed: the job stays, and a
        later pass concludes it again with the same files. Any other error
        would raise again on every pass, so it is said once and the job lets
        go of its slot: one job's end never keeps the others from theirs.
        """
        try:
            self.conclude(job, now)
        except Exception as exc:  # noqa: BLE001 - each job is concluded in its own guard
            if is_storage_error(exc):
                return exc
            self.conclusion_failed(job, exc, now)
        del self.jobs[job.item.id]
        self.slots.release(job.slot, now)
        return None

    def conclusion_failed(self, job: RunningJob, exc: Exception, now: float) -> None:
        """Said in one line; the item fails with a plain sentence, or stays for the next start's recovery to queue."""
        item = job.item
        log.error(
            "job_conclusion_failed", session=item.session, item=item.name, pid=job.handle.pid,
            exit_code=job.returncode, error=f"{type(exc).__name__}: {exc}",
        )  # fmt: skip
        try:
            stored = self.store.item(item.id)
            if stored is None or stored.status is not Status.PROCESSING or stored.attempts != item.attempts:
                return  # its outcome was recorded before the error: nothing more to do
            # PROCESSING -> FAILED (its end could not be read)
            self.moves.finish(
                item, Status.FAILED, f"the daemon could not conclude its job (exit code {job.returncode})",
                reason="unconcluded", exit_code=job.returncode, attempt=item.attempts, pid=job.handle.pid,
            )  # fmt: skip
        except Exception as again:  # noqa: BLE001 - still processing: the next start's recovery queues it again
            log.error("job_not_failed", session=item.session, item=item.name, error=f"{type(again).__name__}: {again}")

    def conclude(self, job: RunningJob, now: float) -> None:
        item, code = job.item, job.returncode
        session = self.store.session(item.session)
        result, report, job_log = (
            self.spool.result(item, FORMAT_EXTENSIONS[session.format]),
            self.spool.report(item),
            self.spool.job_log(item),
        )
        mask = self.spool.mask_result(item)
        job_report = read_report(report)
        status, error, reason = (
            lost_verdict(self.store, item, job.lost)
            if job.stop_reason == WORKER_LOST
            else verdict(job, result, job_report, self.settings)
        )
        if status is Status.DONE and self.options.with_masks(session) and not mask.is_file():
            status, error, reason = Status.FAILED, "the job exited without writing the mask", "no_result"
        stderr = tail(job_log)  # bounded: what a job says goes on its item's log line, whatever the outcome
        note = job_report.get("note") if status is Status.DONE else None
        reasons = signals_of(job_report) if status is Status.DONE else []
        if status is Status.DONE:
            # Before the move, which publishes the session: its JSON shows the new result's signals at once.
            corrected = self.spool.corrected_mask(item).is_file()
            self.store.set_review(item.id, record.after_job(item.review, reasons, corrected))
        could_not_write = status is Status.QUEUED and code == ExitCode.CANT_WRITE
        if could_not_write:
            note = (
                f"waiting: the state folder refused this item's result ({job_report.get('error') or 'no space'}); "
                "it runs again once the folder takes writes"
            )
        extra = {
            key: value
            for key, value in (
                ("stderr", stderr),
                ("timings_ms", job_report.get("timings_ms")),
                ("inferences", job_report.get("inferences")),
                ("model_session", job_report.get("model_session")),
                ("worker", job.worker),
                ("review", [one["code"] for one in reasons]),
            )
            if value
        }
        # Guarded by the attempt too: only this attempt's job decides this attempt's outcome.
        self.moves.finish(
            item,
            status,
            error,
            note=note,
            reason=job.stop_reason or "exited",
            exit_code=code,
            attempt=item.attempts,
            pid=job.handle.pid,
            duration_ms=round((now - job.started) * 1000),
            peak_rss_mb=round(job.peak_rss_kb / 1024, 1),
            renders=recipes_of(job_report) if status is Status.DONE else None,
            **extra,
        )
        self.metrics.job_concluded(job, status, reason, job_report.get("timings_ms"), now)
        self.metrics.signals_raised([one["code"] for one in reasons])
        if could_not_write:
            self.refusals.state_refused(
                OSError(errno.ENOSPC, job_report.get("error") or "the job could not write its result"), now, job.started
            )
        # Only after the outcome is recorded: until then these files are its evidence.
        with contextlib.suppress(OSError):
            if status is not Status.DONE:
                self.spool.discard(result, mask, *self.spool.render_files(item, job_report.get("recipes") or []))
            self.spool.discard(report, job_log)


def recipes_of(report: dict) -> str | None:
    """A done job's recipe entries as the item keeps them (JSON), or None where it rendered none."""
    entries = report.get("recipes")
    return json.dumps(entries) if isinstance(entries, list) and entries else None


def signals_of(report: dict) -> list[dict]:
    """The quality signals a done job raised, as its report gives them; a report without (a fake job's) raises none."""
    reasons = report.get("review")
    if not isinstance(reasons, list):
        return []
    return [reason for reason in reasons if isinstance(reason, dict) and reason.get("code") in record.CODES]


def variant_request(model: ModelSpec, options: dict) -> dict:
    """What a job process is prepared for: the model, by name, folder and checksum, its backend and precision.

    See job.process.variant; `options` are the session's image options (or the settings' own).
    """
    paths = {"backend": options["backend"], "precision": options["precision"]}
    return {"model": model.name, "models_dir": str(model.path.parent), "sha256": model.sha256, **paths}
