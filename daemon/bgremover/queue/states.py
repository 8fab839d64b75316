"""The queue's two state machines, an item's and a session's: each one enum and one table of allowed moves.

Standard library only, so the store, the supervisor and the tests all read the
same tables. The store enforces them inside the SQL UPDATE itself, and copies
them into the database, where triggers refuse any other move.
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
    Status.DONE: frozenset({Status.QUEUED}),  # review: rejected, run again with other options or a corrected mask
}

TERMINAL: frozenset[Status] = frozenset({Status.DONE, Status.FAILED, Status.CANCELLED})
# What a retry marker may send back to the queue: every way back to QUEUED but recovery's and a review's.
# A done item goes back only through a review marker (supervisor/reviews.py), which says what to change.
RETRYABLE: frozenset[Status] = frozenset(
    src for src, dsts in TRANSITIONS.items() if Status.QUEUED in dsts and src not in (Status.PROCESSING, Status.DONE)
)
# What a review marker may send back to the queue.
REVIEWABLE: frozenset[Status] = frozenset({Status.DONE})


class SessionState(str, Enum):
    OPEN = "open"  # still takes new files
    PROCESSING = "processing"  # closed to new files, some item not yet terminal or ZIP not current
    COMPLETE = "complete"  # every item terminal and the ZIP is current


SESSION_TRANSITIONS: dict[SessionState, frozenset[SessionState]] = {
    SessionState.OPEN: frozenset({SessionState.PROCESSING}),  # closed: idle, full, or a cancel marker
    SessionState.PROCESSING: frozenset({SessionState.COMPLETE}),  # every item terminal and the ZIP written
    SessionState.COMPLETE: frozenset({SessionState.PROCESSING}),  # a retry marker reopens it
}

_TABLES: dict[type, dict] = {Status: TRANSITIONS, SessionState: SESSION_TRANSITIONS}


def allowed(src: Status | SessionState, dst: Status | SessionState) -> bool:
    """Whether the table of src's kind has src -> dst.

    Both enums are str-valued and share "processing", so the kinds are compared
    first: an item's status never counts as a session's state.
    """
    return type(dst) is type(src) and dst in _TABLES[type(src)][src]
