"""The local runner: each job a fresh process on this machine, forked by the fork server.

The supervisor starts the fork server once (forkserver.py). Each job runs in a
*standby*: a process forked in advance, prepared for one model, that waits
holding no image until it is handed exactly one job. There is one standby per
job slot: when a job is handed to one, its replacement starts preparing at
once, so a process's start-up overlaps the running jobs instead of following them.

A standby is re-parented to the daemon (a child subreaper), so the daemon
reaps it with wait4 like any child and learns its exit status and its peak
memory. Every job has its own process group: stopping it signals the group,
and once it has exited the group is killed, so no grandchild outlives it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

from bgremover.contract import JobSpec
from bgremover.runners.api import JobExit, JobHandle, JobNotStarted, JobRunner, RunnerError
from bgremover.runners.forkserver import ForkServer, ForkServerError, Standby, become_subreaper
from bgremover.runners.groups import ProcessGroups, start_time

log = structlog.get_logger()

FORKSERVER_MODULE = b"bgremover.runners.forkserver"  # how its command line names it (python -m ...)
READY_TIMEOUT_SECONDS = 120.0  # the first job process's session, at start-up
# What daemon_ready repeats of the first job process's own description: the backend and precision its jobs
# run (with auto, what the model's check chose), and the runtime's threads and version.
RUNS_ON = (
    "backend", "precision", "inference_precision", "providers", "intra_op_threads", "onnxruntime", "openvino",
    "model_session",
)  # fmt: skip
SPAWN_RETRY_SECONDS = 5.0  # after the fork server failed to give a standby


@dataclass
class LocalJob:
    """What the runner keeps of a job it started."""

    standby: Standby  # its process; its pid is also its process group
    exited: threading.Event = field(default_factory=threading.Event)
    kill_at: float | None = None  # when a stop it was asked for turns into SIGKILL


class LocalRunner(JobRunner):
    def __init__(self, settings, wake) -> None:
        self.settings = settings
        self.wake = wake  # puts a note on the loop's wake-ups: a job has exited
        self.forkserver: ForkServer | None = None
        # One standby per job slot, each already preparing: however many slots
        # free at once, none waits for a process to start.
        self.standbys: list[Standby] = []
        # A number once the supervisor resolved it; `auto` where a command runs jobs one at a time.
        self.standbys_wanted = settings.job_slots if isinstance(settings.job_slots, int) else 1
        self.chosen: Standby | None = None  # the standby can_start picked for the next submit
        self.spawn_retry_at = 0.0
        self.jobs: dict[int, LocalJob] = {}  # by pid
        self.strays = ProcessGroups()  # finished jobs' and dismissed standbys' groups, still to reap

    def start(self, model: dict) -> dict:
        settings = self.settings
        become_subreaper()
        self.forkserver = ForkServer(settings.job_module, {
            "root": str(settings.root),  # unused by jobs; it tells `ps` readers whose processes these are
            "supervisor": os.getpid(),  # and whether they outlived it (forget_unrecorded)
            "model": model["model"], "models_dir": model["models_dir"], "threads": settings.threads,
            "providers": list(settings.providers), "format": settings.output_format,
            "recipes": settings.recipes, "recipes_file": settings.recipes_file,
            "backend": model.get("backend", settings.backend), "precision": model.get("precision", settings.precision),
            "cache_dir": str(settings.compile_cache), "checks_dir": str(settings.models_folder),
        })  # fmt: skip
        try:
            warn_if_threaded(self.forkserver.start())
            first = self.forkserver.spawn(model)
            self.standbys.append(first)
            ready = first.wait_ready(READY_TIMEOUT_SECONDS)
        except ForkServerError as exc:
            raise RunnerError(str(exc)) from None
        if ready.get("error"):
            raise RunnerError(ready["error"])
        self.fill(time.monotonic(), model)  # the other slots' standbys prepare while intake starts
        runs_on = {key: ready[key] for key in RUNS_ON if key in ready}
        return {**runs_on, "threads": settings.threads, "first_session_ms": ready.get("prepare_ms")}

    # -- starting a job -------------------------------------------------------------

    def can_start(self, now: float, model: dict) -> bool:
        if now < self.spawn_retry_at:
            return False
        self.chosen = self.standby_for(now, model)
        return self.chosen is not None

    def standby_for(self, now: float, model: dict) -> Standby | None:
        """A live standby prepared for `model`, or a new one; None (and a pause) if the fork server fails."""
        self.drop_dead()
        matching = [standby for standby in self.standbys if standby.request == model]
        if matching:
            return matching[0]
        # Prepared for another session's model: the next items most likely share this
        # one's, so a session for a new model costs what a new process does.
        for standby in self.standbys:
            standby.dismiss()
            self.strays.add(standby.pid)
            log.debug("job_process_replaced", pid=standby.pid, model=model["model"])
        self.standbys = []
        return self.spawn(now, model)

    def drop_dead(self) -> None:
        """Standbys killed from outside while they waited are replaced before any item is claimed."""
        for standby in [standby for standby in self.standbys if not standby.alive()]:
            standby.dismiss()
            self.standbys.remove(standby)
            log.warning("job_process_lost", pid=standby.pid, when="waiting for a job")

    def spawn(self, now: float, model: dict) -> Standby | None:
        try:
            if not self.forkserver.alive():
                log.warning("forkserver_restarting")
                self.forkserver.close()
                self.forkserver.start()
            standby = self.forkserver.spawn(model)
        except ForkServerError as exc:
            self.spawn_retry_at = now + SPAWN_RETRY_SECONDS
            log.error("job_process_unavailable", error=str(exc), retry_in_s=SPAWN_RETRY_SECONDS)
            return None
        self.standbys.append(standby)
        return standby

    def fill(self, now: float, model: dict) -> None:
        """Standbys for `model` up to one per slot."""
        while len(self.standbys) < self.standbys_wanted and self.spawn(now, model) is not None:
            pass

    def submit(self, spec: JobSpec, now: float) -> JobHandle:
        standby, self.chosen = self.chosen, None
        self.standbys.remove(standby)
        ready = standby.poll_ready()  # before the job: had its start-up finished while the last job ran?
        try:
            standby.assign(spec.argv(), str(spec.log))
        except OSError as exc:
            # It died between our check and the hand-over: the item was never started.
            standby.dismiss()
            self.strays.add(standby.pid)
            raise JobNotStarted(str(exc), standby.pid) from None
        job = self.jobs[standby.pid] = LocalJob(standby)
        threading.Thread(target=self.watch_exit, args=(job,), name=f"job-{standby.pid}", daemon=True).start()
        # Its replacement starts now, while this one runs: its start-up overlaps
        # the jobs' single-threaded stages instead of following them. The next
        # item most likely belongs to the same session, so the same model.
        self.fill(now, standby.request)
        details = (
            {
                "start_ms": ready.get("start_ms"),
                "session_ms": ready.get("prepare_ms"),
                "model_session": ready.get("model_session"),
            }
            if ready
            else {}
        )
        return JobHandle(spec, standby.pid, {"ready_in_advance": ready is not None, **details})

    def watch_exit(self, job: LocalJob) -> None:
        # WNOWAIT: wait for the exit without reaping it; poll() reaps with wait4.
        try:
            os.waitid(os.P_PID, job.standby.pid, os.WEXITED | os.WNOWAIT)
        except ChildProcessError:
            pass
        job.exited.set()
        self.wake()

    # -- watching and stopping it ---------------------------------------------------

    def poll(self, handle: JobHandle) -> JobExit | None:
        pid, status, usage = os.wait4(handle.pid, os.WNOHANG)
        if pid == 0:
            return None
        job = self.jobs.pop(handle.pid)
        job.standby.dismiss()
        self.signal(handle.pid, signal.SIGKILL)  # no grandchild outlives its job
        self.strays.add(handle.pid)  # and any it left behind is reaped
        code = os.waitstatus_to_exitcode(status)
        return JobExit(
            exit_code=code if code >= 0 else None, signal=-code if code < 0 else None, peak_rss_kb=usage.ru_maxrss
        )

    def peak_rss_kb(self, handle: JobHandle) -> int:
        """VmHWM: the job's peak resident memory so far, 0 once it has exited."""
        if handle.pid not in self.jobs:  # reaped: its pid may be another process's by now
            return 0
        try:
            for line in Path(f"/proc/{handle.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0

    def stop(self, handle: JobHandle, grace: float, now: float) -> None:
        job = self.jobs.get(handle.pid)
        if job is None:  # reaped already (its outcome waits for the state folder): nothing left to stop
            return
        job.kill_at = now + grace
        self.signal(handle.pid, signal.SIGKILL if grace == 0 else signal.SIGTERM)

    def wait(self, handle: JobHandle, timeout: float) -> None:
        job = self.jobs.get(handle.pid)
        if job is not None:
            job.exited.wait(timeout)

    def upkeep(self, now: float) -> None:
        for pid, job in self.jobs.items():
            if job.kill_at is not None and now >= job.kill_at:
                job.kill_at = None
                self.signal(pid, signal.SIGKILL)
        self.strays.reap()

    def children(self) -> set[int]:
        # A standby and a job are reaped by their own wait4, the fork server by its Popen.
        server = self.forkserver.process if self.forkserver else None
        return {*self.jobs, *(standby.pid for standby in self.standbys), *([server.pid] if server else [])}

    def idle(self, now: float) -> None:
        for standby in self.standbys:
            if not standby.warmed:
                standby.warm()  # nothing to do: a good moment for its first run

    @staticmethod
    def signal(group: int, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, sig)

    # -- a previous life, and the end -----------------------------------------------

    def started_at(self, pid: int) -> int | None:
        return start_time(pid)

    def forget(self, pid: int, started: int | None = None) -> bool:
        """A job of a previous life may still run (its own process group survived the kill -9)."""
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            return False
        # The pid may have been reused since, even by another root's job (same command
        # line): only a process that started when the recorded one did is our job.
        if self.settings.job_module.encode() not in cmdline:
            return False
        if started is not None and start_time(pid) != started:
            return False
        self.signal(pid, signal.SIGKILL)
        wait_until_gone(pid)  # so it cannot write a result after the spool is swept
        return True

    def forget_unrecorded(self) -> list[int]:
        """Every process forked for this root by a fork server whose supervisor has died.

        Jobs and standbys carry their fork server's command line, whose
        --config names the root and the supervisor's pid: so a job whose pid
        the killed daemon never recorded is found all the same, while the jobs
        of a live supervisor (this one, or a `bgremover remove` on the same
        root) are left alone.
        """
        ended = []
        for pid in orphans_of_root(str(self.settings.root)):
            self.signal(pid, signal.SIGKILL)
            wait_until_gone(pid)
            ended.append(pid)
        return ended

    def close(self) -> None:
        """The unused standbys and the fork server go, and nothing of ours is left unreaped."""
        for standby in self.standbys:
            standby.dismiss()  # it exits on end-of-file
            self.strays.add(standby.pid)
        self.standbys = []
        if self.forkserver is not None:
            self.forkserver.close()
        self.strays.settle()


def warn_if_threaded(hello: dict) -> None:
    """The fork server must fork from one thread: a library that started one of its own is named in the log."""
    if hello.get("threads", 1) > 1:
        log.warning(
            "forkserver_threaded", threads=hello["threads"],
            note="a module the job imports started threads in the fork server; forking it can deadlock a job",
        )  # fmt: skip


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


def orphans_of_root(root: str) -> list[int]:
    """The pids with a fork server's command line for `root` whose supervisor no longer runs."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        config = forkserver_config(argv) if FORKSERVER_MODULE in argv else None
        if config and config.get("root") == root and not running(config.get("supervisor")):
            found.append(int(entry.name))
    return found


def forkserver_config(argv: list[bytes]) -> dict | None:
    try:
        config = json.loads(argv[argv.index(b"--config") + 1])
    except (ValueError, IndexError):
        return None
    return config if isinstance(config, dict) else None


def running(pid: object) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process by now: not ours to judge, so not an orphan of ours either
    return True
