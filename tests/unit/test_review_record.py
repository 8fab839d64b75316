"""An item's review record: signals after a job, a person's decisions, and what waits for a look."""

from __future__ import annotations

import json

import pytest

from bgremover.review import record

AT = "2026-12-07T08:00:00Z"
NO_SUBJECT = {"code": "no_subject", "reason": "No subject was found.", "value": 0.0, "threshold": 0.003}


def test_a_result_without_signals_and_never_reviewed_has_no_record():
    assert record.after_job(None, []) is None
    assert not record.pending(None)


def test_a_flagged_result_waits_until_a_person_decides():
    flagged = record.after_job(None, [NO_SUBJECT])
    assert record.pending(flagged) and record.codes(flagged) == ["no_subject"]
    approved = record.decided(flagged, "approved", AT, by="ann")
    assert not record.pending(approved)
    assert json.loads(approved) == {
        "state": "approved",
        "reasons": [NO_SUBJECT],
        "decisions": [{"decision": "approved", "by": "ann", "at": AT}],
    }


def test_a_rerun_keeps_the_decisions_and_is_judged_afresh():
    retried = record.decided(record.after_job(None, [NO_SUBJECT]), "retried", AT, options={"edges": "clean"})
    assert json.loads(record.after_job(retried, []))["state"] == "clean"
    again = json.loads(record.after_job(retried, [NO_SUBJECT]))
    assert again["state"] == "flagged" and again["decisions"][0]["options"] == {"edges": "clean"}
    corrected = record.after_job(record.decided(retried, "corrected", AT), [], corrected=True)
    assert json.loads(corrected)["state"] == "corrected" and len(json.loads(corrected)["decisions"]) == 2


def test_only_known_decisions_are_recorded():
    with pytest.raises(ValueError, match="no such decision"):
        record.decided(None, "rejected", AT)
