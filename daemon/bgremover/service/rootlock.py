"""One daemon per root: an exclusive flock on state/daemon.lock for the daemon's whole life.

A kernel lock rather than a pid file: it is released the moment the process
ends, however it ends, so a kill -9 never leaves a stale lock behind. The pid
written into the file is only there to name the holder in the error message.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_NAME = "daemon.lock"


class RootLocked(Exception):
    """Another daemon holds this root; one sentence naming it."""


def lock_root(root: Path, state_dir: Path) -> int:
    """Take the root's lock and return its file descriptor; close it to let go."""
    state_dir.mkdir(parents=True, exist_ok=True)
    # O_CLOEXEC: the fork server and the jobs are exec'd or forked from it, and must not hold the lock.
    fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise RootLocked(f"another bgremover daemon (pid {holder}) is already running on {root}") from None
    os.ftruncate(fd, 0)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd
