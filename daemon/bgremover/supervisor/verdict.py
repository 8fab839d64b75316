"""What a job's end means for its item: `verdict()`, a function of what was asked of the job, its exit and its result.

The supervisor's one rule for the item's next status, kept apart from the
mechanism that watches jobs (dispatch.py), so that it reads as a table and is
tested on made-up exits.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import NamedTuple

from bgremover.contract import ExitCode
from bgremover.queue.states import Status
from bgremover.settings import Settings
from bgremover.supervisor.running import RunningJob

STDERR_TAIL_BYTES = 2000


class Verdict(NamedTuple):
    status: Status  # the item's next status
    error: str | None  # the sentence the user reads
    reason: str | None  # why it failed, in one word of metrics.FAILURE_REASONS; None unless failed or cancelled


def verdict(job: RunningJob, result: Path, report: dict, limits: Settings) -> Verdict:
    """The item's next status from what we asked of the job, its exit code and its result file."""
    code = job.returncode
    if job.stop_reason == "shutdown":
        return Verdict(Status.QUEUED, None, None)
    if job.stop_reason is None and code == ExitCode.CANT_WRITE:
        return Verdict(Status.QUEUED, None, None)  # the disk's fault, not the image's: it runs again later
    if job.stop_reason == "cancel":
        return Verdict(Status.CANCELLED, "cancelled while processing", "cancelled")
    if job.stop_reason == "memory" or job.peak_rss_kb > limits.job_memory_limit_mb * 1024:
        return Verdict(
            Status.FAILED,
            f"the job used more than the memory limit of {limits.job_memory_limit_mb} MB "
            "(job_memory_limit_mb) and was stopped",
            "memory",
        )
    if job.stop_reason == "timeout":
        return Verdict(
            Status.FAILED,
            f"the job took longer than {limits.job_timeout_seconds:g} s (job_timeout_seconds) and was killed",
            "timeout",
        )
    if code == ExitCode.DONE:
        if result.is_file():
            return Verdict(Status.DONE, None, None)
        return Verdict(Status.FAILED, "the job exited without writing its result", "no_result")
    if code == ExitCode.BAD_INPUT:
        return Verdict(Status.FAILED, report.get("error") or "the file could not be read as an image", "bad_input")
    if code == ExitCode.TEMPORARY:
        error = (report.get("error") or "a temporary failure") + "; touch the retry marker to try again"
        return Verdict(Status.FAILED, error, "temporary")
    if code < 0:
        hint = " (perhaps out of memory)" if -code == signal.SIGKILL else ""
        return Verdict(Status.FAILED, f"the job was killed by {signal.Signals(-code).name}{hint}", "killed")
    detail = f": {report['error']}" if report.get("error") else ""
    return Verdict(Status.FAILED, f"the job crashed with exit code {code}{detail}", "crashed")


def tail(path: Path, size: int = STDERR_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - size))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
