"""When to try a folder again after it refused a write: the daemon's answer to a full or read-only disk.

A full outbox or state folder is the machine's problem, not the image's: no
item is failed for it. The supervisor keeps its state, says once what is wrong,
and tries again after 1 s, 2 s, 4 s ... up to a minute, until a write works.
Standard library only: the supervisor imports it.
"""

from __future__ import annotations

import errno
import sqlite3

FIRST_DELAY_SECONDS = 1.0
MAX_DELAY_SECONDS = 60.0

# What a folder that cannot take a write says: full, over quota, read-only, not ours, too big.
STORAGE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EFBIG})
# SQLite's own words for the same troubles (SQLITE_FULL, SQLITE_READONLY, SQLITE_IOERR, SQLITE_CANTOPEN).
SQLITE_STORAGE_MESSAGES = ("disk is full", "readonly database", "disk i/o error", "unable to open database")


def is_storage_error(exc: BaseException) -> bool:
    """True for an error that says the disk refused a write, not that the data is bad."""
    if isinstance(exc, OSError):
        return exc.errno in STORAGE_ERRNOS
    if isinstance(exc, sqlite3.OperationalError):
        return any(words in str(exc).lower() for words in SQLITE_STORAGE_MESSAGES)
    return False


def describe(exc: BaseException) -> str:
    """The error in the words a person needs: `No space left on device`, `database or disk is full`."""
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc)


class Backoff:
    """The retry clock of one folder: doubles the wait after each failure, resets on a success.

    `failed` and `succeeded` say whether an outage began or ended, so the caller
    logs one line when a folder stops taking writes and one when it takes them
    again, however many retries lie between.

    A write that runs off the loop's thread (a ZIP build) answers late: the
    folder may have changed while it ran. Each answer carries when its write
    began (`tried_at`, the loop's clock), and one that began before the write
    that last changed the folder's state is outdated: it changes nothing.
    """

    def __init__(self, first: float = FIRST_DELAY_SECONDS, cap: float = MAX_DELAY_SECONDS) -> None:
        self.first = first
        self.cap = cap
        self.delay = 0.0
        self.retry_at = 0.0
        self.failing_since: float | None = None
        self.changed_at = float("-inf")  # when the write that began or ended the last outage began

    @property
    def failing(self) -> bool:
        return self.failing_since is not None

    def due(self, now: float) -> bool:
        """Whether a write may be tried now: always while healthy, after the wait while failing."""
        return now >= self.retry_at

    def outdated(self, tried_at: float) -> bool:
        """Whether a write begun at tried_at began before the one that last changed the folder's state."""
        return tried_at < self.changed_at

    def failed(self, now: float, tried_at: float | None = None) -> bool:
        """Record a write refused at now, begun at tried_at (now if not given); True when this starts an outage.

        A refusal of a write begun before the folder last took one changes nothing.
        """
        tried_at = now if tried_at is None else tried_at
        started = self.failing_since is None
        if started and self.outdated(tried_at):
            return False
        if started:
            self.failing_since, self.changed_at = now, tried_at
        self.delay = min(self.cap, self.delay * 2) if self.delay else self.first
        self.retry_at = now + self.delay
        return started

    def succeeded(self, now: float, tried_at: float | None = None) -> float | None:
        """Record a write that worked; the outage's length in seconds if one just ended.

        A write begun before the outage began does not end it: only a write begun since says the folder takes them.
        """
        tried_at = now if tried_at is None else tried_at
        since = self.failing_since
        if since is None or self.outdated(tried_at):
            return None
        self.failing_since, self.changed_at = None, tried_at
        self.delay, self.retry_at = 0.0, 0.0
        return now - since
