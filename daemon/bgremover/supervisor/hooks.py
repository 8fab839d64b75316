"""The user's command run when a session's ZIP is ready: started, watched and timed out without blocking the loop.

A hook is the next step of someone's pipeline (an upload, a copy, a message),
so it is theirs to fail: its exit status and the tail of its output are
logged, and nothing it does changes the session. It runs through /bin/sh in
its own process group, with the session's paths in its environment, and is
killed, group and all, once it runs past its timeout. What a finished hook
left in its group is reaped on the loop's later passes.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from bgremover import durable
from bgremover.backoff import describe
from bgremover.runners.groups import ProcessGroups
from bgremover.settings import Settings

log = structlog.get_logger()

OUTPUT_TAIL_BYTES = 2000  # what a log line carries of a hook's output


@dataclass(frozen=True)
class HookResult:
    exit_code: int | None  # None when it was killed for running too long
    timed_out: bool
    duration_ms: int
    output: str  # the tail of its stdout and stderr together


class RunningHook:
    def __init__(self, command: str, environment: dict[str, str], timeout: float, output: Path) -> None:
        self.command = command
        self.output = output
        self.started = time.monotonic()
        self.deadline = self.started + timeout
        self.timed_out = False
        with open(output, "wb") as sink:  # the child keeps its own copy of the descriptor
            self.process = subprocess.Popen(
                ["/bin/sh", "-c", command], env=environment, stdin=subprocess.DEVNULL, stdout=sink,
                stderr=subprocess.STDOUT, start_new_session=True, close_fds=True,
            )  # fmt: skip

    @property
    def pid(self) -> int:
        return self.process.pid

    def poll(self, now: float) -> HookResult | None:
        """The result once the hook has ended; kills it (and its children) once past its deadline."""
        code = self.process.poll()
        if code is None and now >= self.deadline and not self.timed_out:
            self.timed_out = True
            self.kill()
            code = self.process.wait()
        if code is None:
            return None
        return HookResult(
            None if self.timed_out else code, self.timed_out, round((now - self.started) * 1000), self._output_tail()
        )

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def _output_tail(self) -> str:
        try:
            with open(self.output, "rb") as source:
                source.seek(max(0, source.seek(0, os.SEEK_END) - OUTPUT_TAIL_BYTES))
                text = source.read().decode("utf-8", "replace").strip()
        except OSError:
            return ""
        with contextlib.suppress(OSError):
            self.output.unlink()
        return text


def session_environment(zip_path: Path, status_path: Path, session: str) -> dict[str, str]:
    """What a hook is told: the daemon's own environment plus the session's ZIP, status JSON and name."""
    return {
        **os.environ,
        "BGREMOVER_ZIP": str(zip_path),
        "BGREMOVER_STATUS": str(status_path),
        "BGREMOVER_SESSION": session,
    }


class Hooks:
    """The on_session_complete commands of the sessions completed so far, while they run."""

    def __init__(self, settings: Settings, scratch: Path) -> None:
        self.settings = settings
        self.scratch = scratch  # where a hook's output is kept while it runs (the spool's results folder)
        self.running: list[tuple[str, RunningHook]] = []  # (session, its command) still running
        self.started = 0
        self.groups = ProcessGroups()  # finished hooks' process groups: what they started is ours to reap

    def start_hook(self, session: str, zip_name: str) -> None:
        command = self.settings.on_session_complete
        if not command:
            return
        self.started += 1
        environment = session_environment(
            self.settings.outbox / zip_name, self.settings.outbox / f"{session}.json", session
        )
        output = self.scratch / f"{durable.TEMP_PREFIX}hook-{self.started}.log"
        try:
            hook = RunningHook(command, environment, self.settings.hook_timeout_seconds, output)
        except OSError as exc:  # the session stays complete whatever the hook does, or fails to do
            log.error("hook_failed", session=session, item=None, error=f"could not start the hook: {describe(exc)}")
            return
        self.running.append((session, hook))
        log.info("hook_started", session=session, item=None, pid=hook.pid, command=command)

    def watch_hooks(self, now: float) -> None:
        for session, hook in list(self.running):
            result = hook.poll(now)
            if result is None:
                continue
            self.running.remove((session, hook))
            self.groups.add(hook.pid)
            if result.timed_out:
                log.error(
                    "hook_failed",
                    session=session,
                    item=None,
                    error=(
                        f"the hook ran longer than {self.settings.hook_timeout_seconds:g} s (hook_timeout_seconds) "
                        "and was killed"
                    ),
                    duration_ms=result.duration_ms,
                    output=result.output,
                )
            elif result.exit_code != 0:
                log.error(
                    "hook_failed",
                    session=session,
                    item=None,
                    error=f"the hook exited with {result.exit_code}",
                    exit_code=result.exit_code,
                    duration_ms=result.duration_ms,
                    output=result.output,
                )
            else:
                log.info(
                    "hook_finished",
                    session=session,
                    item=None,
                    exit_code=0,
                    duration_ms=result.duration_ms,
                    output=result.output,
                )
        self.groups.reap()

    def children(self) -> set[int]:
        """The hooks still running: each is reaped by its own Popen."""
        return {hook.pid for _session, hook in self.running}

    def stop_hooks(self) -> None:
        """At exit: a hook still running is killed; the log says which, so its work can be redone."""
        for session, hook in self.running:
            hook.kill()
            hook.process.wait()
            self.groups.add(hook.pid)
            log.warning(
                "hook_interrupted",
                session=session,
                item=None,
                pid=hook.pid,
                error="the daemon stopped while the hook ran; it was killed",
            )
        self.running.clear()
        self.groups.settle()
