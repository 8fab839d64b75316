"""Each worker's tasks counted by the celery runner, and the rule that flags one failing far more than the others."""

from __future__ import annotations

from bgremover.runners.celery.runner import FLAG_MIN_FAILURES, WorkerTally


def tally_of(answers: dict[str, list[int]], handed_back: dict[str, int] | None = None) -> WorkerTally:
    tally = WorkerTally()
    for worker, codes in answers.items():
        for code in codes:
            tally.answered(worker, code, None)
    tally.handed_back = handed_back or {}
    return tally


def test_a_worker_failing_most_of_its_tasks_while_the_others_do_not_is_flagged_once():
    tally = tally_of({"good": [0] * 20, "bad": [1, 0]}, {"bad": FLAG_MIN_FAILURES})
    assert tally.of("bad") | {"flagged": None} == {
        "answered": 2,
        "failed": 1,
        "lost": 0,
        "handed_back": FLAG_MIN_FAILURES,
        "failures": 1 + FLAG_MIN_FAILURES,
        "tasks": 2 + FLAG_MIN_FAILURES,
        "flagged": None,
    }
    assert (tally.failing("bad"), tally.failing("good")) == (True, False)
    assert tally.newly_flagged() == ["bad"]
    assert tally.newly_flagged() == []  # said once while it stays flagged


def test_no_flag_for_a_few_failures_for_failures_everywhere_or_for_a_worker_alone():
    few = tally_of({"good": [0] * 20, "bad": [1] * (FLAG_MIN_FAILURES - 1)})
    everywhere = tally_of({"one": [1, 1, 1, 0], "two": [1, 1, 1, 0]})
    alone = tally_of({"only": [1] * 10})
    assert not few.failing("bad")
    assert not everywhere.failing("one") and not everywhere.failing("two")
    assert not alone.failing("only")  # nobody to compare with: bad images, not a bad host, as far as is known


def test_a_cancel_is_not_a_failure_of_the_worker():
    tally = WorkerTally()
    tally.answered("w1", -15, "cancel")
    assert (tally.of("w1")["answered"], tally.of("w1")["failures"]) == (1, 0)
