"""How `bgremover remove IN... -o OUTDIR` runs its JobSpecs, one at a time: each in a fresh process, or all in this one.

`IsolatedJobs` is the daemon's way: the runner the `runner` setting names (the
fork server's fresh process per image), with the same time and memory limits.
`InProcessJobs` loads the same job module here once and calls it for every
image: no isolation, no process start-up. Both run the job module's `main` on
the JobSpec's command line, so the result file, the report and the exit code
mean the same either way, and `failure` reads them the same way.
"""

from __future__ import annotations

import contextlib
import importlib
import io
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


def start_config(settings: Settings, model: dict) -> dict:
    """What the job module's preload is given, as the local runner gives it."""
    return {
        "root": str(settings.root),
        "model": model["model"],
        "models_dir": model["models_dir"],
        "threads": settings.threads,
        "providers": list(settings.providers),
        "format": settings.output_format,
    }


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
            if stop_reason is None and peak > settings.job_memory_limit_mb * 1024:
                stop_reason = "memory"
                self.runner.stop(handle, 0, now)
            elif stop_reason is None and now >= deadline:
                stop_reason = "timeout"
                self.runner.stop(handle, settings.kill_grace_seconds, now)
            elif stop_reason is None and cancelled():
                stop_reason = "cancel"
                self.runner.stop(handle, settings.kill_grace_seconds, now)
            self.runner.upkeep(now)
        return Ended(ended.returncode, stop_reason, max(peak, ended.peak_rss_kb))

    def close(self) -> None:
        self.runner.close()


class InProcessJobs:
    """Every job in this process, one after another, with the job module loaded and prepared once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.module = None
        self.prepared = None

    def start(self, model: dict) -> None:
        """The fork server's steps (preload, variant, prepare), here; a failure is a RunnerError, as there."""
        from bgremover.runners.forkserver import describe

        try:
            self.module = importlib.import_module(self.settings.job_module)
            hooks = {name: getattr(self.module, name, None) for name in ("preload", "variant", "prepare")}
            shared = hooks["preload"](start_config(self.settings, model)) if hooks["preload"] else None
            shared = hooks["variant"](shared, model) if hooks["variant"] else shared
            self.prepared = hooks["prepare"](shared) if hooks["prepare"] else None
        except Exception as exc:  # noqa: BLE001 - as the fork server: any start-up failure is one sentence
            raise RunnerError(describe(exc)) from None
        describe_prepared = getattr(self.prepared, "describe", None)
        error = describe_prepared().get("error") if describe_prepared else None
        if error:
            raise RunnerError(error)

    def run(self, spec: JobSpec) -> Ended:
        from bgremover.runners.forkserver import run_job

        # The job sets its own SIGTERM handler (to clean up and die by the signal); it is
        # ours again between jobs. What it prints goes to its log, as a job process's does.
        handler = signal.getsignal(signal.SIGTERM)
        said = io.StringIO()
        try:
            with contextlib.redirect_stdout(said), contextlib.redirect_stderr(said):
                code = run_job(self.module, spec.argv(), self.prepared)
        finally:
            signal.signal(signal.SIGTERM, handler)
            if spec.log is not None:
                spec.log.write_text(said.getvalue(), "utf-8", errors="replace")
        return Ended(code)

    def close(self) -> None:
        self.prepared = None


def failure(ended: Ended, spec: JobSpec, report: dict, settings: Settings) -> str | None:
    """Why the job failed, as one sentence; None when it wrote everything asked of it."""
    code = ended.returncode
    if ended.stop_reason == "memory" or ended.peak_rss_kb > settings.job_memory_limit_mb * 1024:
        return f"it took more than the memory limit of {settings.job_memory_limit_mb} MB (job_memory_limit_mb)"
    if ended.stop_reason == "timeout":
        return f"it took longer than {settings.job_timeout_seconds:g} s (job_timeout_seconds)"
    if code == ExitCode.DONE:
        written = spec.output.is_file() and (spec.mask is None or spec.mask.is_file())
        return None if written else "the job exited without writing its result"
    if report.get("error"):
        return " ".join(str(report["error"]).split())  # one line, whatever the sentence held
    if code < 0:
        hint = " (perhaps out of memory)" if -code == signal.SIGKILL else ""
        return f"the job was killed by {signal.Signals(-code).name}{hint}"
    return f"the job crashed with exit code {code}"
