"""A job in flight, as the supervisor keeps it: its item, the runner's handle, its times and why it is being stopped."""

from __future__ import annotations

from dataclasses import dataclass

from bgremover.queue.store import Item
from bgremover.runners.api import JobHandle


@dataclass
class RunningJob:
    item: Item
    handle: JobHandle  # the runner's job; its pid, where it has one, is also its process group
    started: float
    deadline: float | None  # when it is over its time; None while it waits for a host to take it
    stop_reason: str | None = None  # why we are stopping it: timeout, memory, cancel, shutdown
    peak_rss_kb: int = 0
    returncode: int | None = None
    slot: int = 0  # which of the job slots it holds, from 0
    lost: str | None = None  # why its worker host was lost, where it was (see supervisor/lost.py)
    worker: str | None = None  # the host that ran it, as its JobExit names it; None on this machine
