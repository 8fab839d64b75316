"""A job lost with its worker host: its item runs again within the budget, then fails with "worker lost"."""

from __future__ import annotations

import pytest

from bgremover.queue.states import Status
from bgremover.queue.store import IllegalTransition, Store
from bgremover.supervisor.lost import WORKER_LOST, WORKER_LOST_BUDGET, lost_verdict


def claimed(store: Store, item_id: int, now: float):
    return store.transition(item_id, Status.QUEUED, Status.PROCESSING, now, reason="claimed")


def test_the_first_loss_queues_the_item_again_and_the_budgets_last_fails_it_with_its_reason(tmp_path):
    store = Store(tmp_path / "queue.db")
    store.create_session("s", None, "png", 1.0)
    item = store.add_item("s", "poison.jpg", "poison.png", ".jpg", b"inbox/s/poison.jpg", 1.0)
    verdicts = []
    for attempt in range(1, WORKER_LOST_BUDGET + 1):
        item = claimed(store, item.id, 1.0 + attempt)
        verdict = lost_verdict(store, item, "its lease lapsed with no answer")
        verdicts.append(verdict)
        item = store.transition(
            item.id,
            Status.PROCESSING,
            verdict.status,
            2.0 + attempt,
            error=verdict.error,
            reason=WORKER_LOST,
            attempt=attempt,
        )
    store.close()
    assert [verdict.status for verdict in verdicts] == [Status.QUEUED] * (WORKER_LOST_BUDGET - 1) + [Status.FAILED]
    assert verdicts[-1].error.startswith("worker lost: its lease lapsed with no answer")
    assert verdicts[-1].reason == WORKER_LOST


def test_an_outcome_is_recorded_only_for_the_attempt_that_ran(tmp_path):
    store = Store(tmp_path / "queue.db")
    store.create_session("s", None, "png", 1.0)
    item = claimed(store, store.add_item("s", "a.jpg", "a.png", ".jpg", b"inbox/s/a.jpg", 1.0).id, 2.0)
    store.transition(item.id, Status.PROCESSING, Status.QUEUED, 3.0, reason="recovered")
    item = claimed(store, item.id, 4.0)  # attempt 2 runs now
    with pytest.raises(IllegalTransition, match="at attempt 1"):
        store.transition(item.id, Status.PROCESSING, Status.DONE, 5.0, reason="exited", attempt=1)
    done = store.transition(item.id, Status.PROCESSING, Status.DONE, 5.0, reason="exited", attempt=2, worker="w2@h")
    store.close()
    assert (done.status, done.attempts, done.worker) == (Status.DONE, 2, "w2@h")


def test_a_users_retry_gives_the_item_its_budget_afresh(tmp_path):
    store = Store(tmp_path / "queue.db")
    store.create_session("s", None, "png", 1.0)
    item = store.add_item("s", "a.jpg", "a.png", ".jpg", b"inbox/s/a.jpg", 1.0)
    now = 1.0
    for attempt in range(1, WORKER_LOST_BUDGET + 1):  # the whole budget spent: failed
        now += 1
        item = claimed(store, item.id, now)
        verdict = lost_verdict(store, item, None)
        item = store.transition(
            item.id, Status.PROCESSING, verdict.status, now, error=verdict.error, reason=WORKER_LOST, attempt=attempt
        )
    assert item.status is Status.FAILED
    store.transition(item.id, Status.FAILED, Status.QUEUED, now + 1, reason="retry marker")  # FAILED -> QUEUED
    item = claimed(store, item.id, now + 2)
    after_retry = lost_verdict(store, item, None)
    store.close()
    assert (after_retry.status, after_retry.error) == (Status.QUEUED, None)
