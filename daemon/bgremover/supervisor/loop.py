"""The supervisor: one loop that takes files, runs one job at a time and closes sessions.

Everything that decides happens here, on the main thread. The watcher thread
and the signal handlers only put a note on `wakeups`; the loop wakes at least
once a second (four times a second while a job runs, and when a watched file
is due) and runs the same upkeep steps every time. Each job is a fresh process in its own process group,
forked by the fork server (runners/forkserver.py) and re-parented to us; the
loop reaps it, reads its exit code and its result file, and alone decides the
item's terminal state. While one job runs, the next job's process is already
being prepared, holding no image.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import NamedTuple

import structlog

from bgremover.outbox import zips as outbox
from bgremover.backoff import Backoff, describe, is_storage_error
from bgremover.runners.forkserver import ForkServer, ForkServerError, Standby, become_subreaper
from bgremover.imaging.formats import FORMAT_EXTENSIONS
from bgremover.supervisor.hooks import RunningHook, session_environment
from bgremover.intake.watcher import Intake
from bgremover.service.metrics import Metrics
from bgremover.models.manifest import ModelError, ModelSpec, find_model_spec
from bgremover.intake.names import display, fitted_path, session_name, twin
from bgremover.service.notify import Notifier, progress_summary
from bgremover.service.rootlock import lock_root
from bgremover.settings import Settings
from bgremover.queue.spool import Spool, remove_empty_dirs
from bgremover.queue.states import TERMINAL, SessionState, Status
from bgremover.cli.statusview import item_document
from bgremover.queue.store import IllegalTransition, Item, Session, Store, iso
from bgremover.intake.tickets import TICKET_NAME, TicketError, makes_masks, read_ticket, session_options

log = structlog.get_logger()

EXIT_DONE, EXIT_BAD_INPUT, EXIT_CANT_WRITE, EXIT_TEMPORARY = 0, 2, 73, 75
PROBE_BYTES = 64 * 1024  # what a state folder must take before jobs start again
RESCAN_SECONDS = 30.0  # a full inbox walk now and then catches events inotify dropped
STDERR_TAIL_BYTES = 2000
# The loop's steps, in the order each pass runs them.
UPKEEP = ("reap", "take_ready_files", "read_markers", "enforce_limits", "close_idle_sessions", "finish_sessions",
          "flush_outbox", "start_next", "watch_hooks", "reap_strays", "rescan")
UPKEEP_WITHOUT_STATE = frozenset({"reap", "enforce_limits", "flush_outbox", "watch_hooks", "reap_strays"})
READY_TIMEOUT_SECONDS = 120.0  # the first job process's session, at start-up


@dataclass
class RunningJob:
    item: Item
    process: Standby  # the job process; its pid is also its process group
    started: float
    deadline: float
    stop_reason: str | None = None  # why we are stopping it: timeout, memory, cancel, shutdown
    kill_at: float | None = None
    peak_rss_kb: int = 0
    returncode: int | None = None
    exited: threading.Event = field(default_factory=threading.Event)


class Supervisor:
    def __init__(self, settings: Settings, model: ModelSpec) -> None:
        self.settings = settings
        self.model = model  # the model setting's; a session's job ticket may name another
        self.models: dict[str, ModelSpec] = {model.name: model}  # the entries whose files were verified
        self.wakeups: queue.SimpleQueue = queue.SimpleQueue()
        self.spool = Spool(settings.root)
        self.store: Store | None = None  # opened by start_up, once the job processes could start
        self.lock_fd: int | None = None
        self.intake = Intake(
            settings.inbox,
            settings.stable_seconds,
            wake=lambda: self.wakeups.put("intake"),
            also_watch=[settings.retry_dir, settings.cancel_dir],
        )
        self.forkserver = ForkServer(settings.job_module, {
            "root": str(settings.root),  # unused by jobs; it tells `ps` readers whose processes these are
            "model": model.name, "models_dir": str(model.path.parent), "threads": settings.threads,
            "providers": list(settings.providers), "format": settings.output_format,
        })  # fmt: skip
        self.standby: Standby | None = None
        self.spawn_retry_at = 0.0
        self.strays: set[int] = set()  # process groups of finished jobs and dismissed standbys, still to reap
        self.job: RunningJob | None = None
        self.stopping = False
        self.unfinished: set[str] = set()  # sessions that may be ready for their ZIP
        self.stale: set[str] = set()  # sessions whose status JSON the outbox refused; written again later
        self.outbox_backoff = Backoff()  # the outbox refused a status JSON or a ZIP
        self.state_backoff = Backoff()  # the state folder refused the database, a take or a job's result
        self.next_rescan = 0.0
        self.notifier = Notifier.from_environment()  # systemd: READY, STATUS, the watchdog; a no-op elsewhere
        self.hooks: list[tuple[str, RunningHook]] = []  # (session, its on_session_complete command) still running
        self.hooks_started = 0
        self.metrics = Metrics(settings)  # Prometheus endpoint and/or textfile; off unless configured

    # -- the loop -----------------------------------------------------------------

    def run(self, on_ready: Callable[[], None] = lambda: None) -> int:
        previous = {sig: signal.signal(sig, self.on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            self.start_up()
            on_ready()
            self.notifier.ready(lambda: progress_summary(self.store))
            while not self.stopping:
                self.tick()
            self.notifier.stopping()
            self.drain()
        finally:
            self.intake.stop()
            self.stop_hooks()
            self.close_job_processes()
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
        timeout = 0.25 if self.job else 1.0
        # While the state folder refuses writes no file is taken, so a due file must not wake the loop.
        due = self.intake.seconds_until_due(time.monotonic()) if self.state_backoff.due(time.monotonic()) else None
        self.wait_for_wakeup(timeout if due is None else min(timeout, due + 0.01))
        now = time.monotonic()
        state_was_failing = self.state_backoff.failing
        if state_was_failing and self.state_backoff.due(now):
            self.probe_state(now)
        for name in UPKEEP:
            if self.stopping:
                return
            # While the state folder refuses writes, only the steps that need no
            # write there run: the job in flight is still watched and reaped,
            # and nothing new is taken or started.
            if not self.state_backoff.due(now) and name not in UPKEEP_WITHOUT_STATE:
                continue
            try:
                getattr(self, name)(now)
            except Exception as exc:  # noqa: BLE001 - the loop must outlive any one step's failure
                if is_storage_error(exc):
                    self.state_refused(exc, now)
                else:
                    log.exception("upkeep_failed", step=name)
        if state_was_failing and self.state_backoff.due(now):
            self.state_accepted(now)
        self.metrics.refresh(self.store, now)  # at most once a second
        # Last, so a pass that wedges anywhere above stops the pings and systemd restarts us.
        self.notifier.update(lambda: progress_summary(self.store))

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
        self.lock_fd = lock_root(self.settings.root, self.settings.state_dir)  # before anything else runs
        runs_on = self.start_job_processes()
        self.open_folders()
        self.recover()
        self.metrics.start(self.store)  # a port in use stops start-up here, before anything is taken
        self.intake.rescan()
        self.intake.start()
        log.info("daemon_ready", root=str(self.settings.root), inbox=str(self.settings.inbox),
                 model=self.model.name, format=self.settings.output_format, **runs_on)

    def open_folders(self) -> None:
        settings = self.settings
        for folder in (settings.inbox, settings.outbox, settings.retry_dir, settings.cancel_dir, settings.state_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self.spool.prepare()
        self.store = Store(settings.database)

    def start_job_processes(self) -> dict:
        """Start the fork server and the first job process; say what they actually run on.

        Raises ForkServerError when they cannot start (a provider this machine
        lacks, an encoder Pillow lacks), so a bad set-up stops the daemon at
        once instead of failing every item.
        """
        become_subreaper()
        self.forkserver.start()
        self.standby = self.forkserver.spawn(standby_request(self.model))
        ready = self.standby.wait_ready(READY_TIMEOUT_SECONDS)
        if ready.get("error"):
            raise ForkServerError(ready["error"])
        runs_on = {key: ready[key] for key in ("providers", "intra_op_threads", "onnxruntime") if key in ready}
        return {**runs_on, "threads": self.settings.threads, "first_session_ms": ready.get("prepare_ms")}

    def drain(self) -> None:
        """An orderly stop: the job in flight is stopped and its item goes back to queued."""
        if self.job is None:
            return
        self.stop_job("shutdown", escalate_after=self.settings.kill_grace_seconds)
        deadline = time.monotonic() + self.settings.kill_grace_seconds + 2
        while self.job is not None and time.monotonic() < deadline:
            self.job.exited.wait(0.05)
            now = time.monotonic()
            self.enforce_limits(now)
            self.reap(now)

    # -- a full or read-only disk -------------------------------------------------

    def state_refused(self, exc: BaseException, now: float) -> None:
        """The state folder refused a write: hold everything that writes there, and say so once."""
        self.refused(self.state_backoff, "state", self.settings.state_dir, "the state folder", exc, now,
                     "nothing new is taken or started until it takes writes again, and nothing is lost or failed "
                     "meanwhile")

    def state_accepted(self, now: float) -> None:
        self.accepted(self.state_backoff, "state", self.settings.state_dir, now)

    def probe_state(self, now: float) -> None:
        """A small real write where jobs put their results: does the state folder take writes again?"""
        probe = self.spool.results / f"{outbox.TEMP_PREFIX}probe"
        try:
            outbox.atomic_write(probe, bytes(PROBE_BYTES))
            probe.unlink()
        except OSError as exc:
            self.state_refused(exc, now)

    def outbox_refused(self, exc: BaseException, now: float) -> None:
        self.refused(self.outbox_backoff, "outbox", self.settings.outbox, "the outbox", exc, now,
                     "status files and ZIPs are written as soon as it takes writes again, and no item is failed for it")

    def outbox_accepted(self, now: float) -> None:
        self.accepted(self.outbox_backoff, "outbox", self.settings.outbox, now)

    @staticmethod
    def refused(backoff: Backoff, area: str, folder: Path, called: str, exc: BaseException, now: float,
                meanwhile: str) -> None:
        """One error line when a folder starts refusing writes; its retries after that stay at debug level."""
        if backoff.failed(now):
            log.error(f"{area}_unwritable", folder=str(folder), retry_in_s=backoff.delay,
                      error=f"{called} refused a write ({describe(exc)}); {meanwhile}")
        else:
            log.debug(f"{area}_still_unwritable", error=describe(exc), retry_in_s=backoff.delay)

    @staticmethod
    def accepted(backoff: Backoff, area: str, folder: Path, now: float) -> None:
        """One line when a folder that refused writes takes them again."""
        outage = backoff.succeeded(now)
        if outage is not None:
            log.info(f"{area}_writable_again", folder=str(folder), after_s=round(outage, 1))

    def flush_outbox(self, now: float) -> None:
        """Write the status JSONs the outbox refused before, once the wait is over."""
        if not self.stale or not self.outbox_backoff.due(now):
            return
        self.settings.outbox.mkdir(parents=True, exist_ok=True)  # someone may have removed it
        for name in sorted(self.stale):
            self.publish(name)
            if self.outbox_backoff.failing:
                return

    # -- recovery -----------------------------------------------------------------

    def recover(self) -> None:
        now = time.time()
        for item in self.store.recover(now):
            self.kill_leftover_job(item)
            log.warning("item_recovered", session=item.session, item=item.name, status="queued")
        for item in self.store.items(None, Status.QUEUED):
            self.finish_take(item)
        self.ensure_marker_folders()
        removed = outbox.remove_temp_files(self.settings.outbox) + outbox.remove_temp_files(self.spool.results)
        if removed:
            log.info("temp_files_removed", count=removed)
        self.sweep_results()
        for session in self.store.sessions():
            if session.state is SessionState.PROCESSING:
                self.unfinished.add(session.name)
            elif session.state is SessionState.COMPLETE:
                self.settle(session)
            self.publish_if_stale(session)

    def kill_leftover_job(self, item: Item) -> None:
        """A job of a previous life may still run (its own process group survived the kill -9)."""
        if not item.job_pid:
            return
        try:
            cmdline = Path(f"/proc/{item.job_pid}/cmdline").read_bytes()
        except OSError:
            return
        # The pid may have been reused by an unrelated process: kill only our own job.
        if self.settings.job_module.encode() in cmdline:
            try:
                os.killpg(item.job_pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            wait_until_gone(item.job_pid)  # so it cannot write a result after sweep_results
            log.warning("leftover_job_killed", session=item.session, item=item.name, pid=item.job_pid)

    def sweep_results(self) -> None:
        """At start-up, before any job: keep only the cutouts still waiting for their ZIP.

        A kill can leave a job's files behind at several points: a job that
        finished after its daemon died (its item runs again as a new attempt), or
        a verdict recorded just before its files were removed. No later step reads
        them, so whatever is not a done item's cutout for an unfinished session goes.
        """
        waiting = set()
        for session in self.store.sessions(SessionState.OPEN, SessionState.PROCESSING):
            ext = FORMAT_EXTENSIONS[session.format]
            for item in self.store.items(session.name, Status.DONE):
                waiting |= {self.spool.result(item, ext).name, self.spool.mask_result(item).name}
        swept = [path for path in self.spool.results.iterdir() if path.is_file() and path.name not in waiting]
        self.spool.discard(*swept)
        if swept:
            log.info("job_files_removed", count=len(swept), reason="left by a previous life")

    def finish_take(self, item: Item) -> None:
        """A crash between recording an item and moving its file: finish the move, or forget it."""
        if self.spool.original(item) is not None:
            return
        dropped = self.spool.dropped(item)
        if dropped.is_file():
            self.spool.take(dropped, item)
            log.info("take_completed", session=item.session, item=item.name)
        elif self.store.withdraw(item.id):
            self.forget_if_empty(item.session)
            log.warning("file_vanished", session=item.session, item=item.name)

    # -- intake -------------------------------------------------------------------

    def forget_if_empty(self, name: str) -> None:
        """Drop a session that never kept an item, and the status JSON it may have shown already."""
        if self.store.forget_empty_session(name):
            (self.settings.outbox / f"{name}.json").unlink(missing_ok=True)
            self.stale.discard(name)
            self.unfinished.discard(name)

    def take_ready_files(self, now: float) -> None:
        ready = self.intake.ready(now)
        touched: set[str] = set()  # each session's status JSON is written once per pass, not once per file
        try:
            for index, path in enumerate(ready):
                if self.stopping:
                    return
                try:
                    touched.add(self.take(path))
                except Exception as exc:  # noqa: BLE001 - one odd file must not hold back the others
                    if is_storage_error(exc):
                        self.intake.watch_again(ready[index:])  # still in the inbox: taken once the state works
                        raise
                    log.exception("take_failed", path=str(path))
        finally:
            for name in sorted(touched - {None}):
                self.publish(name)

    def rescan(self, now: float) -> None:
        lost = self.intake.events_lost()
        if lost:
            log.warning("inbox_events_lost", reason="the kernel's inotify queue overflowed (fs.inotify.max_queued_events)",
                        action="walking the inbox again")
        if lost or now >= self.next_rescan:
            self.next_rescan = now + RESCAN_SECONDS
            self.intake.rescan()

    def take(self, path: Path) -> str | None:
        """Record and move one dropped file; the session it joined, or None if it was skipped."""
        now = time.time()
        relative = path.relative_to(self.settings.inbox)
        parts = [display(part) for part in relative.parts]
        source = parts[0] if len(parts) > 1 else None
        session = self.session_for(source, now, self.settings.inbox / relative.parts[0] if source else None)
        names, members = self.store.names(session.name)
        name = self.unused_name(fitted_path("/".join(parts[1:] if source else parts)), names)
        member = self.member(session, name, members)
        ext = path.suffix.lower()
        item = self.store.add_item(session.name, name, member, ext, os.fsencode(path.relative_to(self.settings.root)), now)
        try:
            self.spool.take(path, item)
        except OSError as exc:
            self.store.withdraw(item.id)
            self.forget_if_empty(session.name)  # opened for this file alone
            if is_storage_error(exc):
                raise
            log.warning("file_skipped", path=str(path), reason=describe(exc))
            return None
        log.info("item_queued", session=session.name, item=name, status="queued")
        if self.store.count(session.name) >= self.settings.max_session_items:
            self.close_session(session, "full")
        return session.name

    def session_for(self, source: str | None, now: float, folder: Path | None = None) -> Session:
        """The open session for this source with room left, or a new one (with the folder's job ticket)."""
        session = self.store.open_session(source)
        if session is not None and self.store.count(session.name) < self.settings.max_session_items:
            return session
        if session is not None:
            self.close_session(session, "full")
        base = source or "batch-" + datetime.fromtimestamp(now, timezone.utc).strftime("%Y%m%d-%H%M%S")
        n = 1
        while self.store.session(name := session_name(base, n)) or (self.settings.outbox / f"{name}.json").exists():
            n += 1
        ticket, error = self.read_ticket(folder)
        session = self.store.create_session(name, source, self.format_for(ticket), now, ticket, error)
        log.info("session_opened", session=name, **({"ticket": ticket} if ticket else {}))
        if error:
            log.error("ticket_refused", session=name, error=error)
        return session

    def options_for(self, ticket: dict) -> dict:
        return session_options(self.settings, ticket)

    def format_for(self, ticket: dict) -> str:
        """A session's file format: a mask alone is always a PNG (a matte must be lossless)."""
        options = self.options_for(ticket)
        return "png" if options["output"] == "mask" else options["output_format"]

    def with_masks(self, session: Session) -> bool:
        return makes_masks(self.settings, session.ticket)

    def member(self, session: Session, name: str, members: set[str]) -> str:
        """The new item's ZIP name: distinct from every cutout, and from every mask when there are masks."""
        ext = FORMAT_EXTENSIONS[session.format]
        if not self.with_masks(session):
            return outbox.member_name(name, ext, members)
        return outbox.member_with_mask(name, ext, members | {outbox.mask_member(m) for m in members})

    def read_ticket(self, folder: Path | None) -> tuple[dict, str | None]:
        """The folder's job ticket, or the sentence saying why it cannot be used."""
        if folder is None:
            return {}, None
        try:
            ticket = read_ticket(folder, session_options(self.settings, None)) or {}
            if "model" in ticket:
                self.model_named(ticket["model"])
            return ticket, None
        except TicketError as exc:
            return {}, str(exc)
        except ModelError as exc:
            return {}, f"the job ticket {TICKET_NAME} names a model this daemon cannot use: {exc}"

    def model_named(self, name: str) -> ModelSpec:
        """The model by its manifest name as the manifests say now; its checksum verified whenever its entry changes.

        Read afresh for every session and item (two small files), so a model
        removed with `bgremover models remove` stops being used at once, and
        one fetched meanwhile is found without a restart.
        """
        spec = find_model_spec(name, self.settings.models_folder, verify=False)
        if self.models.get(name) != spec:
            self.models[name] = find_model_spec(name, self.settings.models_folder)
        return self.models[name]

    def reread_ticket(self, session: Session) -> None:
        """A refused ticket is read again on a retry: once fixed, the session runs with it."""
        ticket, error = self.read_ticket(self.settings.inbox / session.source if session.source else None)
        if error:
            return
        fmt = self.format_for(ticket)
        renamed = dataclasses.replace(session, format=fmt, options=json.dumps(ticket) if ticket else None)
        members: dict[int, str] = {}
        for item in self.store.items(session.name):
            members[item.id] = self.member(renamed, item.name, set(members.values()))
        self.store.set_ticket(session.name, fmt, ticket, None, members)
        log.info("ticket_applied", session=session.name, ticket=ticket)

    @staticmethod
    def unused_name(name: str, names: set[str]) -> str:
        # The same name dropped twice into one open session: keep both, like a browser's downloads.
        candidate, n = name, 1
        while candidate in names:
            n += 1
            candidate = twin(name, n)
        return candidate

    # -- markers ------------------------------------------------------------------

    def read_markers(self, now: float) -> None:
        if not (self.settings.cancel_dir.is_dir() and self.settings.retry_dir.is_dir()):
            self.ensure_marker_folders()  # someone removed them: put back what users rely on
        for marker in sorted(self.settings.cancel_dir.iterdir()):
            if marker.is_file() or marker.is_symlink():
                self.cancel_session(display(marker.name))
                marker.unlink(missing_ok=True)
        for marker in sorted(p for p in self.settings.retry_dir.rglob("*") if p.is_file() or p.is_symlink()):
            relative = marker.relative_to(self.settings.retry_dir)
            self.retry_item(display(relative.parts[0]), display("/".join(relative.parts[1:])))
            marker.unlink(missing_ok=True)

    def cancel_session(self, name: str) -> None:
        session = self.store.session(name)
        if session is None:
            log.warning("cancel_marker_ignored", session=name, reason="no such session")
            return
        if session.state is SessionState.OPEN:
            self.close_session(session, "cancelled")
        for item in self.store.items(name, Status.QUEUED):
            self.move(item, Status.CANCELLED, "cancel marker")  # QUEUED -> CANCELLED
            self.ensure_retry_folder(item)
        if self.job and self.job.item.session == name:
            self.stop_job("cancel", escalate_after=self.settings.kill_grace_seconds)
        log.info("session_cancelled", session=name)
        self.unfinished.add(name)
        self.publish(name)

    def retry_item(self, session_name: str, name: str) -> None:
        item = self.store.item_named(session_name, name)
        if item is None or item.status not in (Status.FAILED, Status.CANCELLED):
            reason = "no such item" if item is None else f"item is {item.status.value}"
            log.warning("retry_marker_ignored", session=session_name, item=name, reason=reason)
            return
        session = self.store.session(session_name)
        if session.error:
            self.reread_ticket(session)
        # Reopen first: a kill between the two steps then leaves a processing session
        # whose items are all finished (completed again at start-up), never a
        # complete session with a queued item, whose new cutout no ZIP would take.
        self.store.set_session_state(session_name, {SessionState.COMPLETE}, SessionState.PROCESSING, time.time())
        self.move(item, Status.QUEUED, "retry marker")  # FAILED | CANCELLED -> QUEUED
        self.publish(session_name)

    def ensure_marker_folders(self) -> None:
        self.settings.cancel_dir.mkdir(parents=True, exist_ok=True)
        for item in self.store.items(None, Status.FAILED, Status.CANCELLED):
            self.ensure_retry_folder(item)
        self.settings.retry_dir.mkdir(parents=True, exist_ok=True)

    def ensure_retry_folder(self, item: Item) -> None:
        # The item's status is recorded already: a folder we cannot make now must not undo that.
        try:
            (self.settings.retry_dir / item.session / item.name).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            log.warning("retry_folder_not_made", session=item.session, item=item.name, error=describe(exc))

    # -- jobs ---------------------------------------------------------------------

    def start_next(self, now: float) -> None:
        if self.job is not None or self.stopping or now < self.spawn_retry_at:
            return
        queued = self.store.next_queued()
        if queued is None:
            if self.standby is not None and not self.standby.warmed:
                self.standby.warm()  # nothing to do: a good moment for its first run
            return
        session = self.store.session(queued.session)  # one read serves the model, the refusal and the job
        try:
            model = self.model_named(self.options_for(session.ticket)["model"])
        except ModelError as exc:  # its model was removed, or its file damaged, since the session opened
            self.finish(self.move(queued, Status.PROCESSING, "claimed"), Status.FAILED, str(exc))
            return
        standby = self.take_standby(now, model)
        if standby is None:
            return  # the item stays queued; we try again after a pause
        try:
            item = self.move(queued, Status.PROCESSING, "claimed")  # QUEUED -> PROCESSING
        except Exception:
            self.standby = standby  # unused: it waits for the claim to work
            raise
        original = self.spool.original(item)
        if original is None:
            self.standby = standby  # unused: it waits for the next item
            self.finish(item, Status.FAILED, "the original file is missing from the daemon's store")
            return
        if session.error:  # its folder's job ticket is invalid: no guessing what it meant
            self.standby = standby
            self.finish(item, Status.FAILED, session.error)
            return
        self.job = self.launch(item, original, standby, session, model, now)
        if self.job is None:
            return
        self.publish(item.session)
        # The next item's process starts now, while this one runs: its start-up
        # overlaps this job's single-threaded stages instead of following them.
        # The next item most likely belongs to the same session, so the same model.
        self.standby = self.take_standby(now, model)

    def take_standby(self, now: float, model: ModelSpec) -> Standby | None:
        """The job process prepared for `model`, or a new one; None (and a pause) if the fork server fails."""
        standby, self.standby = self.standby, None
        alive = standby is not None and standby.alive()
        if alive and standby.request == standby_request(model):
            return standby
        if alive:  # prepared for another session's model: a session for this one costs what a new process does
            standby.dismiss()
            self.strays.add(standby.pid)
            log.debug("job_process_replaced", pid=standby.pid, model=model.name)
        elif standby is not None:  # it died waiting (killed from outside): replace it before claiming an item
            standby.dismiss()
            log.warning("job_process_lost", pid=standby.pid, when="waiting for a job")
        try:
            if not self.forkserver.alive():
                log.warning("forkserver_restarting")
                self.forkserver.close()
                self.forkserver.start()
            return self.forkserver.spawn(standby_request(model))
        except ForkServerError as exc:
            self.spawn_retry_at = now + 5.0
            log.error("job_process_unavailable", error=str(exc), retry_in_s=5)
            return None

    def launch(self, item: Item, original: Path, standby: Standby, session: Session, model: ModelSpec,
               now: float) -> RunningJob | None:
        ext = FORMAT_EXTENSIONS[session.format]
        settings = self.settings
        options = self.options_for(session.ticket)
        argv = [
            "--input", str(original), "--output", str(self.spool.result(item, ext)),
            "--report", str(self.spool.report(item)), "--format", session.format,
            "--background", options["background"], "--kind", options["output"],
            *(["--mask", str(self.spool.mask_result(item))] if options["output"] == "both" else []),
            "--crop", options["crop"], "--margin", str(options["margin"]), "--fill", str(options["fill"]),
            *(["--size", str(options["size"])] if options["size"] else []), "--edges", options["edges"],
            "--quality", str(options["quality"]), "--model", model.name,
            "--models-dir", str(model.path.parent), "--threads", str(settings.threads),
            "--providers", ",".join(settings.providers), "--png-compress-level", str(options["png_compress_level"]),
            "--webp-method", str(options["webp_method"]), "--avif-speed", str(options["avif_speed"]),
            "--max-megapixels", str(settings.max_megapixels), "--large-images", settings.large_images,
        ]  # fmt: skip
        ready = standby.poll_ready()  # before the job: had its start-up finished while the last job ran?
        try:
            standby.assign(argv, str(self.spool.job_log(item)))
        except OSError as exc:
            # It died between our check and the hand-over: the item was never started.
            standby.dismiss()
            self.strays.add(standby.pid)
            self.move(item, Status.QUEUED, "job process lost before it started")  # PROCESSING -> QUEUED
            log.warning("job_process_lost", session=item.session, item=item.name, pid=standby.pid, error=str(exc))
            return None
        try:
            self.store.set_job_pid(item.id, standby.pid)
        except Exception as exc:  # noqa: BLE001 - the job runs already; only a restart's clean-up needs the pid
            log.warning("job_pid_not_recorded", session=item.session, item=item.name, error=str(exc))
        job = RunningJob(item, standby, now, now + settings.job_timeout_seconds)
        threading.Thread(target=self.watch_exit, args=(job,), name=f"job-{job.process.pid}", daemon=True).start()
        log.info("job_started", session=item.session, item=item.name, model=model.name, pid=job.process.pid,
                 attempt=item.attempts, ready_in_advance=ready is not None,
                 **({"start_ms": ready.get("start_ms"), "session_ms": ready.get("prepare_ms")} if ready else {}))
        return job

    def watch_exit(self, job: RunningJob) -> None:
        # WNOWAIT: wait for the exit without reaping it; the loop reaps with wait4.
        try:
            os.waitid(os.P_PID, job.process.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        job.exited.set()
        self.wakeups.put("job")

    def reap_strays(self, now: float) -> None:
        """Reap what finished jobs and dismissed standbys leave: as a subreaper, they are ours to reap."""
        for group in list(self.strays):
            try:
                while os.waitpid(-group, os.WNOHANG)[0] != 0:
                    pass
            except ChildProcessError:  # nobody of that group is left
                self.strays.discard(group)

    def close_job_processes(self) -> None:
        """At exit: the unused standby and the fork server go, and nothing of ours is left unreaped."""
        if self.standby is not None:
            self.standby.dismiss()  # it exits on end-of-file
            self.strays.add(self.standby.pid)
            self.standby = None
        self.forkserver.close()
        deadline = time.monotonic() + 3.0
        while self.strays and time.monotonic() < deadline:
            self.reap_strays(time.monotonic())
            time.sleep(0.02)
        for group in list(self.strays):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        deadline = time.monotonic() + 2.0
        while self.strays and time.monotonic() < deadline:
            self.reap_strays(time.monotonic())
            time.sleep(0.02)

    def stop_job(self, reason: str, escalate_after: float, sig: int = signal.SIGTERM) -> None:
        job = self.job
        if job is None or job.stop_reason is not None:
            return
        job.stop_reason = reason
        job.kill_at = time.monotonic() + escalate_after
        self.signal_job(job, sig)
        log.info("job_stopping", session=job.item.session, item=job.item.name, pid=job.process.pid, reason=reason)

    def signal_job(self, job: RunningJob, sig: int) -> None:
        try:
            os.killpg(job.process.pid, sig)
        except ProcessLookupError:
            pass

    def enforce_limits(self, now: float) -> None:
        job = self.job
        if job is None:
            return
        job.peak_rss_kb = max(job.peak_rss_kb, peak_rss_kb(job.process.pid))
        if job.stop_reason is None and job.peak_rss_kb > self.settings.job_memory_limit_mb * 1024:
            self.stop_job("memory", escalate_after=0, sig=signal.SIGKILL)
        elif job.stop_reason is None and now >= job.deadline:
            self.stop_job("timeout", escalate_after=self.settings.kill_grace_seconds)
        if job.kill_at is not None and now >= job.kill_at:
            job.kill_at = None
            self.signal_job(job, signal.SIGKILL)

    def reap(self, now: float) -> None:
        job = self.job
        if job is None:
            return
        if job.returncode is None:
            pid, status, usage = os.wait4(job.process.pid, os.WNOHANG)
            if pid == 0:
                return
            job.returncode = os.waitstatus_to_exitcode(status)
            job.process.dismiss()
            self.signal_job(job, signal.SIGKILL)  # no grandchild outlives its job
            self.strays.add(job.process.pid)  # and any it left behind is reaped
            job.peak_rss_kb = max(job.peak_rss_kb, usage.ru_maxrss)
        if not self.state_backoff.due(now):
            return  # its outcome is recorded once the state folder takes writes again
        # A refused write raises here before anything changed: the job stays, and
        # the next pass concludes it again with the same files.
        self.conclude(job, now)
        self.job = None

    def conclude(self, job: RunningJob, now: float) -> None:
        item, code = job.item, job.returncode
        session = self.store.session(item.session)
        result, report, job_log = (self.spool.result(item, FORMAT_EXTENSIONS[session.format]), self.spool.report(item),
                                   self.spool.job_log(item))
        mask = self.spool.mask_result(item)
        job_report = read_report(report)
        status, error, reason = verdict(job, result, job_report, self.settings)
        if status is Status.DONE and self.with_masks(session) and not mask.is_file():
            status, error, reason = Status.FAILED, "the job exited without writing the mask", "no_result"
        stderr = tail(job_log)  # bounded: what a job says goes on its item's log line, whatever the outcome
        note = job_report.get("note") if status is Status.DONE else None
        could_not_write = status is Status.QUEUED and code == EXIT_CANT_WRITE
        if could_not_write:
            note = (f"waiting: the state folder refused this item's result ({job_report.get('error') or 'no space'}); "
                    "it runs again once the folder takes writes")
        extra = {key: value for key, value in (("stderr", stderr), ("timings_ms", job_report.get("timings_ms")))
                 if value}
        self.finish(item, status, error, note=note, reason=job.stop_reason or "exited", exit_code=code, pid=job.process.pid,
                    duration_ms=round((now - job.started) * 1000), peak_rss_mb=round(job.peak_rss_kb / 1024, 1),
                    **extra)
        self.metrics.job_concluded(job, status, reason, job_report.get("timings_ms"), now)
        if could_not_write:
            self.state_refused(OSError(errno.ENOSPC, job_report.get("error") or "the job could not write its result"), now)
        # Only after the outcome is recorded: until then these files are its evidence.
        with contextlib.suppress(OSError):
            if status is not Status.DONE:
                self.spool.discard(result, mask)
            self.spool.discard(report, job_log)

    def move(self, item: Item, dst: Status, reason: str, error: str | None = None, note: str | None = None) -> Item:
        """The one place the supervisor changes an item's status; every change is logged."""
        now = time.time()
        try:
            moved = self.store.transition(item.id, item.status, dst, now, error=error, reason=reason, note=note)
        except IllegalTransition as exc:
            log.error("transition_refused", session=item.session, item=item.name, error=str(exc))
            raise
        log.info("item_transition", session=item.session, item=item.name, status=dst.value,
                 previous=item.status.value, reason=reason, duration_ms=round((now - item.updated_at) * 1000))
        return moved

    def finish(self, item: Item, status: Status, error: str | None, note: str | None = None, **fields) -> None:
        # PROCESSING -> DONE | FAILED | CANCELLED, or -> QUEUED when the daemon is stopping
        item = self.move(item, status, fields.get("reason", "finished"), error, note)
        if status in (Status.FAILED, Status.CANCELLED):
            self.ensure_retry_folder(item)
        level = log.info if status in (Status.DONE, Status.QUEUED) else log.warning
        level("job_finished", session=item.session, item=item.name, status=status.value, error=error,
              attempts=item.attempts, **fields)
        self.unfinished.add(item.session)
        self.publish(item.session)

    # -- sessions -----------------------------------------------------------------

    def close_session(self, session: Session, reason: str) -> None:
        # OPEN -> PROCESSING: no new files join it from now on.
        if self.store.set_session_state(session.name, {SessionState.OPEN}, SessionState.PROCESSING, time.time()):
            log.info("session_closed", session=session.name, reason=reason)
            self.unfinished.add(session.name)
            self.publish(session.name)
            if session.source is not None and reason != "full":
                remove_empty_dirs(self.settings.inbox / session.source, self.settings.inbox)

    def close_idle_sessions(self, now: float) -> None:
        wall = time.time()
        for session in self.store.sessions(SessionState.OPEN):
            if wall - session.last_item_at >= self.settings.session_idle_seconds:
                self.close_session(session, "idle")

    def finish_sessions(self, now: float) -> None:
        for name in sorted(self.unfinished):
            if not self.outbox_backoff.due(now):
                return  # the outbox refused the last write: wait before the next ZIP
            self.unfinished.discard(name)  # complete() puts it back if its ZIP must wait
            session = self.store.session(name)
            if session.state is SessionState.PROCESSING:
                try:
                    self.complete(session, now)
                except BaseException:
                    self.unfinished.add(name)  # tried again on a later pass
                    raise

    def complete(self, session: Session, now: float) -> None:
        items = self.store.items(session.name)
        if any(item.status not in TERMINAL for item in items):
            return
        zip_name = f"{session.name}.zip"
        ext = FORMAT_EXTENSIONS[session.format]
        done = [item for item in items if item.status is Status.DONE]
        members = [(item.member, self.existing(self.spool.result(item, ext))) for item in done]
        if self.with_masks(session):
            members += [(outbox.mask_member(item.member), self.existing(self.spool.mask_result(item))) for item in done]
        previous = self.settings.outbox / zip_name
        try:
            outbox.write_zip(previous, members, previous if previous.exists() else None)
        except OSError as exc:
            if is_storage_error(exc):
                self.outbox_refused(exc, now)
            else:  # a ZIP we cannot build (a result gone missing): tried again after the same waits
                self.outbox_backoff.failed(now)
                log.error("zip_write_failed", session=session.name, error=str(exc),
                          retry_in_s=self.outbox_backoff.delay)
            self.unfinished.add(session.name)
            return
        self.outbox_accepted(now)
        # Tidy up before saying "complete", so a reader who sees it finds the archive in place.
        # A crash in between is safe: the next life rewrites the ZIP from the previous one.
        self.settle(session)
        # PROCESSING -> COMPLETE: every item terminal and the ZIP current.
        self.store.set_session_state(session.name, {SessionState.PROCESSING}, SessionState.COMPLETE, time.time(), zip_name)
        counts = self.store.counts(session.name)
        log.info("session_complete", session=session.name, zip=zip_name, **counts)
        self.publish(session.name)
        self.start_hook(session.name, zip_name)

    # -- the on_session_complete hook ---------------------------------------------

    def start_hook(self, session: str, zip_name: str) -> None:
        command = self.settings.on_session_complete
        if not command:
            return
        self.hooks_started += 1
        environment = session_environment(self.settings.outbox / zip_name, self.settings.outbox / f"{session}.json",
                                          session)
        output = self.spool.results / f"{outbox.TEMP_PREFIX}hook-{self.hooks_started}.log"
        try:
            hook = RunningHook(command, environment, self.settings.hook_timeout_seconds, output)
        except OSError as exc:  # the session stays complete whatever the hook does, or fails to do
            log.error("hook_failed", session=session, item=None, error=f"could not start the hook: {describe(exc)}")
            return
        self.hooks.append((session, hook))
        log.info("hook_started", session=session, item=None, pid=hook.pid, command=command)

    def watch_hooks(self, now: float) -> None:
        for session, hook in list(self.hooks):
            result = hook.poll(now)
            if result is None:
                continue
            self.hooks.remove((session, hook))
            self.strays.add(hook.pid)  # what it started in its group is ours to reap now
            if result.timed_out:
                log.error("hook_failed", session=session, item=None, error=(
                    f"the hook ran longer than {self.settings.hook_timeout_seconds:g} s (hook_timeout_seconds) "
                    "and was killed"), duration_ms=result.duration_ms, output=result.output)
            elif result.exit_code != 0:
                log.error("hook_failed", session=session, item=None, error=f"the hook exited with {result.exit_code}",
                          exit_code=result.exit_code, duration_ms=result.duration_ms, output=result.output)
            else:
                log.info("hook_finished", session=session, item=None, exit_code=0, duration_ms=result.duration_ms,
                         output=result.output)

    def stop_hooks(self) -> None:
        """At exit: a hook still running is killed; the log says which, so its work can be redone."""
        for session, hook in self.hooks:
            hook.kill()
            hook.process.wait()
            self.strays.add(hook.pid)
            log.warning("hook_interrupted", session=session, item=None, pid=hook.pid,
                        error="the daemon stopped while the hook ran; it was killed")
        self.hooks.clear()

    @staticmethod
    def existing(path: Path) -> Path | None:
        return path if path.is_file() else None

    def settle(self, session: Session) -> None:
        """After the ZIP is safely written: results leave the spool, originals go to the archive."""
        ext = FORMAT_EXTENSIONS[session.format]
        for item in self.store.items(session.name):
            if item.status is Status.DONE:
                self.spool.discard(self.spool.result(item, ext), self.spool.mask_result(item))
            if self.settings.keep_originals:
                self.spool.archive_original(item)
            elif item.status is Status.DONE:
                # Only now that its cutout is in the ZIP; failed ones stay for their retry.
                self.spool.delete_original(item)

    # -- the status JSON ----------------------------------------------------------

    def status_document(self, session: Session) -> dict:
        items = self.store.items(session.name)
        counts = {status.value: 0 for status in Status}
        for item in items:
            counts[item.status.value] += 1
        with_masks = self.with_masks(session)
        return {
            "session": session.name,
            "state": session.state.value,
            "format": session.format,
            "model": self.options_for(session.ticket)["model"],
            "created_at": iso(session.created_at),
            "updated_at": iso(max([session.updated_at, *(item.updated_at for item in items)])),
            "total": len(items),
            "counts": counts,
            "zip": session.zip,
            "error": session.error,
            "ticket": session.ticket or None,
            "items": [item_document(item, with_masks) for item in items],
        }

    def publish(self, name: str) -> None:
        """Write a session's status JSON; if the outbox refuses, it is written again after a wait."""
        now = time.monotonic()
        if not self.outbox_backoff.due(now):
            self.stale.add(name)
            return
        session = self.store.session(name)
        try:
            outbox.write_status(self.settings.outbox / f"{name}.json", self.status_document(session))
        except OSError as exc:
            self.stale.add(name)
            self.outbox_refused(exc, now)
            return
        self.stale.discard(name)
        self.outbox_accepted(now)

    def publish_if_stale(self, session: Session) -> None:
        path = self.settings.outbox / f"{session.name}.json"
        try:
            if json.loads(path.read_text("utf-8")) == self.status_document(session):
                return
        except (OSError, ValueError):
            pass
        self.publish(session.name)


class Verdict(NamedTuple):
    status: Status  # the item's next status
    error: str | None  # the sentence the user reads
    reason: str | None  # why it failed, in one word of metrics.FAILURE_REASONS; None unless failed or cancelled


def standby_request(model: ModelSpec) -> dict:
    """What a job process is prepared for: the model, by name, folder and checksum (see bgremover.job.process.variant)."""
    return {"model": model.name, "models_dir": str(model.path.parent), "sha256": model.sha256}


def verdict(job: RunningJob, result: Path, report: dict, limits: Settings) -> Verdict:
    """The item's next status from what we asked of the job, its exit code and its result file."""
    code = job.returncode
    if job.stop_reason == "shutdown":
        return Verdict(Status.QUEUED, None, None)
    if job.stop_reason is None and code == EXIT_CANT_WRITE:
        return Verdict(Status.QUEUED, None, None)  # the disk's fault, not the image's: it runs again later
    if job.stop_reason == "cancel":
        return Verdict(Status.CANCELLED, "cancelled while processing", "cancelled")
    if job.stop_reason == "memory" or job.peak_rss_kb > limits.job_memory_limit_mb * 1024:
        return Verdict(Status.FAILED, f"the job used more than the memory limit of {limits.job_memory_limit_mb} MB "
                                      "(job_memory_limit_mb) and was stopped", "memory")
    if job.stop_reason == "timeout":
        return Verdict(Status.FAILED, f"the job took longer than {limits.job_timeout_seconds:g} s "
                                      "(job_timeout_seconds) and was killed", "timeout")
    if code == EXIT_DONE:
        if result.is_file():
            return Verdict(Status.DONE, None, None)
        return Verdict(Status.FAILED, "the job exited without writing its result", "no_result")
    if code == EXIT_BAD_INPUT:
        return Verdict(Status.FAILED, report.get("error") or "the file could not be read as an image", "bad_input")
    if code == EXIT_TEMPORARY:
        error = (report.get("error") or "a temporary failure") + "; touch the retry marker to try again"
        return Verdict(Status.FAILED, error, "temporary")
    if code < 0:
        hint = " (perhaps out of memory)" if -code == signal.SIGKILL else ""
        return Verdict(Status.FAILED, f"the job was killed by {signal.Signals(-code).name}{hint}", "killed")
    detail = f": {report['error']}" if report.get("error") else ""
    return Verdict(Status.FAILED, f"the job crashed with exit code {code}{detail}", "crashed")


def read_report(path: Path) -> dict:
    try:
        report = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def tail(path: Path, size: int = STDERR_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - size))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""


def wait_until_gone(pid: int, timeout: float = 2.0) -> None:
    """Wait for a killed process that is not our child to stop running (a zombie runs no code)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.01)


def peak_rss_kb(pid: int) -> int:
    """The job's peak resident memory so far (VmHWM), 0 once it has exited."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0
