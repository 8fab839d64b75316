"""Process groups whose members are ours to reap, and the orphans no group holds.

The daemon is a child subreaper (see local.py): whatever a finished job or hook
left running in its process group is re-parented to us when it exits, and a
zombie nobody reaps would stay in the process table. Reaping by group, never
with waitpid(-1), keeps us from stealing the exit status of a job whose own
wait4 is still to come. A process that left its group (setsid, a daemonizing
hook) is found among our children in /proc instead, and reaped by its pid
alone once it is not one somebody of ours waits for (`reap_orphans`).
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Collection
from pathlib import Path


class ProcessGroups:
    def __init__(self) -> None:
        self.groups: set[int] = set()

    def add(self, group: int) -> None:
        self.groups.add(group)

    def reap(self) -> None:
        """Reap whatever of these groups has exited; forget a group once nobody of it is left."""
        for group in list(self.groups):
            try:
                while os.waitpid(-group, os.WNOHANG)[0] != 0:
                    pass
            except ChildProcessError:  # nobody of that group is left
                self.groups.discard(group)

    def settle(self, grace: float = 3.0, after_kill: float = 2.0) -> None:
        """At exit: reap for up to `grace` seconds, kill what is left, and reap that too."""
        self.reap_for(grace)
        for group in list(self.groups):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(group, signal.SIGKILL)
        self.reap_for(after_kill)

    def reap_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.groups and time.monotonic() < deadline:
            self.reap()
            time.sleep(0.02)


def reap_orphans(watched: Collection[int]) -> int:
    """Reap every exited child of ours that is not in `watched`; how many were reaped.

    `watched`: the children whose exit status somebody reads with a wait of
    their own (jobs, standbys, the fork server, running hooks). Each other
    child is waited for by its pid alone, with WNOHANG: never waitpid(-1),
    which could take a watched job's status first and make its crash look
    like an exit 0.
    """
    reaped = 0
    for pid in exited_children():
        if pid in watched:
            continue
        with contextlib.suppress(ChildProcessError):  # reaped meanwhile by a group's reap
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG) is not None:
                reaped += 1
    return reaped


def exited_children() -> list[int]:
    """Our children that are zombies: re-parented orphans end up here, one per thread's children list."""
    return [pid for pid in children() if process_state(pid) == "Z"]


def children() -> set[int]:
    """Our children, from each thread's /proc children list (an orphan is re-parented to one of our threads)."""
    found: set[int] = set()
    for task in Path("/proc/self/task").iterdir():
        try:
            found.update(int(pid) for pid in (task / "children").read_text().split())
        except (OSError, ValueError):  # the thread ended meanwhile
            continue
    return found


def process_state(pid: int) -> str | None:
    """The one-letter state of /proc/<pid>/stat (after the name, which may hold spaces or parentheses)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """When `pid` started, in clock ticks since boot (field 22 of /proc/<pid>/stat); None if it is gone.

    A pid is reused once its process is reaped; the pair (pid, start time) is not.
    """
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return None
