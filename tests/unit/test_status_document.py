"""The status document (outbox/status.py): what the daemon writes to outbox/SESSION.json, from a real store.

`bgremover status --json SESSION` shows a session's items with the same builder,
so a script sees each item alike in either place.
"""

from __future__ import annotations

import json
from contextlib import closing

import pytest

from bgremover.outbox.status import item_documents, session_document
from bgremover.queue.states import Status
from bgremover.queue.store import Store, iso
from bgremover.review import record
from bgremover.settings import load_settings
from bgremover.status import view as statusview

BAD_INPUT_ERROR = "the file is not an image Pillow can read"
DOCUMENT_FIELDS = [
    "session",
    "state",
    "format",
    "model",
    "created_at",
    "updated_at",
    "total",
    "counts",
    "review",
    "zip",
    "error",
    "finish_error",
    "ticket",
    "items",
]


@pytest.fixture
def settings(tmp_path):
    settings = load_settings(root=tmp_path / "root")
    settings.state_dir.mkdir(parents=True)
    return settings


def fill(store: Store, session: str, ticket: dict | None = None) -> None:
    """A session with one item in each status: a.jpg done, broken.jpg failed, c.jpg cancelled, d.jpg processing, e.jpg queued."""
    store.create_session(session, session, "png", 1000.0, ticket=ticket)
    items = {
        name: store.add_item(session, name, name.replace(".jpg", ".png"), "jpg", name.encode(), 1000.0 + n)
        for n, name in enumerate(["a.jpg", "broken.jpg", "c.jpg", "d.jpg", "e.jpg"])
    }
    for name in ("a.jpg", "broken.jpg", "d.jpg"):
        store.transition(items[name].id, Status.QUEUED, Status.PROCESSING, 1010.0)  # QUEUED -> PROCESSING
    store.transition(items["a.jpg"].id, Status.PROCESSING, Status.DONE, 1020.0)  # PROCESSING -> DONE
    # PROCESSING -> FAILED (bad input)
    store.transition(items["broken.jpg"].id, Status.PROCESSING, Status.FAILED, 1030.0, error=BAD_INPUT_ERROR)
    store.transition(items["c.jpg"].id, Status.QUEUED, Status.CANCELLED, 1025.0)  # QUEUED -> CANCELLED


def test_a_sessions_document_has_every_field_and_counts_each_status(settings):
    with closing(Store(settings.database)) as store:
        fill(store, "catalog")
        doc = session_document(store.session("catalog"), store.items("catalog"), settings)

    assert list(doc) == DOCUMENT_FIELDS
    assert {key: doc[key] for key in DOCUMENT_FIELDS[:-1]} == {
        "session": "catalog",
        "state": "open",
        "format": "png",
        "model": settings.model,
        "created_at": iso(1000.0),
        "updated_at": iso(1030.0),  # the latest change of the session or any item
        "total": 5,
        "counts": {"queued": 1, "processing": 1, "done": 1, "failed": 1, "cancelled": 1},
        "review": {
            **{state: 0 for state in ("flagged", "clean", "approved", "retried", "corrected")},
            "signals": {code: 0 for code in record.CODES},
        },
        "zip": None,
        "error": None,
        "finish_error": None,
        "ticket": None,
    }
    assert doc["items"] == [
        {
            "name": "a.jpg",
            "status": "done",
            "output": "a.png",
            "mask": None,
            "error": None,
            "note": None,
            "attempts": 1,
            "retry_marker": None,
            "review": None,
        },
        {
            "name": "broken.jpg",
            "status": "failed",
            "output": None,
            "mask": None,
            "error": BAD_INPUT_ERROR,
            "note": None,
            "attempts": 1,
            "retry_marker": "retry/catalog/broken.jpg",
            "review": None,
        },
        {
            "name": "c.jpg",
            "status": "cancelled",
            "output": None,
            "mask": None,
            "error": None,
            "note": None,
            "attempts": 0,
            "retry_marker": "retry/catalog/c.jpg",
            "review": None,
        },
        {
            "name": "d.jpg",
            "status": "processing",
            "output": None,
            "mask": None,
            "error": None,
            "note": None,
            "attempts": 1,
            "retry_marker": None,
            "review": None,
        },
        {
            "name": "e.jpg",
            "status": "queued",
            "output": None,
            "mask": None,
            "error": None,
            "note": None,
            "attempts": 0,
            "retry_marker": None,
            "review": None,
        },
    ]


def test_a_ticket_sets_the_documents_model_and_gives_done_items_a_mask(settings):
    ticket = {"output": "both", "model": "isnet-small"}
    with closing(Store(settings.database)) as store:
        fill(store, "masked", ticket)
        doc = session_document(store.session("masked"), store.items("masked"), settings)
    assert (doc["model"], doc["ticket"]) == ("isnet-small", ticket)
    assert [(item["name"], item["output"], item["mask"]) for item in doc["items"] if item["status"] == "done"] == [
        ("a.jpg", "a.png", "a.mask.png")
    ]
    assert all(item["mask"] is None for item in doc["items"] if item["status"] != "done")


def test_a_session_with_no_items_yet_is_dated_by_the_session_alone(settings):
    with closing(Store(settings.database)) as store:
        session = store.create_session("empty", "empty", "png", 1000.0)
    doc = session_document(session, [], settings)
    assert (doc["updated_at"], doc["total"], doc["items"]) == (iso(1000.0), 0, [])
    assert doc["counts"] == {"queued": 0, "processing": 0, "done": 0, "failed": 0, "cancelled": 0}


@pytest.mark.parametrize("ticket", [None, {"output": "both"}], ids=["cutouts", "with masks"])
def test_status_json_for_a_session_shows_exactly_the_items_of_its_document(settings, ticket):
    with closing(Store(settings.database)) as store:
        fill(store, "catalog", ticket)
        fill(store, "other")
        doc = session_document(store.session("catalog"), store.items("catalog"), settings)
    shown = json.loads(statusview.frame(settings, "catalog", as_json=True, every=None, now=2000.0))
    (session,) = shown["sessions"]
    assert session["items"] == doc["items"] == item_documents(store_items(settings, "catalog"), ticket is not None)


def store_items(settings, session: str):
    with closing(Store(settings.database, readonly=True)) as store:
        return store.items(session)
