"""A worker's own figures: its tasks counted by its pool processes, served as Prometheus metrics.

The tasks run in the pool's processes, forked from the worker's main process,
while the endpoint and the textfile are the main process's. So each pool
process counts in its own row of a block of memory the main process mapped
before the pool forked (anonymous and shared, so every fork sees the same
pages): one writer a row, no lock, and the main process sums the rows when it
is scraped or writes the textfile. A pool process that dies holding a task
leaves its row marked; the process that takes its place counts that task as
lost.

The same settings as the supervisor's (`metrics_port`, `metrics_textfile`;
service/metrics.py), on the same loopback address. Labels are bounded: the
outcome and the check come from fixed sets, the version is one, the models are
those this worker found at start. The broker's URL is never exposed.
"""

from __future__ import annotations

import mmap
import threading
import time
from contextlib import contextmanager

import structlog
from prometheus_client import CollectorRegistry, start_http_server, write_to_textfile
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from bgremover.runners.celery.fitness import CHECKS
from bgremover.service.metrics import ADDRESS, REFRESH_SECONDS, MetricsUnavailable
from bgremover.version import __version__

log = structlog.get_logger()

# How a task a slot took ended; every one shows from the first scrape, as 0.
OUTCOMES = ("finished", "failed", "handed_back", "refused", "lost")
COLUMNS = ("taken", *OUTCOMES, "in_hand", "running")
WORD = 8  # bytes of one figure


class Tally:
    """The figures of each pool process, one row a slot, in memory the pool processes share with the main one."""

    def __init__(self, slots: int) -> None:
        self.rows = slots
        self.memory = mmap.mmap(-1, slots * len(COLUMNS) * WORD)  # anonymous, MAP_SHARED: inherited by each fork
        self.figures = memoryview(self.memory).cast("q")

    # -- in a pool process -----------------------------------------------------------

    def row(self) -> int:
        from billiard.process import current_process

        index = getattr(current_process(), "index", None)  # the pool's slot number, kept by a replacement
        return index if isinstance(index, int) and 0 <= index < self.rows else 0

    def add(self, column: str, by: int = 1) -> None:
        self.figures[self.row() * len(COLUMNS) + COLUMNS.index(column)] += by

    def set(self, column: str, value: int) -> None:
        self.figures[self.row() * len(COLUMNS) + COLUMNS.index(column)] = value

    def get(self, column: str) -> int:
        return self.figures[self.row() * len(COLUMNS) + COLUMNS.index(column)]

    def started(self) -> None:
        """A pool process begins (worker_process_init): a task its predecessor died holding is counted as lost."""
        if self.get("in_hand"):
            self.add("lost")
        self.set("in_hand", 0)
        self.set("running", 0)

    def took(self) -> None:
        self.add("taken")
        self.set("in_hand", 1)

    def ended(self, outcome: str) -> None:
        self.add(outcome)
        self.set("in_hand", 0)

    @contextmanager
    def running(self):
        """Around a job's run: what jobs_running counts."""
        self.set("running", 1)
        try:
            yield
        finally:
            self.set("running", 0)

    # -- in the main process ---------------------------------------------------------

    def totals(self) -> dict[str, int]:
        width = len(COLUMNS)
        return {
            column: sum(self.figures[row * width + at] for row in range(self.rows)) for at, column in enumerate(COLUMNS)
        }


class Collector:
    """The worker's figures, read afresh at each scrape and each write of the textfile."""

    def __init__(self, tally: Tally, health, slots: int, models: list[str], started: float) -> None:
        self.tally, self.health, self.slots, self.models, self.started = tally, health, slots, models, started

    def collect(self):
        totals = self.tally.totals()
        check = self.health.check
        yield gauge("bgremover_worker_slots", "Jobs this worker runs at once (--slots)", self.slots)
        yield gauge("bgremover_worker_jobs_running", "Jobs running on this worker now", totals["running"])
        yield CounterMetricFamily(
            "bgremover_worker_tasks_taken", "Tasks this worker's slots took from the broker", value=totals["taken"]
        )
        ended = CounterMetricFamily(
            "bgremover_worker_tasks_ended",
            "Tasks this worker took, by how they ended: its job exited 0 (finished) or not (failed), handed back"
            " for a fault of the worker's, refused unrun (concluded, cancelled or a duplicate), lost with its"
            " pool process",
            labels=["outcome"],
        )
        for outcome in OUTCOMES:
            ended.add_metric([outcome], totals[outcome])
        yield ended
        yield gauge("bgremover_worker_fit", "1 while every check of this worker's own passes", 0 if check else 1)
        failing = GaugeMetricFamily(
            "bgremover_worker_check_failing",
            "1 for the check that keeps this worker from taking tasks (the first that fails)",
            labels=["check"],
        )
        for name in CHECKS:
            failing.add_metric([name], 1 if check == name else 0)
        yield failing
        yield gauge(
            "bgremover_worker_broker_up",
            "1 while the worker's last heartbeat reached the broker",
            self.health.broker_up,
        )
        info = GaugeMetricFamily("bgremover_worker_info", "This worker's bgremover version", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        models = GaugeMetricFamily(
            "bgremover_worker_models", "The models this worker has (found at start), 1 each", labels=["model"]
        )
        for model in self.models:
            models.add_metric([model], 1)
        yield models
        yield gauge(
            "bgremover_worker_start_time_seconds", "When the worker started, seconds since the epoch", self.started
        )


def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class WorkerMetrics:
    """The endpoint and the textfile of one worker; off unless metrics_port or metrics_textfile is set."""

    def __init__(self, settings, tally: Tally, health, slots: int, models: list[str]) -> None:
        self.port, self.textfile = settings.metrics_port, settings.metrics_textfile
        self.registry = CollectorRegistry()
        self.registry.register(Collector(tally, health, slots, models, time.time()))
        self.server = self.thread = self.writer = None
        self.stopped = threading.Event()
        self.failing = False

    @property
    def enabled(self) -> bool:
        return self.port is not None or self.textfile is not None

    def start(self) -> None:
        """Serve the endpoint and write the first textfile; raise MetricsUnavailable if either cannot be."""
        if not self.enabled:
            return
        if self.port is not None:
            try:
                self.server, self.thread = start_http_server(self.port, addr=ADDRESS, registry=self.registry)
            except OSError as exc:
                raise MetricsUnavailable(
                    f"cannot serve metrics on {ADDRESS}:{self.port} (metrics_port): "
                    f"{exc.strerror or exc}; stop what uses it or choose another port"
                ) from None
        if self.textfile is not None:
            try:
                write_to_textfile(str(self.textfile), self.registry)
            except OSError as exc:
                self.close()
                raise MetricsUnavailable(
                    f"cannot write the metrics textfile {self.textfile} (metrics_textfile): {exc.strerror or exc}"
                ) from None
            self.writer = threading.Thread(target=self.keep_writing, name="metrics", daemon=True)
            self.writer.start()
        log.info(
            "metrics_started",
            url=f"http://{ADDRESS}:{self.port}/metrics" if self.port else None,
            textfile=str(self.textfile) if self.textfile else None,
        )

    def keep_writing(self) -> None:
        while not self.stopped.wait(REFRESH_SECONDS):
            self.write()

    def write(self) -> None:
        try:
            write_to_textfile(str(self.textfile), self.registry)
        except OSError as exc:  # a full disk, a folder gone: said once, and the worker goes on
            if not self.failing:
                log.warning("metrics_not_refreshed", error=str(exc), textfile=str(self.textfile))
            self.failing = True
        else:
            if self.failing:
                log.info("metrics_refreshed_again")
            self.failing = False

    def close(self) -> None:
        """Stop serving; the textfile gets the final figures, since node_exporter keeps reading it."""
        self.stopped.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()
            self.server = self.thread = None
        if self.writer is not None:
            self.writer.join()
            self.writer = None
            self.write()
