"""How `bgremover remove IN... -o OUTDIR` runs its JobSpecs when not each in its own process, and what it says of a failure.

`InProcessJobs` loads the job module here once and calls it for every image:
no isolation, no process start-up. It runs the job module's `main` on the
JobSpec's command line, as a job process does (runners/isolated.py runs each
in a fresh one), so the result file, the report and the exit code mean the
same either way, and `failure` reads them the same way.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import signal

from bgremover.contract import JobSpec
from bgremover.runners.api import RunnerError
from bgremover.runners.isolated import Ended, outcome, signal_name
from bgremover.settings import Settings


def start_config(settings: Settings, model: dict) -> dict:
    """What the job module's preload is given, as the local runner gives it."""
    return {
        "root": str(settings.root),
        "model": model["model"],
        "models_dir": model["models_dir"],
        "threads": settings.threads,
        "providers": list(settings.providers),
        "format": settings.output_format,
        "backend": model.get("backend", settings.backend),
        "precision": model.get("precision", settings.precision),
        "cache_dir": str(settings.compile_cache),
        "checks_dir": str(settings.models_folder),
    }


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
    written = spec.output.is_file() and (spec.mask is None or spec.mask.is_file())
    meaning = outcome(ended, written, settings)
    if meaning == "memory":
        return f"it took more than the memory limit of {settings.job_memory_limit_mb} MB (job_memory_limit_mb)"
    if meaning == "timeout":
        return f"it took longer than {settings.job_timeout_seconds:g} s (job_timeout_seconds)"
    if meaning in ("done", "no_result"):
        return None if meaning == "done" else "the job exited without writing its result"
    if report.get("error"):
        return " ".join(str(report["error"]).split())  # one line, whatever the sentence held
    if ended.returncode < 0:
        return signal_name(ended.returncode)
    return f"the job crashed with exit code {ended.returncode}"
