"""A runner for contract tests: nothing runs, and the test says how each job ends.

It sits behind the same JobRunner interface as the local runner and is chosen
the same way: an entry in bgremover.runners.RUNNERS (see `register`) and the
`runner` setting. The supervisor's decisions can then be driven step by step,
in process, on a clock the test chooses (every step takes `now`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bgremover.contract import JobSpec
from bgremover.runners import RUNNERS
from bgremover.runners.api import JobExit, JobHandle, JobNotStarted, JobRunner

NAME = "fake"
FIRST_PID = 2**31 - 4096  # above any pid_max (at most 2**22): nothing real is ever signalled or waited for


def register() -> None:
    """Make `runner = "fake"` a valid setting: one entry in the runner table, as any runner has."""
    RUNNERS[NAME] = f"{__name__}:FakeRunner"


@dataclass
class FakeRunner(JobRunner):
    settings: object
    wake: object
    available: bool = True  # what can_start answers
    lose_next: bool = False  # the next submit raises JobNotStarted, as a standby that died would
    memory_kb: dict[int, int] = field(default_factory=dict)  # what peak_rss_kb reads, by pid
    leftovers: set[int] = field(default_factory=set)  # pids forget() finds still running
    submitted: list[JobSpec] = field(default_factory=list)
    running: dict[int, JobHandle] = field(default_factory=dict)
    exits: dict[int, JobExit] = field(default_factory=dict)
    stops: list[tuple[int, float]] = field(default_factory=list)  # (pid, grace), in order
    forgotten: list[int] = field(default_factory=list)
    idles: int = 0
    closed: bool = False
    next_pid: int = FIRST_PID

    def start(self, model: dict) -> dict:
        return {"threads": 1}

    def can_start(self, now: float, model: dict) -> bool:
        return self.available

    def submit(self, spec: JobSpec, now: float) -> JobHandle:
        if self.lose_next:
            self.lose_next = False
            raise JobNotStarted("the fake job process died before its job", self.next_pid)
        handle = JobHandle(spec, self.next_pid, {"ready_in_advance": True})
        self.next_pid += 1
        self.submitted.append(spec)
        self.running[handle.pid] = handle
        return handle

    def end(self, handle: JobHandle, returncode: int, peak_rss_kb: int = 0, worker: str | None = None) -> None:
        """The test's word: this job has ended with `returncode` (negative: killed by that signal), on `worker`."""
        self.exits[handle.pid] = (
            JobExit(signal=-returncode, peak_rss_kb=peak_rss_kb, worker=worker)
            if returncode < 0
            else JobExit(exit_code=returncode, peak_rss_kb=peak_rss_kb, worker=worker)
        )
        self.wake()

    def poll(self, handle: JobHandle) -> JobExit | None:
        ended = self.exits.pop(handle.pid, None)
        if ended is not None:
            del self.running[handle.pid]
        return ended

    def peak_rss_kb(self, handle: JobHandle) -> int:
        return self.memory_kb.get(handle.pid, 0)

    def stop(self, handle: JobHandle, grace: float, now: float) -> None:
        self.stops.append((handle.pid, grace))

    def wait(self, handle: JobHandle, timeout: float) -> None:
        pass

    def upkeep(self, now: float) -> None:
        pass

    def idle(self, now: float) -> None:
        self.idles += 1

    def forget(self, pid: int, started: int | None = None) -> bool:
        self.forgotten.append(pid)
        return pid in self.leftovers

    def close(self) -> None:
        self.closed = True
