"""Process groups whose members are ours to reap.

The daemon is a child subreaper (see local.py): whatever a finished job or hook
left running in its process group is re-parented to us when it exits, and a
zombie nobody reaps would stay in the process table. Reaping by group, never
with waitpid(-1), keeps us from stealing the exit status of a job whose own
wait4 is still to come.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time


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
