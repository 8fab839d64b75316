"""A job lost with its worker host: the item runs again, within a budget, then fails with "worker lost".

Only a runner of other hosts loses jobs this way (runners/celery/runner.py: the
worker's lease lapsed with no answer, or its pool process vanished). Its image
may be to blame (a poison image that takes the host down with it), so the item
is not run again without end: each loss is an event of the item's history, and
the budget counts them, across restarts of the supervisor too. A user's retry
(or resume) of a failed or cancelled item starts the count afresh: the user
chose to try again, and the budget guards only against a loop nobody asked for.
"""

from __future__ import annotations

from typing import NamedTuple

from bgremover.queue.states import Status
from bgremover.queue.store import Item, Store

WORKER_LOST = "worker_lost"  # the job's stop reason, the event's reason, and the metrics' failure reason
WORKER_LOST_BUDGET = 2  # attempts an item may lose with their worker before it fails
USERS_RETRY = frozenset({Status.FAILED.value, Status.CANCELLED.value})  # moved back to queued only by a user


class LostVerdict(NamedTuple):
    status: Status
    error: str | None
    reason: str | None


def lost_verdict(store: Store, item: Item, why: str | None) -> LostVerdict:
    """Queued again while the budget lasts; failed, with the reason, once it is spent."""
    losses = 1
    for event in store.events(item.id):
        if event["dst"] == Status.QUEUED.value and event["src"] in USERS_RETRY:
            losses = 1  # FAILED | CANCELLED -> QUEUED: the user's retry
        elif event["reason"] == WORKER_LOST:
            losses += 1
    if losses < WORKER_LOST_BUDGET:
        return LostVerdict(Status.QUEUED, None, None)
    return LostVerdict(
        Status.FAILED,
        f"worker lost: {why or 'its host stopped answering'} ({losses} attempts lost with their worker)",
        WORKER_LOST,
    )
