"""One JobSpec in a fresh, isolated process, and the one rule for what its end means.

`IsolatedJobs` runs a JobSpec through the runner the `runner` setting names
(the fork server's fresh process per image), watched against the same time and
memory limits as the daemon's: it serves `bgremover remove IN... -o OUTDIR`
and each slot of a `bgremover worker` host. The daemon watches its many jobs
from its own loop, but by the same stop rule (`over_limit`, `stop_grace`), and
every caller reads a job's end with the same `outcome`; each then says it in
its own words (supervisor/verdict.py, cli/jobs.py).
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass

from bgremover.contract import ExitCode, JobSpec
from bgremover.runners import runner_class
from bgremover.runners.api import JobHandle, JobNotStarted, RunnerError
from bgremover.settings import Settings

WATCH_SECONDS = 0.1  # how often a running job's memory and deadline are checked
START_PATIENCE_SECONDS = 30.0  # how long to wait for a job process before giving up on the batch
START_ATTEMPTS = 3  # a job process that dies before it gets its image is replaced this often


@dataclass(frozen=True)
class Ended:
    """How one job ended."""

    returncode: int  # its exit code, or minus the signal that ended it
    stop_reason: str | None = None  # "timeout", "memory" or "cancel" when we stopped it
    peak_rss_kb: int = 0


def over_limit(peak_rss_kb: int, now: float, deadline: float, limits: Settings) -> str | None:
    """Which limit a running job has passed, memory before time: "memory", "timeout" or None."""
    if peak_rss_kb > limits.job_memory_limit_mb * 1024:
        return "memory"
    if now >= deadline:
        return "timeout"
    return None


def stop_grace(reason: str, limits: Settings) -> float:
    """How long a job being stopped may take to end: none over memory (it would only grow), else kill_grace_seconds."""
    return 0 if reason == "memory" else limits.kill_grace_seconds


def outcome(ended, written: bool, limits: Settings) -> str:
    """What a job's end means, in one word, from what we asked of it (`stop_reason`), its exit and its result.

    `ended` has returncode, stop_reason and peak_rss_kb; `written`: whether
    everything asked of the job is on disk. The words: shutdown, cant_write
    (the disk's fault, not the image's), cancelled, memory, timeout, done,
    no_result, bad_input, temporary, killed, crashed.
    """
    code, stop = ended.returncode, ended.stop_reason
    if stop == "shutdown":
        return "shutdown"
    if stop is None and code == ExitCode.CANT_WRITE:
        return "cant_write"
    if stop == "cancel":
        return "cancelled"
    if stop == "memory" or ended.peak_rss_kb > limits.job_memory_limit_mb * 1024:
        return "memory"
    if stop == "timeout":
        return "timeout"
    if code == ExitCode.DONE:
        return "done" if written else "no_result"
    return EXIT_OUTCOMES.get(code) or ("killed" if code < 0 else "crashed")


EXIT_OUTCOMES = {ExitCode.BAD_INPUT: "bad_input", ExitCode.TEMPORARY: "temporary"}


def signal_name(returncode: int) -> str:
    """`the job was killed by SIGKILL (perhaps out of memory)` for a job ended by a signal."""
    hint = " (perhaps out of memory)" if -returncode == signal.SIGKILL else ""
    return f"the job was killed by {name_of_signal(-returncode)}{hint}"


def name_of_signal(number: int) -> str:
    """SIGKILL, SIGRTMIN+3, or `signal 32`: any number names itself, and this never raises.

    signal.Signals has no member for most real-time signals (SIGRTMIN+1 to
    SIGRTMAX-1), nor for the two glibc keeps for itself below SIGRTMIN.
    """
    rtmin, rtmax = int(signal.SIGRTMIN), int(signal.SIGRTMAX)
    if rtmin < number < rtmax:
        return f"SIGRTMIN+{number - rtmin}"
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


class IsolatedJobs:
    """Each job in a fresh process from the runner, watched against job_timeout_seconds and job_memory_limit_mb."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner = runner_class(settings.runner)(settings, lambda: None)  # nobody to wake: we wait on the job
        self.model: dict = {}

    def start(self, model: dict) -> None:
        self.model = model
        self.runner.start(model)

    def run(self, spec: JobSpec, cancelled: Callable[[], bool] = lambda: False) -> Ended:
        handle = self.submit(spec)
        try:
            return self.watch(handle, cancelled)
        except BaseException:  # Ctrl-C: the job has its own process group, so it is ours to stop
            self.runner.stop(handle, 0, time.monotonic())
            self.runner.wait(handle, 5.0)
            self.runner.poll(handle)
            raise

    def submit(self, spec: JobSpec) -> JobHandle:
        for attempt in range(1, START_ATTEMPTS + 1):
            self.wait_for_a_process()
            try:
                return self.runner.submit(spec, time.monotonic())
            except JobNotStarted:  # its process died before the hand-over; the image was never touched
                if attempt == START_ATTEMPTS:
                    raise
        raise AssertionError("not reached")

    def wait_for_a_process(self) -> None:
        give_up = time.monotonic() + START_PATIENCE_SECONDS
        while not self.runner.can_start(time.monotonic(), self.model):
            if time.monotonic() > give_up:
                raise RunnerError(f"no job process could be started in {START_PATIENCE_SECONDS:g} s")
            time.sleep(0.2)

    def watch(self, handle: JobHandle, cancelled: Callable[[], bool] = lambda: False) -> Ended:
        """Wait for the job's end, stopping it as the daemon would once it is over its time or memory, or cancelled."""
        settings = self.settings
        deadline = time.monotonic() + settings.job_timeout_seconds
        stop_reason, peak = None, 0
        while (ended := self.runner.poll(handle)) is None:
            self.runner.wait(handle, WATCH_SECONDS)
            now = time.monotonic()
            peak = max(peak, self.runner.peak_rss_kb(handle))
            passed = over_limit(peak, now, deadline, settings)
            if stop_reason is None and passed:
                stop_reason = passed
                self.runner.stop(handle, stop_grace(passed, settings), now)
            elif stop_reason is None and cancelled():
                stop_reason = "cancel"
                self.runner.stop(handle, settings.kill_grace_seconds, now)
            self.runner.upkeep(now)
        return Ended(ended.returncode, stop_reason, max(peak, ended.peak_rss_kb))

    def close(self) -> None:
        self.runner.close()
