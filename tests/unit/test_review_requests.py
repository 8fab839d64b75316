"""What a client asks of a review: each request checked, then written as a marker under a dot-name and renamed."""

from __future__ import annotations

import json

import pytest

from bgremover.queue.states import Status
from bgremover.queue.store import Store
from bgremover.review import requests
from bgremover.settings import load_settings

NOW = 1_700_000_000.0


@pytest.fixture
def settings(tmp_path):
    settings = load_settings(root=tmp_path / "root")
    settings.state_dir.mkdir(parents=True)
    return settings


@pytest.fixture
def store(settings):
    store = Store(settings.database)
    store.create_session("shoot", "shoot", "png", NOW)
    for name, path in (
        ("done.jpg", [Status.PROCESSING, Status.DONE]),
        ("failed.jpg", [Status.PROCESSING, Status.FAILED]),
    ):
        item = store.add_item("shoot", name, name.replace(".jpg", ".png"), ".jpg", name.encode(), NOW)
        for dst in path:
            item = store.transition(item.id, item.status, dst, NOW)
    yield store
    store.close()


def test_approve_writes_who_decided_into_the_items_marker(settings, store):
    marker = requests.approve(settings, store, "shoot", "done.jpg", by="ann")
    assert marker == settings.root / "review" / "approve" / "shoot" / "done.jpg"
    assert json.loads(marker.read_text()) == {"by": "ann"}
    assert [path.name for path in marker.parent.iterdir()] == ["done.jpg"], "no temp file left beside it"


def test_retry_checks_its_options_by_the_tickets_rules_and_the_installed_models(settings, store):
    marker = requests.retry(settings, store, "shoot", "done.jpg", {"edges": "refine", "model": "u2netp"})
    assert json.loads(marker.read_text()) == {"options": {"edges": "refine", "model": "u2netp"}, "by": None}
    with pytest.raises(requests.ReviewRefused, match="edges"):
        requests.retry(settings, store, "shoot", "done.jpg", {"edges": "sharp"})
    with pytest.raises(requests.ReviewRefused, match="threads"):
        requests.retry(settings, store, "shoot", "done.jpg", {"threads": 4})
    with pytest.raises(requests.ReviewRefused, match="nosuchmodel"):
        requests.retry(settings, store, "shoot", "done.jpg", {"model": "nosuchmodel"})
    with pytest.raises(requests.ReviewRefused, match="at least one option"):
        requests.retry(settings, store, "shoot", "done.jpg", {})
    assert "u2netp" in requests.installed_models(settings)


def test_a_mask_is_written_as_given_and_only_for_a_done_item(settings, store):
    marker = requests.correct(settings, store, "shoot", "done.jpg", b"\x89PNG mask")
    assert marker.read_bytes() == b"\x89PNG mask"
    with pytest.raises(requests.ReviewRefused, match="failed: only a done item can be reviewed"):
        requests.correct(settings, store, "shoot", "failed.jpg", b"mask")
    with pytest.raises(requests.ReviewRefused, match="no item named"):
        requests.approve(settings, store, "shoot", "ghost.jpg")
    with pytest.raises(requests.ReviewRefused, match="no session named"):
        requests.approve(settings, store, "nope", "done.jpg")
    with pytest.raises(requests.ReviewRefused, match="empty"):
        requests.correct(settings, store, "shoot", "done.jpg", b"")
