"""The per-item state machine: one enum and one table of allowed moves.

Standard library only, so the store, the supervisor and the tests all read the
same table. The store enforces it inside the SQL UPDATE itself.
"""

from enum import Enum


class Status(str, Enum):
    QUEUED = "queued"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


TRANSITIONS: dict[Status, frozenset[Status]] = {
    Status.QUEUED: frozenset({Status.PROCESSING, Status.CANCELLED}),
    # PROCESSING -> QUEUED only for recovery after a crash or an orderly stop.
    Status.PROCESSING: frozenset({Status.DONE, Status.FAILED, Status.CANCELLED, Status.QUEUED}),
    Status.FAILED: frozenset({Status.QUEUED}),  # retry marker
    Status.CANCELLED: frozenset({Status.QUEUED}),  # resume through the retry marker
    Status.DONE: frozenset(),
}

TERMINAL: frozenset[Status] = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})
RETRYABLE: frozenset[Status] = frozenset(src for src, dsts in TRANSITIONS.items() if Status.QUEUED in dsts and src is not Status.PROCESSING)


def allowed(src: Status, dst: Status) -> bool:
    return dst in TRANSITIONS[src]


class SessionState(str, Enum):
    OPEN = "open"  # still takes new files
    PROCESSING = "processing"  # closed to new files, some item not yet terminal or ZIP not current
    COMPLETE = "complete"  # every item terminal and the ZIP is current
