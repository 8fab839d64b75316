"""What a job's end means for its item: `verdict()`, a function of what was asked of the job, its exit and its result.

What a job's end means is read by the one rule every caller shares
(runners/isolated.py: `outcome`); here each outcome becomes the item's next
status and the sentence the daemon's users read, as a table, kept apart from
the mechanism that watches jobs (dispatch.py) and tested on made-up exits.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from bgremover.queue.states import Status
from bgremover.runners.isolated import outcome, signal_name
from bgremover.settings import Settings
from bgremover.supervisor.running import RunningJob

STDERR_TAIL_BYTES = 2000


class Verdict(NamedTuple):
    status: Status  # the item's next status
    error: str | None  # the sentence the user reads
    reason: str | None  # why it failed, in one word of metrics.FAILURE_REASONS; None unless failed or cancelled


def verdict(job: RunningJob, result: Path, report: dict, limits: Settings) -> Verdict:
    """The item's next status from what we asked of the job, its exit code and its result file."""
    meaning = outcome(job, result.is_file(), limits)
    status, say = SAYINGS[meaning]
    return Verdict(status, say(job.returncode, report, limits), REASONS.get(meaning, meaning))


def memory_said(code: int, report: dict, limits: Settings) -> str:
    return (
        f"the job used more than the memory limit of {limits.job_memory_limit_mb} MB "
        "(job_memory_limit_mb) and was stopped"
    )


def timeout_said(code: int, report: dict, limits: Settings) -> str:
    return f"the job took longer than {limits.job_timeout_seconds:g} s (job_timeout_seconds) and was killed"


def crash_said(code: int, report: dict, limits: Settings) -> str:
    detail = f": {report['error']}" if report.get("error") else ""
    return f"the job crashed with exit code {code}{detail}"


def fixed(sentence: str | None):
    return lambda code, report, limits: sentence


# Each outcome (runners/isolated.py) as the item's next status and the sentence the user reads.
SAYINGS = {
    "shutdown": (Status.QUEUED, fixed(None)),
    "cant_write": (Status.QUEUED, fixed(None)),  # the disk's fault, not the image's: it runs again later
    "cancelled": (Status.CANCELLED, fixed("cancelled while processing")),
    "memory": (Status.FAILED, memory_said),
    "timeout": (Status.FAILED, timeout_said),
    "done": (Status.DONE, fixed(None)),
    "no_result": (Status.FAILED, fixed("the job exited without writing its result")),
    "bad_input": (
        Status.FAILED,
        lambda code, report, limits: report.get("error") or "the file could not be read as an image",
    ),
    "temporary": (
        Status.FAILED,
        lambda code, report, limits: (
            (report.get("error") or "a temporary failure") + "; touch the retry marker to try again"
        ),
    ),
    "killed": (Status.FAILED, lambda code, report, limits: signal_name(code)),
    "crashed": (Status.FAILED, crash_said),
}
# The failure reason metrics count (metrics.FAILURE_REASONS); None where the item did not fail.
REASONS = {"shutdown": None, "cant_write": None, "done": None}


def tail(path: Path, size: int = STDERR_TAIL_BYTES) -> str:
    try:
        with open(path, "rb") as handle:
            handle.seek(max(0, handle.seek(0, os.SEEK_END) - size))
            return handle.read().decode("utf-8", "replace").strip()
    except OSError:
        return ""
