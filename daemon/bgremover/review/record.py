"""An item's review record: the quality signals of its result and the decisions a person took on it.

Stored as JSON in the item's `review` column and shown as is in its status
JSON. A plain function of what it is given: no I/O, standard library only, so
the supervisor, the status document and the clients read it alike.

    {"state": "flagged", "reasons": [{"code": "no_subject", "reason": "...", ...}],
     "decisions": [{"decision": "approved", "by": "ann", "at": "2026-12-07T08:00:00Z"}]}

`state` is one of STATES: `flagged` (a signal fired and no one has decided
yet), `clean` (a rerun a person asked for raised no signal), `approved`,
`retried` and `corrected` (the item runs again, with other options or with a
person's mask; a corrected result stays `corrected`).
"""

from __future__ import annotations

import json

# Every signal the job may raise (imaging/quality.py computes them), in the order they are shown.
CODES = ("no_subject", "tiny_subject", "cut_by_frame", "several_subjects", "uncertain_edges", "models_disagree")
DECISIONS = ("approved", "retried", "corrected")
STATES = ("flagged", "clean", *DECISIONS)
REVIEW_FOLDER = "_review"  # where a flagged item's output goes in the ZIP, with review_folder = true


def loaded(review: str | None) -> dict | None:
    return json.loads(review) if review else None


def dumped(record: dict | None) -> str | None:
    return json.dumps(record, sort_keys=True) if record else None


def after_job(previous: str | None, reasons: list[dict], corrected: bool = False) -> str | None:
    """The record once a job made a new result: its signals replace the last ones; decisions are history.

    None for a result that raised nothing and was never reviewed: nothing to show.
    """
    decisions = (loaded(previous) or {}).get("decisions", [])
    if corrected:
        state = "corrected"
    elif reasons:
        state = "flagged"
    elif decisions:
        state = "clean"
    else:
        return None
    return dumped({"state": state, "reasons": reasons, "decisions": decisions})


def decided(previous: str | None, decision: str, at: str, by: str | None = None, options: dict | None = None) -> str:
    """The record with a person's decision added: it becomes the record's state."""
    if decision not in DECISIONS:
        raise ValueError(f"no such decision: {decision!r}")
    record = loaded(previous) or {"reasons": [], "decisions": []}
    entry = {"decision": decision, "by": by, "at": at, **({"options": options} if options else {})}
    return dumped({**record, "state": decision, "decisions": [*record.get("decisions", []), entry]})


def pending(review: str | None) -> bool:
    """Whether the item waits for a person: flagged, and nobody decided since."""
    record = loaded(review)
    return bool(record) and record["state"] == "flagged"


def codes(review: str | None) -> list[str]:
    return [reason["code"] for reason in (loaded(review) or {}).get("reasons", [])]
