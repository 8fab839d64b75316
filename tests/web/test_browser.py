"""The page in a real browser: Debian's headless Chromium, driven by Playwright, on the real daemon and page.

One colleague's afternoon, start to finish: a folder of five photos and a
broken file dropped on the page, the batch followed live to the end, the
broken file's reason read, a good file given in its place and retried with
the keyboard, the ZIP downloaded and opened; then a second batch cancelled
while it runs. Screenshots are taken on the way (for docs/web.md, with
BGREMOVER_TEST_SCREENSHOTS=docs/web).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from PIL import Image

from tests.support.harness import Daemon, wait_for
from tests.support.images import photo
from tests.support.screenshots import shot
from tests.support.web import WebPage

PHONE = {"width": 390, "height": 844}
DESK = {"width": 1100, "height": 820}


def photos_folder(folder: Path, count: int, side: int) -> list[str]:
    """`count` real photos, `side` px on the longer side, named as a camera would."""
    folder.mkdir(parents=True)
    names = []
    for n in range(count):
        with Image.open(photo(("astronaut", "coffee", "chelsea")[n % 3])) as original:
            scale = side / max(original.size)
            image = original.convert("RGB").resize((round(original.width * scale), round(original.height * scale)))
            name = f"IMG_{n + 1:04d}.jpg"
            image.save(folder / name, quality=90)
            names.append(name)
    return names


def item(page, session: str, name: str):
    return page.locator(f'article[data-name="{session}"] li[data-name="{name}"]')


# A batch's (finished count, state) as the page shows them at one moment; null before it appears.
SESSION_PROGRESS = """name => {
    const batch = document.querySelector(`article[data-name="${name}"]`);
    return batch && [batch.querySelector("summary").getAttribute("data-finished"), batch.getAttribute("data-state")];
}"""


def test_a_colleague_uploads_follows_fixes_retries_downloads_and_cancels(tmp_path, browser):
    root = tmp_path / "root"
    shoot = tmp_path / "upload" / "catalog"
    names = photos_folder(shoot, 5, 400)
    (shoot / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not a whole JPEG")
    with Daemon(root, fake_jobs=False, session_idle_seconds=2) as daemon, WebPage(root) as web:
        page = browser.new_page(viewport=DESK)
        page.goto(web.url)
        page.evaluate("window.loadedOnce = true")  # gone if the page ever reloads
        assert "is running" in page.locator("#daemon").inner_text()

        # -- a folder through the drop zone --------------------------------------------------
        page.locator("#drop").focus()
        page.set_input_files("#choose-folder", str(shoot))
        wait_for(lambda: "Uploaded 6 photos" in page.locator("#upload-status").inner_text(), what="upload done")
        session = page.locator('article[data-name="catalog"]')
        seen = set()

        def complete() -> bool:
            # Both attributes from one look at the page: read in two calls, an update
            # between them could pair a count with a later state and hide a step.
            now = page.evaluate(SESSION_PROGRESS, "catalog")
            if now is not None:
                seen.add(tuple(now))
            return now is not None and now[1] == "complete"

        wait_for(complete, timeout=120, interval=0.1, what="catalog complete on the page")
        assert len(seen) >= 2, f"the page never showed the batch advancing: {seen}"
        assert ("6", "complete") in seen
        assert page.evaluate("window.loadedOnce") is True, "the page reloaded"
        assert session.locator("summary").get_attribute("data-total") == "6"
        wait_for(lambda: session.locator("img.after").count() == 5, what="five cutouts shown")
        shot(page, tmp_path, "web-page")

        # -- the broken file: its reason, a good file in its place, Retry from the keyboard ----
        broken = item(page, "catalog", "broken.jpg")
        error = broken.locator(".error").inner_text()
        assert error == next(i["error"] for i in daemon.status("catalog")["items"] if i["name"] == "broken.jpg")
        assert error and "broken.jpg" not in error
        good = tmp_path / "fixed" / "broken.jpg"
        good.parent.mkdir()
        shutil.copy(shoot / names[0], good)
        item_id = broken.get_attribute("id").removeprefix("item-")
        page.set_input_files(f"#fix-{item_id}", str(good))
        page.locator(f"#retry-{item_id}").focus()
        page.keyboard.press("Enter")
        wait_for(lambda: broken.get_attribute("data-status") == "done", timeout=60, what="broken.jpg done")
        wait_for(
            lambda: (
                session.get_attribute("data-state") == "complete"
                and session.locator("summary").get_attribute("data-counts").count('"done": 6')
            ),
            timeout=60,
            what="catalog complete again",
        )
        wait_for(lambda: broken.locator("img.after").count() == 1, what="its cutout shown")

        # -- the ZIP ----------------------------------------------------------------------
        with page.expect_download() as download:
            page.locator("#download-catalog").click()
        saved = tmp_path / "catalog.zip"
        download.value.save_as(saved)
        with zipfile.ZipFile(saved) as archive:
            members = sorted(archive.namelist())
            assert members == sorted([n.replace(".jpg", ".png") for n in names] + ["broken.png"])
            with archive.open("broken.png") as cutout, Image.open(cutout) as image:
                assert image.mode == "RGBA" and image.size == Image.open(shoot / names[0]).size

        # -- a second batch, cancelled while it runs ---------------------------------------------
        second = tmp_path / "upload2" / "lookbook"
        photos_folder(second, 12, 1600)
        page.set_input_files("#choose-folder", str(second))
        running = page.locator('article[data-name="lookbook"]')
        wait_for(lambda: running.locator("#cancel-lookbook").count() == 1, timeout=60, what="lookbook's Cancel")
        wait_for(
            lambda: running.locator('li[data-status="done"], li[data-status="processing"]').count() >= 1,
            timeout=60,
            what="lookbook under way",
        )
        page.once("dialog", lambda dialog: dialog.accept())
        running.locator("#cancel-lookbook").click()  # at once: most of its twelve photos are still to come
        wait_for(lambda: running.get_attribute("data-state") == "complete", timeout=60, what="lookbook finished")
        page.set_viewport_size(PHONE)
        shot(page, tmp_path, "web-phone")
        statuses = [li.get_attribute("data-status") for li in running.locator("li").all()]
        assert statuses.count("cancelled") >= 6, statuses
        assert set(statuses) <= {"done", "cancelled"}, statuses
        assert running.locator("#cancel-lookbook").count() == 0
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth"), (
            "no sideways scrolling on a phone"
        )
        assert page.evaluate("window.loadedOnce") is True
