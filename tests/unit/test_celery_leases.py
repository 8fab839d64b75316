"""The supervisor's reading of a lapsed lease (runners/celery/runner.py): lost with the broker's data, or a lost worker."""

from __future__ import annotations

from types import SimpleNamespace

from bgremover.runners.celery.runner import CeleryRunner


class BrokerMarks:
    """The marks as the supervisor reads them: the Redis run id and its root (None once emptied)."""

    def __init__(self) -> None:
        self.root_mark: str | None = "root"
        self.facts: dict | None = {"version": "1"}

    def run_id(self) -> str:
        return "run-1"  # a FLUSHALL keeps it: only a restart changes it

    def root(self) -> str | None:
        return self.root_mark

    def supervisor(self) -> dict | None:
        return self.facts

    def claim_root(self, identity: str) -> None:
        self.root_mark = identity

    def publish_supervisor(self, facts: dict) -> None:
        self.facts = facts


def supervisor_side() -> CeleryRunner:
    runner = CeleryRunner.__new__(CeleryRunner)  # no broker: only the lease bookkeeping is exercised
    runner.marks, runner.identity, runner.facts = BrokerMarks(), "root", {"version": "1"}
    runner.broker_faults = runner.broker_emptied = 0
    runner.publish_check_at = runner.broker_back_at = 0.0
    return runner


def test_a_lease_seen_before_the_broker_was_emptied_says_nothing_of_its_worker():
    """A FLUSHALL keeps Redis's run id but takes every lease and answer: neither may be charged to the worker."""
    runner = supervisor_side()
    sent = SimpleNamespace(lease_life=("run-1", 0, 0))
    assert not runner.lost_with_broker(sent)  # nothing happened to the broker: a lapsed lease is a lost worker
    runner.marks.root_mark = runner.marks.facts = None  # FLUSHALL
    assert runner.lost_with_broker(sent)  # seen before the supervisor looks for its root again
    runner.republish(now=1.0)
    assert runner.marks.root() == "root"
    assert runner.lost_with_broker(sent)  # and after it has published it again
    assert not runner.lost_with_broker(SimpleNamespace(lease_life=("run-1", 0, 1)))  # a lease seen since
