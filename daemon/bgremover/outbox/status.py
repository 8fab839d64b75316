"""A session's status document: the JSON the daemon writes to the outbox, and the items `bgremover status` shows.

One builder for both, so a script reading `outbox/SESSION.json` and one reading
`bgremover status --json SESSION` see each item the same way. Everything here
is a plain function of records already read (a session, its items, the
settings): no I/O, and nothing of the supervisor or the CLI.
"""

from __future__ import annotations

from collections import Counter

from bgremover.intake.tickets import makes_masks, session_options
from bgremover.outbox.zips import mask_member
from bgremover.queue.states import RETRYABLE, Status
from bgremover.queue.store import Item, Session, iso
from bgremover.review import record
from bgremover.settings import Settings


def session_document(session: Session, items: list[Item], settings: Settings) -> dict:
    """The status JSON of `session`, whose items are `items`; its model and masks follow the session's ticket."""
    return {
        "session": session.name,
        "state": session.state.value,
        "format": session.format,
        "model": session_options(settings, session.ticket)["model"],
        "created_at": iso(session.created_at),
        "updated_at": iso(max([session.updated_at, *(item.updated_at for item in items)])),
        "total": len(items),
        "counts": status_counts(items),
        "review": review_counts(items),
        "zip": session.zip,
        "error": session.error,  # why the whole session was refused (an invalid job ticket)
        "finish_error": session.finish_error,  # why its ZIP or archive is not done yet; tried again later
        "ticket": session.ticket or None,
        "items": item_documents(items, makes_masks(settings, session.ticket, session.output), settings.review_folder),
    }


def forgotten_document(document: dict, archived: set[str]) -> dict:
    """A session's status JSON as it stays once the session is forgotten: no retry marker names anything.

    Each item in `archived` (its original moved to archive/SESSION/NAME) says where its original is now.
    """
    session = document["session"]
    items = [
        {
            **item,
            "retry_marker": None,
            **({"original": f"archive/{session}/{item['name']}"} if item["name"] in archived else {}),
        }
        for item in document["items"]
    ]
    return {**document, "forgotten": True, "items": items}


def status_counts(items: list[Item]) -> dict[str, int]:
    """How many items are in each status, every status named (zero included), in the table's order."""
    found = Counter(item.status for item in items)
    return {status.value: found[status] for status in Status}


def review_counts(items: list[Item]) -> dict[str, int]:
    """How many items are in each review state (zero included), and how many times each signal fired."""
    states = Counter(record.loaded(item.review)["state"] for item in items if item.review)
    fired = Counter(code for item in items if item.status is Status.DONE for code in record.codes(item.review))
    return {
        **{state: states[state] for state in record.STATES},
        "signals": {code: fired[code] for code in record.CODES},
    }


def output_member(item: Item, review_folder: bool) -> str:
    """The item's cutout in the ZIP: under _review/ while it waits for a person, where review_folder asks."""
    if review_folder and record.pending(item.review):
        return f"{record.REVIEW_FOLDER}/{item.member}"
    return item.member


def item_documents(items: list[Item], with_masks: bool, review_folder: bool = False) -> list[dict]:
    """The "items" of a status document; `with_masks`: the session's output is "both"."""
    return [item_document(item, with_masks, review_folder) for item in items]


def item_document(item: Item, with_mask: bool, review_folder: bool = False) -> dict:
    """An item as the session's status JSON shows it; `mask` names its mask's member."""
    done = item.status is Status.DONE
    member = output_member(item, review_folder)
    return {
        "name": item.name,
        "status": item.status.value,
        "output": member if done else None,
        "mask": mask_member(member) if done and with_mask else None,
        "error": item.error,
        "note": item.note,
        "attempts": item.attempts,
        "retry_marker": retry_marker(item),
        "review": record.loaded(item.review),  # its quality signals and the decisions taken (review/record.py)
        **({"options": item.own_options} if item.options else {}),  # what a review changed for its runs
        **({"worker": item.worker} if done and item.worker else {}),  # the host that made it, past one machine
    }


def retry_marker(item: Item) -> str | None:
    """The file to touch to run the item again, relative to the root; None for an item that cannot be retried."""
    if item.status in RETRYABLE:
        return f"retry/{item.session}/{item.name}"
    return None
