"""The seam between deciding and running a job: what the supervisor asks of any way of running jobs.

The supervisor decides (which item next, when a job is over its time or its
memory, what its exit means); a runner only starts, watches, stops and
measures. A runner is one class in one file under runners/, named in the
table of runnertable.py, and chosen by the `runner` setting.

Standard library only, and nothing of bgremover's but the contract: a runner
must not reach into the supervisor, and the supervisor needs no runner's
internals to use one.
"""

from __future__ import annotations

import abc
import signal
from dataclasses import dataclass, field

from bgremover.contract import JobSpec


class RunnerError(Exception):
    """The runner cannot run jobs at all (it could not start); one sentence saying why."""


class JobNotStarted(RunnerError):
    """A submitted job never started (say, its process died before the hand-over); the item was never run."""

    def __init__(self, message: str, pid: int | None = None) -> None:
        super().__init__(message)
        self.pid = pid


@dataclass(frozen=True)
class JobExit:
    """How a job ended, as the runner saw it."""

    exit_code: int | None = None  # its exit code, if it exited
    signal: int | None = None  # the signal that ended it, if one did
    peak_rss_kb: int = 0  # its peak resident memory, as far as the runner could measure it
    # The job was lost with the host that ran it (a runner of other hosts), not ended by
    # its image: why, in a few words. Its item may run again, within a budget.
    lost: str | None = None
    worker: str | None = None  # the host that ran it, as a runner of other hosts names it; None on this machine
    # The limit its host stopped it for ("timeout", "memory"), where the host holds the job to the limits
    # itself and may do so first: the supervisor's own clock starts only once it learns the job runs.
    stopped: str | None = None

    @property
    def returncode(self) -> int:
        """One number, as subprocess reports it: the exit code, or minus the signal."""
        if self.signal is not None:
            return -self.signal
        return self.exit_code if self.exit_code is not None else -signal.SIGKILL


@dataclass
class JobHandle:
    """A job the runner has started: what the supervisor may know of it."""

    spec: JobSpec
    pid: int | None  # its process, where it has one here (recorded so a restart can find it)
    details: dict = field(default_factory=dict)  # what the runner can say of the start, for the job_started line


class JobRunner(abc.ABC):
    """One way of running jobs: each job a fresh, isolated process that runs one JobSpec.

    Every method but `start`, `wait` and `close` is called from the supervisor's
    loop and must return at once; `now` is time.monotonic().
    """

    @abc.abstractmethod
    def start(self, model: dict) -> dict:
        """Get ready to run jobs of `model` (see the job's variant request); what the jobs will run on.

        Raises RunnerError when jobs cannot run here at all, so a bad set-up
        stops the daemon at once instead of failing every item.
        """

    @abc.abstractmethod
    def can_start(self, now: float, model: dict) -> bool:
        """Whether a job of `model` may start now; False means: ask again on a later pass."""

    @abc.abstractmethod
    def submit(self, spec: JobSpec, now: float) -> JobHandle:
        """Start the job; raises JobNotStarted if it never started."""

    @abc.abstractmethod
    def poll(self, handle: JobHandle) -> JobExit | None:
        """How the job ended, once it has; None while it runs. A job is reported ended once."""

    @abc.abstractmethod
    def peak_rss_kb(self, handle: JobHandle) -> int:
        """The job's peak resident memory so far, in KiB; 0 where it cannot be read."""

    @abc.abstractmethod
    def stop(self, handle: JobHandle, grace: float, now: float) -> None:
        """Stop the job: ask it to end, and end it by force `grace` seconds later (at once if 0)."""

    @abc.abstractmethod
    def wait(self, handle: JobHandle, timeout: float) -> None:
        """Block up to `timeout` seconds for the job to end (used only while the daemon stops)."""

    @abc.abstractmethod
    def upkeep(self, now: float) -> None:
        """Every pass of the loop: escalate stops that are due, tidy up what ended jobs left."""

    def children(self) -> set[int]:
        """The pids of this daemon's children that the runner reaps itself; none by default.

        Any other child of the daemon that has exited is reaped by the
        supervisor (runners/groups.py: reap_orphans), so these must be named.
        """
        return set()

    @abc.abstractmethod
    def idle(self, now: float) -> None:
        """Nothing is queued: a good moment for what the runner does in advance."""

    def waiting(self, handle: JobHandle) -> bool:
        """Whether the job still waits for a host to take it; False (the default) once it runs.

        A job's time limit runs only while it does not wait: a runner of other
        hosts may hold a job until a worker is free (or back), and that wait is
        never the image's doing. A runner of this machine's processes starts
        each job as it is submitted.
        """
        return False

    def capacity(self, now: float) -> int | None:
        """How many jobs the hosts this runner sends jobs to can run at once now; None: it has no say.

        A runner of other hosts knows what they offer (their slots, as they come
        and go); a runner of this machine's processes leaves job_slots to the
        supervisor's own choice.
        """
        return None

    def adopt(self, spec: JobSpec, now: float) -> JobHandle | None:
        """At start-up: take up the job a previous life started for `spec`'s attempt, if this runner can.

        A runner whose jobs outlive the supervisor (they run on other hosts)
        answers with a handle, and the job's end is then polled as any other:
        the supervisor concludes from an answer given while it was down, or the
        job is sent again under the same attempt. None (the default) means the
        job cannot be taken up: it is ended with `forget` and its item runs again
        as a new attempt. A handle whose details say `"stopping": True` is of a
        job the previous life was stopping: the supervisor finishes that stop
        (a cancel) instead of taking the job's end as its outcome.
        """
        return None

    def abandon(self, spec: JobSpec, now: float) -> None:
        """At start-up: a previous life's job for `spec`'s attempt that is not taken up (fewer slots now) is
        stopped wherever it runs, since its item runs again as a new attempt. Nothing by default: this
        machine's jobs are ended with `forget`."""
        return None

    def fleet(self, now: float, drain: bool = False) -> dict | None:
        """The hosts that run the jobs, for metrics, status and the log: {"workers": {name: facts},
        "broker_waits": [seconds a job waited for a host (`drain`: since the last draining call)], "broker":
        where, as shown}; None (the default) for this machine's own."""
        return None

    def started_at(self, pid: int) -> int | None:
        """When this machine's process `pid` started, recorded beside its pid; None where the runner has no say."""
        return None

    @abc.abstractmethod
    def forget(self, pid: int, started: int | None = None) -> bool:
        """At start-up: end a job a previous life of the daemon left running; True if one was ended.

        `started`: what `started_at` said of the job when it started (None if
        nothing was recorded); a process with that pid but another start time
        took the pid over since, and is not ours.
        """

    def forget_unrecorded(self) -> list[int]:
        """At start-up, after `forget`: end the jobs of a previous life it can find by itself; their pids.

        A kill -9 can land between a job's start and the recording of its pid;
        a runner that can find such jobs ends them here. None by default.
        """
        return []

    @abc.abstractmethod
    def close(self) -> None:
        """At exit: nothing of the runner's is left running or unreaped."""
