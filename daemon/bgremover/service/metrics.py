"""Prometheus metrics: what the queue holds and what the jobs did, for a scraper or node_exporter.

Off unless `metrics_port` or `metrics_textfile` is set. Everything is fed from
the supervisor's loop: `job_concluded` as each job's outcome is recorded, and
`refresh` reads the queue's gauges from the database at most once a second. So
a scrape never touches SQLite nor waits for the loop: the HTTP thread only
reads the registry, which prometheus_client guards with its own locks.

The registry is our own, not prometheus_client's global one, so only
bgremover_ metrics are exposed, never something a library registered. Label
values come from fixed sets (a failure's reason is derived from how the job
ended, never from its free-text error), so the number of series stays bounded
however many images pass through.
"""

from __future__ import annotations

import time
from typing import Protocol

import structlog
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
    write_to_textfile,
)

from bgremover.queue.states import Status
from bgremover.queue.store import Store
from bgremover.review import record
from bgremover.settings import Settings


class Slots(Protocol):
    """The job slots as the metrics read them (supervisor/slots.py): figures only, so this stays below the supervisor."""

    count: int

    @property
    def in_use(self) -> int: ...

    def busy_ratios(self, now: float) -> list[float]: ...


log = structlog.get_logger()
# A `_created` series beside every counter and histogram doubles what is exposed for a
# timestamp that bgremover_start_time_seconds already gives. Process-wide, and this
# module is the daemon's only user of prometheus_client.
disable_created_metrics()

ADDRESS = "127.0.0.1"  # the queue's contents are nobody else's business: local scrapers only
REFRESH_SECONDS = 1.0
# A large database makes reading it slower; reads are spaced out so that they
# never take more than about 1/READ_SHARE of the loop's time.
READ_SHARE = 50
# The stages a job reports in its timings_ms (imaging/matting.py, job/process.py), in order.
STAGES = ("decode", "preprocess", "inference", "postprocess", "review", "encode", "publish")
ISOLATION_OVERHEAD = "isolation_overhead"  # a job's wall time that no stage accounts for
FAILURE_REASONS = (
    "timeout",
    "memory",
    "killed",
    "crashed",
    "bad_input",
    "temporary",
    "no_result",
    "cancelled",
    "worker_lost",
)
JOB_OUTCOMES = (Status.DONE, Status.FAILED, Status.CANCELLED, Status.QUEUED)
# From a few milliseconds (a stage of a small image) to job_timeout_seconds' default.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class MetricsUnavailable(Exception):
    """The metrics endpoint or textfile cannot be served; the message is one line naming the setting."""


class Metrics:
    def __init__(self, settings: Settings) -> None:
        self.port = settings.metrics_port
        self.textfile = settings.metrics_textfile
        self.registry = CollectorRegistry()
        self.define_metrics()
        self.server = None  # the HTTP server and its thread, while serving
        self.thread = None
        self.writing_textfile = False  # true once the textfile was first written
        self.next_refresh = 0.0
        self.failing = False  # the last refresh failed; said once per outage

    @property
    def enabled(self) -> bool:
        return self.port is not None or self.textfile is not None

    def define_metrics(self) -> None:
        registry = self.registry
        self.items = Gauge("bgremover_items", "Items in the database, by status", ["status"], registry=registry)
        self.queue_depth = Gauge("bgremover_queue_depth", "Items waiting for a job", registry=registry)
        self.sessions = Gauge("bgremover_sessions", "Sessions in the database, by state", ["state"], registry=registry)
        self.jobs = Counter(
            "bgremover_jobs", "Jobs ended, by the status they left their item in", ["status"], registry=registry
        )
        self.failures = Counter(
            "bgremover_job_failures", "Jobs that failed or were cancelled, by reason", ["reason"], registry=registry
        )
        self.review_signals = Counter(
            "bgremover_review_signals",
            "Quality signals raised by done jobs, by signal (an item may raise several)",
            ["signal"],
            registry=registry,
        )
        self.duration = Histogram(
            "bgremover_job_duration_seconds",
            "A job's wall time, from hand-over to exit",
            buckets=BUCKETS,
            registry=registry,
        )
        self.stages = Histogram(
            "bgremover_job_stage_seconds",
            "A done job's time in each stage, and what isolation added",
            ["stage"],
            buckets=BUCKETS,
            registry=registry,
        )
        self.worker_jobs = Counter(
            "bgremover_worker_jobs",
            "Jobs ended on each worker host (the celery runner), by the status they left their item in",
            ["worker", "status"],
            registry=registry,
        )
        self.start_time = Gauge(
            "bgremover_start_time_seconds", "When the daemon started, seconds since the epoch", registry=registry
        )
        self.job_slots = Gauge("bgremover_job_slots", "How many jobs may run at once (job_slots)", registry=registry)
        self.jobs_running = Gauge("bgremover_jobs_running", "Jobs running now", registry=registry)
        self.slot_busy = Gauge(
            "bgremover_job_slot_busy_ratio",
            "Each job slot's share of the time since start-up spent running a job",
            ["slot"],
            registry=registry,
        )
        # Every label value shows from the first scrape, as 0: a series that
        # appears only with its first event makes rate() miss that event.
        for metric, values in (
            (self.jobs, [s.value for s in JOB_OUTCOMES]),
            (self.failures, FAILURE_REASONS),
            (self.stages, (*STAGES, ISOLATION_OVERHEAD)),
            (self.review_signals, record.CODES),
        ):
            for value in values:
                metric.labels(value)
        self.start_time.set(time.time())

    # -- the supervisor's calls -------------------------------------------------------

    def start(self, store: Store) -> None:
        """Serve the endpoint and write the first textfile; raise MetricsUnavailable if either cannot be."""
        if not self.enabled:
            return
        self.read(store)  # so that the first scrape already tells the truth
        if self.port is not None:
            self.serve(self.port)
        if self.textfile is not None:
            self.write_first_textfile()
        self.next_refresh = time.monotonic() + REFRESH_SECONDS
        log.info(
            "metrics_started",
            url=f"http://{ADDRESS}:{self.port}/metrics" if self.port else None,
            textfile=str(self.textfile) if self.textfile else None,
        )

    def job_concluded(self, job, status: Status, reason: str | None, timings_ms: dict | None, now: float) -> None:
        """Count one job's outcome (job: the dispatch's RunningJob); `now` is on the same clock as job.started."""
        if not self.enabled:
            return
        # Called once the outcome is recorded: raising here would have the loop conclude the job again.
        try:
            self.count_job(status, reason, timings_ms, now - job.started)
            if job.worker:  # only a runner of other hosts names one
                self.worker_jobs.labels(job.worker, status.value).inc()
        except Exception:  # a metric is never worth an item
            log.exception("metrics_not_recorded", status=status.value)

    def signals_raised(self, codes: list[str]) -> None:
        """Count a done job's quality signals, one each (review/record.py's codes)."""
        if not self.enabled:
            return
        for code in codes:
            if code in record.CODES:
                self.review_signals.labels(code).inc()

    def count_job(self, status: Status, reason: str | None, timings_ms: dict | None, seconds: float) -> None:
        self.jobs.labels(status.value).inc()
        self.duration.observe(seconds)
        if status in (Status.FAILED, Status.CANCELLED):
            self.failures.labels(reason).inc()  # the verdict's reason: one of FAILURE_REASONS
        elif status is Status.DONE and timings_ms:
            self.observe_stages(timings_ms, seconds)

    def refresh(self, store: Store, now: float, slots: Slots | None = None) -> None:
        """Read the gauges from the database and the slots, and rewrite the textfile, at most once a second."""
        if not self.enabled or now < self.next_refresh:
            return
        began = time.monotonic()
        try:
            self.read(store)
            if slots is not None:
                self.read_slots(slots, now)
            if self.writing_textfile:
                write_to_textfile(str(self.textfile), self.registry)
        except Exception as exc:  # noqa: BLE001 - a disk error, a locked database, a bug: the loop goes on
            self.refresh_failed(exc)
        else:
            self.refresh_worked()
        self.next_refresh = now + max(REFRESH_SECONDS, (time.monotonic() - began) * READ_SHARE)

    def close(self, store: Store | None) -> None:
        """Stop serving; the textfile gets the final counts, since node_exporter keeps reading it."""
        if self.server is not None:
            self.server.shutdown()  # serve_forever polls every 0.5 s; this waits for it to return
            self.server.server_close()
            self.thread.join()
            self.server = self.thread = None
        if self.writing_textfile and store is not None:
            self.next_refresh = 0.0
            self.refresh(store, time.monotonic())
        self.writing_textfile = False

    # -- the parts ----------------------------------------------------------------------

    def serve(self, port: int) -> None:
        try:
            self.server, self.thread = start_http_server(port, addr=ADDRESS, registry=self.registry)
        except OSError as exc:
            raise MetricsUnavailable(
                f"cannot serve metrics on {ADDRESS}:{port} (metrics_port): "
                f"{exc.strerror or exc}; stop what uses it or choose another port"
            ) from None

    def write_first_textfile(self) -> None:
        try:
            write_to_textfile(str(self.textfile), self.registry)
        except OSError as exc:
            raise MetricsUnavailable(
                f"cannot write the metrics textfile {self.textfile} (metrics_textfile): {exc.strerror or exc}"
            ) from None
        self.writing_textfile = True

    def read(self, store: Store) -> None:
        # Counted by SQLite on its indexes, two queries however many sessions there are; refresh
        # spaces reads out further (READ_SHARE) should a large database make them slow.
        items = store.items_in_each_status()
        sessions = store.sessions_in_each_state()
        for status, count in items.items():
            self.items.labels(status).set(count)
        for state, count in sessions.items():
            self.sessions.labels(state).set(count)
        self.queue_depth.set(items[Status.QUEUED.value])

    def read_slots(self, slots: Slots, now: float) -> None:
        self.job_slots.set(slots.count)
        self.jobs_running.set(slots.in_use)
        for slot, busy in enumerate(slots.busy_ratios(now)):
            self.slot_busy.labels(str(slot)).set(round(busy, 4))

    def observe_stages(self, timings_ms: dict, seconds: float) -> None:
        # Unknown keys are ignored, so a new stage in the job cannot add series unannounced.
        stages = {
            stage: timings_ms[stage] / 1000 for stage in STAGES if isinstance(timings_ms.get(stage), (int, float))
        }
        for stage, spent in stages.items():
            self.stages.labels(stage).observe(spent)
        # What a fresh process per image costs: hand-over, start of the stages, exit and reaping.
        self.stages.labels(ISOLATION_OVERHEAD).observe(max(0.0, seconds - sum(stages.values())))

    def refresh_failed(self, exc: BaseException) -> None:
        if not self.failing:
            log.warning("metrics_not_refreshed", error=str(exc), textfile=str(self.textfile) if self.textfile else None)
        self.failing = True

    def refresh_worked(self) -> None:
        if self.failing:
            log.info("metrics_refreshed_again")
        self.failing = False
