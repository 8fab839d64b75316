"""The supervisor: one loop that takes files, runs up to `job_slots` jobs at once and closes sessions.

Everything that decides happens on the main thread, in this loop and the parts
it calls (taking, markers, dispatch, sessions, publishing, recovery, hooks). The
watcher thread, the runner's exit watch, the ZIP builder's threads and the
signal handlers only put a note on `wakeups`; the loop wakes at least once a
second (four times a second while jobs run, and when a watched file is due)
and runs the same upkeep steps every time. How a job runs is the runner's
business (runners/); the loop alone decides each item's terminal state.

No step may hold a pass for long, or nothing is reaped or started meanwhile and
the watchdog goes unpinged: bulk writes (the session ZIPs) run on the builder's
threads, and a burst of dropped files is taken a bounded batch per pass.
"""

from __future__ import annotations

import os
import queue
import signal
import time
from collections.abc import Callable

import structlog

from bgremover.backoff import is_storage_error
from bgremover.intake.watcher import Intake
from bgremover.models.manifest import ModelSpec
from bgremover.options import values_of
from bgremover.outbox.builder import ZipBuilder
from bgremover.queue.spool import Spool
from bgremover.queue.store import Store
from bgremover.runners import runner_class
from bgremover.runners.api import JobRunner
from bgremover.runners.groups import reap_orphans
from bgremover.service.facts import write_facts, write_workers
from bgremover.service.metrics import Metrics
from bgremover.service.notify import Notifier, progress_summary
from bgremover.service.rootlock import lock_root
from bgremover.settings import Settings
from bgremover.supervisor import slots
from bgremover.supervisor.dispatch import Dispatch, variant_request
from bgremover.supervisor.hooks import Hooks
from bgremover.supervisor.items import ItemMoves
from bgremover.supervisor.markers import Markers
from bgremover.supervisor.options import SessionOptions
from bgremover.supervisor.publishing import Publisher
from bgremover.supervisor.recovery import Recovery
from bgremover.supervisor.refusals import Refusals
from bgremover.supervisor.retention import Retention
from bgremover.supervisor.reviews import Reviews
from bgremover.supervisor.sessions import Sessions
from bgremover.supervisor.taking import Taking

log = structlog.get_logger()

RESCAN_SECONDS = 30.0  # a full inbox walk now and then catches events inotify dropped
WORKERS_PUBLISH_SECONDS = 5.0  # how often state/workers.json is written, under a runner of other hosts
SLOW_STEP_SECONDS = 2.0  # a step that holds a pass this long is named in the log: no job is reaped meanwhile
# The loop's steps, in the order each pass runs them.
UPKEEP = (
    "reap",
    "take_ready_files",
    "read_markers",
    "read_reviews",
    "enforce_limits",
    "close_idle_sessions",
    "finish_sessions",
    "flush_outbox",
    "start_next",
    "watch_hooks",
    "reap_strays",
    "rescan",
    "prune",
)
UPKEEP_WITHOUT_STATE = frozenset({"reap", "enforce_limits", "flush_outbox", "watch_hooks", "reap_strays"})


class Supervisor:
    def __init__(self, settings: Settings, model: ModelSpec) -> None:
        self.settings = settings
        self.model = model  # the model setting's; a session's job ticket may name another
        self.wakeups: queue.SimpleQueue = queue.SimpleQueue()
        self.spool = Spool(settings.root)
        self.lock_fd: int | None = None
        self.intake = Intake(
            settings.inbox,
            settings.stable_seconds,
            wake=lambda: self.wakeups.put("intake"),
            also_watch=[settings.retry_dir, settings.cancel_dir, settings.uploaded_dir],
        )
        # job_slots and threads as this machine gives them, before anything reads them (the runner first).
        settings, self.slot_choice, self.slot_warning = slots.resolve(settings)
        self.settings = settings
        self.runner: JobRunner = runner_class(settings.runner)(settings, lambda: self.wakeups.put("job"))
        self.stopping = False
        self.next_rescan = 0.0
        self.workers_published_at = 0.0
        self.broker_problem: str | None = None  # as last published in state/workers.json
        self.notifier = Notifier.from_environment()  # systemd: READY, STATUS, the watchdog; a no-op elsewhere
        self.metrics = Metrics(settings)  # Prometheus endpoint and/or textfile; off unless configured
        self.options = SessionOptions(settings, model)
        self.refusals = Refusals(settings, self.spool)
        self.hooks = Hooks(settings, self.spool.results)
        self.builder = ZipBuilder(wake=lambda: self.wakeups.put("zip"))  # ZIPs written off this thread
        self.store: Store | None = None  # opened by open_folders, once the job processes could start
        self.steps: dict[str, Callable[[float], None]] = {}

    def assemble(self, store: Store) -> None:
        """The parts that work on the queue, each handed the parts below it (none of them knows the loop)."""
        settings, stopping = self.settings, lambda: self.stopping
        self.store = store
        self.publisher = Publisher(settings, store, self.refusals, self.options)
        self.sessions = Sessions(settings, store, self.spool, self.options, self.publisher, self.hooks, self.builder)
        self.moves = ItemMoves(settings, store, self.sessions)
        self.taking = Taking(settings, store, self.spool, self.intake, self.sessions, stopping)
        self.dispatch = Dispatch(
            settings,
            store,
            self.spool,
            self.runner,
            self.moves,
            self.metrics,
            stopping,
            follows_workers=self.slot_choice.follows_workers,
            on_slots=self.write_facts,
        )
        self.markers = Markers(settings, store, self.sessions, self.moves, self.taking, self.dispatch)
        self.recovery = Recovery(self.runner, self.taking, self.markers)
        self.steps = {
            "reap": self.dispatch.reap, "take_ready_files": self.taking.take_ready_files,
            "read_markers": self.markers.read_markers, "enforce_limits": self.dispatch.enforce_limits,
            "read_reviews": Reviews(settings, store, self.sessions, self.moves).read_reviews,
            "close_idle_sessions": self.sessions.close_idle_sessions, "finish_sessions": self.sessions.finish_sessions,
            "flush_outbox": self.publisher.flush_outbox, "start_next": self.dispatch.start_next,
            "watch_hooks": self.hooks.watch_hooks, "reap_strays": self.reap_strays, "rescan": self.rescan,
            "prune": Retention(settings, store, self.spool, self.sessions, self.moves).prune,
        }  # fmt: skip

    # -- the loop -----------------------------------------------------------------

    def run(self, on_ready: Callable[[], None] = lambda: None) -> int:
        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start_up()
            on_ready()
            self.notifier.ready(self.summary)
            while not self.stopping:
                self.tick()
            self.notifier.stopping()
            self.drain()
        finally:
            self.intake.stop()
            self.builder.close()  # a ZIP half-written is abandoned: its session, still processing, is built anew
            self.hooks.stop_hooks()
            self.runner.close()
            self.metrics.close(self.store)  # before the store: the textfile's last counts come from it
            if self.store is not None:
                self.store.close()
            if self.lock_fd is not None:
                os.close(self.lock_fd)  # last: the next daemon may start once everything above is done
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        log.info("daemon_stopped")
        return 0

    def on_signal(self, signum, frame) -> None:
        # SimpleQueue.put is reentrant: safe even if the signal lands inside a get().
        self.wakeups.put(signum)

    def tick(self) -> None:
        state = self.refusals.state
        timeout = 0.25 if self.dispatch.jobs else 1.0
        # While the state folder refuses writes no file is taken, so a due file must not wake the loop.
        due = self.intake.seconds_until_due(time.monotonic()) if state.due(time.monotonic()) else None
        self.wait_for_wakeup(timeout if due is None else min(timeout, due + 0.01))
        now = time.monotonic()
        state_was_failing = state.failing
        if state_was_failing and state.due(now):
            self.refusals.probe_state(now)
        for name in UPKEEP:
            if self.stopping:
                return
            # While the state folder refuses writes, only the steps that need no
            # write there run: the job in flight is still watched and reaped,
            # and nothing new is taken or started.
            if not state.due(now) and name not in UPKEEP_WITHOUT_STATE:
                continue
            try:
                self.run_step(name, now)
            except Exception as exc:  # the loop must outlive any one step's failure
                if is_storage_error(exc):
                    self.refusals.state_refused(exc, now)
                else:
                    log.exception("upkeep_failed", step=name)
        if state_was_failing and state.due(now):
            self.refusals.state_accepted(now)
        self.metrics.refresh(self.store, now, self.dispatch.slots, self.drained_fleet)  # at most once a second
        self.publish_workers(now)
        # Last, so a pass that wedges anywhere above stops the pings and systemd restarts us.
        self.notifier.update(self.summary)

    def run_step(self, name: str, now: float) -> None:
        """One upkeep step; one that held the pass too long says so, since the watchdog waits on every pass."""
        started = time.monotonic()
        self.steps[name](now)
        took = time.monotonic() - started
        if took >= SLOW_STEP_SECONDS:
            log.warning("upkeep_slow", step=name, seconds=round(took, 1))

    def summary(self) -> str:
        """The systemd STATUS line."""
        return progress_summary(self.store, self.dispatch.slots.count)

    def wait_for_wakeup(self, timeout: float) -> None:
        try:
            note = self.wakeups.get(timeout=timeout)
        except queue.Empty:
            return
        while True:  # drain the burst: one upkeep pass serves every note
            if note in (signal.SIGTERM, signal.SIGINT):
                log.info("stop_requested", signal=signal.Signals(note).name)
                self.stopping = True
            try:
                note = self.wakeups.get_nowait()
            except queue.Empty:
                return

    def start_up(self) -> None:
        """Before anything is taken: the lock, the job processes, the folders, recovery, then the watcher.

        The runner starts first and raises RunnerError when jobs cannot run
        here (a provider this machine lacks, an encoder Pillow lacks), so a bad
        set-up stops the daemon at once instead of failing every item.
        """
        self.lock_fd = lock_root(self.settings.root, self.settings.state_dir)  # before anything else runs
        runs_on = self.runner.start(variant_request(self.model, values_of(self.settings)))
        # Once jobs can run at all: a set-up that cannot run them says only that, in one line.
        log.info(
            "job_slots_chosen",
            slots=self.slot_choice.slots,
            threads_per_job=self.slot_choice.threads,
            reason=self.slot_choice.reason,
        )
        if self.slot_warning:
            log.warning("job_slots_memory", warning=self.slot_warning)
        self.open_folders()
        self.write_facts(self.settings.job_slots)
        # Jobs that outlived the previous life on other hosts are taken up before recovery queues the rest again.
        self.recovery.recover(frozenset(self.dispatch.adopt_stranded(time.monotonic())))
        self.metrics.start(self.store)  # a port in use stops start-up here, before anything is taken
        self.intake.rescan()
        self.intake.start()
        log.info(
            "daemon_ready",
            root=str(self.settings.root),
            inbox=str(self.settings.inbox),
            model=self.model.name,
            format=self.settings.output_format,
            job_slots=self.settings.job_slots,
            **runs_on,
        )

    def write_facts(self, job_slots: int) -> None:
        """What `bgremover status` reads of the running daemon: its pid and how many jobs it runs at once, of
        which `spare_slots` are tasks sent ahead to wait in the broker for the next free worker slot."""
        spare = slots.WORKERS_SPARE if self.dispatch.follows_workers else 0
        write_facts(
            self.settings.state_dir,
            {
                "pid": os.getpid(),
                "job_slots": job_slots,
                "spare_slots": spare,
                "threads_per_job": self.settings.threads,
            },
        )

    def drained_fleet(self, now: float) -> dict | None:
        return self.dispatch.runner.fleet(now, drain=True)

    def publish_workers(self, now: float) -> None:
        """The workers the runner heard of, into state/workers.json every few seconds, for `bgremover status`."""
        fleet = self.dispatch.runner.fleet(now)
        if fleet is None or (now < self.workers_published_at and fleet["problem"] == self.broker_problem):
            return  # a broker lost or found again is published at once, the rest every few seconds
        self.workers_published_at, self.broker_problem = now + WORKERS_PUBLISH_SECONDS, fleet["problem"]
        try:
            write_workers(self.settings.state_dir, os.getpid(), fleet["broker"], fleet["workers"], fleet["problem"])
        except OSError as exc:  # a full state folder: status shows older workers until it takes writes again
            log.warning("workers_not_published", error=str(exc))

    def open_folders(self) -> None:
        settings = self.settings
        folders = (settings.inbox, settings.outbox, settings.retry_dir, settings.cancel_dir, settings.uploaded_dir)
        for folder in (*folders, settings.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.spool.prepare()
        self.assemble(Store(settings.database))

    def reap_strays(self, now: float) -> None:
        """What ended jobs left, then any other exited child: a hook's daemonized process re-parented to us."""
        self.runner.upkeep(now)
        reap_orphans(self.runner.children() | self.hooks.children())

    def rescan(self, now: float) -> None:
        lost = self.intake.events_lost()
        if lost:
            log.warning(
                "inbox_events_lost",
                reason="the kernel's inotify queue overflowed (fs.inotify.max_queued_events)",
                action="walking the inbox again",
            )
        if lost or now >= self.next_rescan:
            self.next_rescan = now + RESCAN_SECONDS
            self.intake.rescan()

    def drain(self) -> None:
        """An orderly stop: every job in flight is stopped and its item goes back to queued."""
        dispatch = self.dispatch
        if not dispatch.jobs:
            return
        grace = self.settings.kill_grace_seconds
        dispatch.stop_all("shutdown", grace=grace, now=time.monotonic())
        deadline = time.monotonic() + grace + 2
        while dispatch.jobs and time.monotonic() < deadline:
            self.runner.wait(dispatch.running[0].handle, 0.05)
            now = time.monotonic()
            dispatch.enforce_limits(now)
            self.runner.upkeep(now)
            dispatch.reap(now)
