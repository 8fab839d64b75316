"""The loop's finishing step as a test of the daemon's parts drives it: over as many passes as its ZIPs take.

The loop hands each ZIP to the builder's threads and concludes it on a later
pass; a test without a loop waits for the builds between two passes instead.
"""

from __future__ import annotations

from bgremover.supervisor.loop import Supervisor


def finish_sessions(daemon: Supervisor, now: float) -> None:
    """finish_sessions, again after each round of builds, until a pass starts none."""
    daemon.sessions.finish_sessions(now)
    while daemon.builder.wait():
        daemon.sessions.finish_sessions(now)
