"""The page's rough edges, each checked in a real browser on a real daemon and page (fake jobs).

An upload's batch closes when the upload ends, not after the idle wait; a
cancelled batch says so; a ZIP being rebuilt is never offered as current; the
messages agree; every control names what it acts on; a drop anywhere on the
page is an upload; a renamed upload says its new name.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from tests.support.harness import Daemon, wait_for
from tests.support.web import WebPage

DESK = {"width": 1100, "height": 820}
IDLE = 600  # seconds: far longer than any test waits, so only the upload's own marker can close its batch


def folder_of(folder: Path, contents: dict[str, str]) -> Path:
    folder.mkdir(parents=True)
    for name, content in contents.items():
        (folder / name).write_text(content)
    return folder


def logged_at(record: dict) -> float:
    return datetime.fromisoformat(record["timestamp"]).timestamp()


def batch(page, name: str):
    return page.locator(f'article[data-name="{name}"]')


def test_an_uploaded_batch_closes_when_the_upload_ends(tmp_path, browser):
    root, gate = tmp_path / "root", tmp_path / "gate"
    shoot = folder_of(tmp_path / "up" / "shoot", {"a.jpg": "ok", "b.jpg": "ok", "c.jpg": f"gate {gate}"})
    with Daemon(root, session_idle_seconds=IDLE) as daemon, WebPage(root) as web:
        page = browser.new_page(viewport=DESK)
        page.goto(web.url)
        page.set_input_files("#choose-folder", str(shoot))
        wait_for(lambda: "Uploaded 3 photos" in page.locator("#upload-status").inner_text(), what="upload done")
        wait_for(lambda: daemon.events("session_closed"), timeout=30, what="the upload's batch closed")
        assert [e["reason"] for e in daemon.events("session_closed")] == ["uploaded"]
        assert batch(page, "shoot").get_attribute("data-state") != "complete"
        gate.touch()  # the last photo finishes now
        wait_for(lambda: page.locator("#download-shoot").count() == 1, timeout=30, what="the ZIP offered")
        assert sorted(daemon.zip_members("shoot")) == ["a.png", "b.png", "c.png"]
        finished = max(logged_at(e) for e in daemon.events("job_finished"))
        zipped = logged_at(daemon.events("session_complete")[0])
        print(f"ZIP complete {zipped - finished:.2f} s after the last photo finished (idle wait {IDLE} s)")
        assert not list((root / "uploaded").iterdir()), "the upload marker is read and removed"
