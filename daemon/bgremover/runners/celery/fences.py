"""Late answers: tasks the supervisor concluded without their answer, watched until an answer can no longer come.

A task concluded without its answer (its worker lost, or silent after a stop)
may still be answered: a hung host wakes up, a cut-off one reconnects. That
answer is never read into its item, whose outcome is recorded already; it is
refused in the log, and the files its job wrote, all named after its attempt,
are removed, so that nothing of it lingers in the spool. Each fence is kept
here and in Redis (marks.py), so a supervisor restarted meanwhile keeps watching.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from bgremover.runners.celery.marks import Marks

log = structlog.get_logger()

CHECK_SECONDS = 5.0  # how often each fenced task's answer is looked for


@dataclass
class Fenced:
    files: tuple[Path, ...]  # what its job would write
    until: float  # past this, no worker can still be running it (the hard time limit, and some)
    check_at: float


class Fences:
    def __init__(self, marks: Marks, root: Path) -> None:
        self.marks, self.root = marks, root
        self.fenced: dict[str, Fenced] = {}  # by task id

    def load(self) -> None:
        """The fences a previous life of the supervisor set, from Redis (raises if the broker cannot be read)."""
        now = time.monotonic()
        for task, (files, left) in self.marks.fences().items():
            self.fenced[task] = Fenced(tuple(self.root / name for name in files), now + left, now)

    def fence(self, task: str, files: tuple[Path, ...], seconds: float) -> None:
        """Watch for `task`'s answer for `seconds`: here, and in Redis for the next life of the supervisor."""
        now = time.monotonic()
        self.fenced[task] = Fenced(files, now + seconds, now + CHECK_SECONDS)
        try:
            self.marks.fence(task, [str(path.relative_to(self.root)) for path in files], seconds)
        except Exception as exc:  # noqa: BLE001 - this life still watches; only a restart would miss it
            log.warning("task_not_fenced", task=task, error=str(exc))

    def due(self, now: float) -> list[str]:
        return [task for task, fenced in self.fenced.items() if now >= fenced.check_at]

    def look(self, task: str, answer_of: Callable[[str], object], now: float) -> None:
        """Refuse `task`'s answer if it came (`answer_of` raises while the broker is away); drop it once too late."""
        fenced = self.fenced[task]
        fenced.check_at = now + CHECK_SECONDS
        answer = answer_of(task)
        if answer is None and now < fenced.until:
            return
        del self.fenced[task]
        with contextlib.suppress(Exception):  # a fence left behind lapses by itself
            self.marks.unfence(task)
        if answer is None:
            return
        swept = [path.name for path in fenced.files if remove(path)]
        log.warning(
            "late_answer_refused",
            task=task,
            worker=answer.get("worker") if isinstance(answer, dict) else None,
            files_removed=swept,
            note="its item's outcome was recorded without it",
        )


def remove(path: Path) -> bool:
    try:
        path.unlink()
        return True
    except OSError:
        return False
