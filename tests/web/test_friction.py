"""The page's rough edges, each checked in a real browser on a real daemon and page (fake jobs).

An upload's batch closes when the upload ends, not after the idle wait; a
cancelled batch says so; a ZIP being rebuilt is never offered as current; the
messages agree; every control names what it acts on; a drop anywhere on the
page is an upload; a renamed upload says its new name.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from tests.support.harness import Daemon, drop, wait_for
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


def test_a_cancelled_batch_says_cancelled(tmp_path, browser):
    root, gate = tmp_path / "root", tmp_path / "gate"
    with Daemon(root) as daemon, WebPage(root) as web:
        for n in range(4):
            drop(root / "inbox", f"shoot/{n}.jpg", f"gate {gate}")
        page = browser.new_page(viewport=DESK)
        page.goto(web.url)
        wait_for(lambda: page.locator("#cancel-shoot").count() == 1, timeout=30, what="shoot's Cancel")
        page.once("dialog", lambda dialog: dialog.accept())
        page.locator("#cancel-shoot").click()
        wait_for(lambda: batch(page, "shoot").get_attribute("data-state") == "complete", timeout=30, what="complete")
        assert daemon.status("shoot")["counts"]["cancelled"] == 4
        assert batch(page, "shoot").locator(".state").inner_text() == "Cancelled"
        gate.touch()


def test_a_zip_being_rebuilt_is_shown_as_such_and_the_old_one_is_not_offered(tmp_path, browser):
    root, gate = tmp_path / "root", tmp_path / "gate"
    with Daemon(root) as daemon, WebPage(root) as web:
        drop(root / "inbox", "shoot/ok.jpg", "ok")
        drop(root / "inbox", "shoot/bad.jpg", "bad-input")
        daemon.wait_complete("shoot")
        page = browser.new_page(viewport=DESK)
        page.goto(web.url)
        wait_for(lambda: page.locator("#download-shoot").count() == 1, what="the first ZIP offered")
        fixed = tmp_path / "fixed" / "bad.jpg"
        fixed.parent.mkdir()
        fixed.write_text(f"gate {gate}")  # the retried photo runs until the test lets it finish
        bad = page.locator('li[data-name="bad.jpg"]')
        item_id = bad.get_attribute("id").removeprefix("item-")
        page.set_input_files(f"#fix-{item_id}", str(fixed))
        page.locator(f"#retry-{item_id}").click()
        wait_for(lambda: page.locator("#rebuilding-shoot").count() == 1, timeout=30, what="the rebuild shown")
        assert page.locator("#download-shoot").count() == 0, "the ZIP without the retried photo is offered"
        assert batch(page, "shoot").locator("summary").get_attribute("data-zip") == ""
        gate.touch()
        wait_for(lambda: page.locator("#download-shoot").count() == 1, timeout=30, what="the new ZIP offered")
        assert page.locator("#rebuilding-shoot").count() == 0
        assert sorted(daemon.zip_members("shoot")) == ["bad.png", "ok.png"]


# Every control inside a batch, with its accessible name as the page gives it (aria-label, else its text).
CONTROLS = """() => Array.from(document.querySelectorAll("article.session")).flatMap(batch =>
    Array.from(batch.querySelectorAll("button, a, input:not([type=hidden])"), control => ({
        batch: batch.dataset.name,
        photo: control.closest("li") && control.closest("li").dataset.name,
        name: control.getAttribute("aria-label") || control.textContent.trim(),
    })))"""


def test_the_pages_words_agree_name_what_they_act_on_and_take_any_drop(tmp_path, browser):
    root = tmp_path / "root"
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        drop(root / "inbox", name, "bad-input")
    chosen = tmp_path / "chosen" / "a.jpg"
    chosen.parent.mkdir()
    chosen.write_text("ok")
    with WebPage(root) as web:
        context = browser.new_context(viewport=DESK, locale="en-GB", timezone_id="Asia/Tokyo")
        page = context.new_page()
        page.goto(web.url)
        page.evaluate("window.loadedOnce = true")
        # -- no daemon: nothing promises that the files are about to be picked up -----------------
        daemon_text = page.locator("#daemon").inner_text()
        assert "Stopped" in daemon_text and "3 files arrived" in daemon_text
        assert "in a moment" not in page.locator("#live").inner_text()
        assert "Add photos above to start one" not in page.locator("#no-sessions").inner_text()
        # -- a name already taken in the inbox: the answer gives the new one ---------------------
        page.set_input_files("#choose-files", str(chosen))
        wait_for(lambda: "Uploaded 1 photo" in page.locator("#upload-status").inner_text(), what="the upload")
        assert "a.jpg as a (2).jpg" in page.locator("#upload-status").inner_text()
        # -- a photo dropped on the page's header, outside the drop box, is uploaded -----------
        page.evaluate(
            """() => {
                const data = new DataTransfer();
                data.items.add(new File(["ok"], "dropped.jpg", { type: "image/jpeg" }));
                const header = document.querySelector("header");
                header.dispatchEvent(new DragEvent("dragover", { dataTransfer: data, bubbles: true, cancelable: true }));
                header.dispatchEvent(new DragEvent("drop", { dataTransfer: data, bubbles: true, cancelable: true }));
            }"""
        )
        wait_for(lambda: (root / "inbox" / "dropped.jpg").exists(), what="the dropped photo in the inbox")
        assert page.evaluate("window.loadedOnce") is True, "the drop replaced the page"
        with Daemon(root, session_idle_seconds=IDLE) as daemon:
            wait_for(lambda: daemon.events("session_closed"), timeout=30, what="the uploads' batch closed")
            drop(root / "inbox", "shoot/x.jpg", "bad-input")
            wait_for(lambda: batch(page, "shoot").count() == 1, timeout=30, what="the shoot batch")
            loose = page.locator('article.session:not([data-name="shoot"])')
            wait_for(lambda: loose.get_attribute("data-state") == "complete", timeout=30, what="the loose batch done")
            # -- times in the viewer's zone; a closed batch says it opens -------------------------
            created = daemon.status(loose.get_attribute("data-name"))["created_at"]
            tokyo = datetime.fromisoformat(created.replace("Z", "+00:00")).astimezone(ZoneInfo("Asia/Tokyo"))
            assert f"{tokyo:%H:%M}" in loose.locator("time").inner_text(), loose.locator("time").inner_text()
            if loose.locator("details").evaluate("d => d.open"):  # it opened by itself if it came first alone
                assert loose.locator(".opens").inner_text() == "Hide its photos"
                loose.locator("summary").click()
            assert not loose.locator("details").evaluate("d => d.open")
            assert loose.locator(".opens").inner_text() == "Show its photos"
            loose.locator("summary").click()
            wait_for(lambda: loose.locator("li.item").count() == 5, what="the loose batch's photos, once opened")
            # -- every control names its batch, and its photo where it acts on one -------------------
            # The opened batch's rows and their buttons arrive by the page's polls: count them once all are in.
            wait_for(lambda: len(page.evaluate(CONTROLS)) >= 8, what="the opened batch's controls")
            controls = page.evaluate(CONTROLS)
            for control in controls:
                assert control["batch"] in control["name"], control
                assert control["photo"] is None or control["photo"] in control["name"], control
            page.get_by_role("button", name="Retry b.jpg of " + loose.get_attribute("data-name")).focus()
            assert page.evaluate("document.activeElement.id").startswith("retry-")
