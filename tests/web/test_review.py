"""The review view in a real browser, on a real daemon (fake jobs that raise quality signals) and page.

A batch of five photos, three flagged: the review view lists those three
first with their reasons; one is approved, one rejected and run again with
another installed model, one fixed by uploading a mask. The batch's ZIP and
status JSON then say all three decisions.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from pathlib import Path

from PIL import Image

from tests.conftest import REPO
from tests.support.harness import Daemon, drop, wait_for
from tests.support.images import photo
from tests.support.screenshots import shot
from tests.support.web import WebPage

DESK = {"width": 1280, "height": 900}
SECOND_MODEL = "u2netp-second"


def install_second_model(root: Path) -> None:
    """The bundled model again under another name, in the root's models folder: a second installed model."""
    bundled = json.loads((REPO / "models" / "manifest.json").read_text())["u2netp"]
    folder = root / "models"
    folder.mkdir(parents=True)
    shutil.copy(REPO / "models" / bundled["file"], folder / "second.onnx")
    (folder / "manifest.json").write_text(json.dumps({SECOND_MODEL: {**bundled, "file": "second.onnx"}}))


def entry(daemon: Daemon, name: str) -> dict:
    return next(item for item in daemon.status("shoot")["items"] if item["name"] == name)


def message_says(page, text: str, what: str, timeout: float = 90) -> None:
    """Wait for the page's message to say `text`; on timeout, say what it said instead."""
    try:
        wait_for(lambda: text in page.locator("#message").inner_text(), what=what, timeout=timeout)
    except AssertionError as waited:
        raise AssertionError(f"{waited}; the message said {page.locator('#message').inner_text()!r}") from None


def test_a_reviewer_approves_one_reruns_one_with_another_model_and_fixes_one_with_a_mask(tmp_path, browser):
    root = tmp_path / "root"
    install_second_model(root)
    mask = tmp_path / "mask.png"
    mask.write_bytes(b"drawn by hand")
    with Daemon(root) as daemon, WebPage(root) as web:
        for name, content in [
            ("good-1.jpg", "ok"),
            ("several.jpg", "flag several_subjects"),
            ("empty.jpg", "flag no_subject"),
            ("good-2.jpg", "ok"),
            ("cut.jpg", "flag cut_by_frame"),
        ]:
            drop(root / "inbox", f"shoot/{name}", content)
        daemon.wait_complete("shoot")
        page = browser.new_page(viewport=DESK)
        page.goto(web.url)
        link = page.locator("#review-shoot")
        wait_for(lambda: link.count() == 1 and "(3 flagged)" in link.inner_text(), what="the review link")
        link.click()
        page.wait_for_url("**/review/shoot")

        # -- flagged first, each with its reason and a large before/after ------------------------
        reviews = page.locator("li.review")
        order = [li.get_attribute("data-name") for li in reviews.all()]
        assert order == ["cut.jpg", "empty.jpg", "several.jpg", "good-1.jpg", "good-2.jpg"], order
        assert [li.get_attribute("data-review") for li in reviews.all()] == ["flagged"] * 3 + [""] * 2
        assert "no_subject was raised" in page.locator('li[data-name="empty.jpg"] .reasons').inner_text()

        def item_id(name: str) -> str:
            return page.locator(f'li.review[data-name="{name}"]').get_attribute("id").removeprefix("review-")

        several, empty, cut = item_id("several.jpg"), item_id("empty.jpg"), item_id("cut.jpg")
        # -- approve one ------------------------------------------------------------------
        page.get_by_role("button", name="Approve several.jpg of shoot").click()
        wait_for(lambda: "Approved several.jpg" in page.locator("#message").inner_text(), what="approved")
        # -- reject one and run it again with the other model --------------------------------
        page.locator(f"#reject-{empty} summary").click()
        page.select_option(f"#model-{empty}", SECOND_MODEL)
        page.locator(f"#rerun-{empty}").click()
        message_says(page, "Running empty.jpg again", what="rerun asked")
        # -- reject one and give it a corrected mask -----------------------------------------
        page.locator(f"#reject-{cut} summary").click()
        page.set_input_files(f"#mask-{cut}", str(mask))
        page.locator(f"#use-mask-{cut}").click()
        message_says(page, "your mask", what="mask sent")

        # -- the JSON and the ZIP say all three ---------------------------------------------
        wait_for(
            lambda: (
                (doc := daemon.status("shoot"))["state"] == "complete"
                and entry(daemon, "empty.jpg")["attempts"] == 2
                and entry(daemon, "cut.jpg")["attempts"] == 2
                and doc["review"]["approved"] == 1
            ),
            timeout=60,
            what="shoot complete with the three decisions",
        )
        assert entry(daemon, "several.jpg")["review"]["state"] == "approved"
        rerun = entry(daemon, "empty.jpg")
        assert rerun["options"] == {"model": SECOND_MODEL}
        assert rerun["review"]["decisions"][0]["decision"] == "retried"
        assert entry(daemon, "cut.jpg")["review"]["state"] == "corrected"
        page.goto(web.url)
        wait_for(lambda: page.locator("#download-shoot").count() == 1, what="the new ZIP offered")
        with page.expect_download() as download:
            page.locator("#download-shoot").click()
        saved = tmp_path / "shoot.zip"
        download.value.save_as(saved)
        with zipfile.ZipFile(saved) as archive:
            members = {name: archive.read(name) for name in archive.namelist()}
        assert sorted(members) == ["cut.png", "empty.png", "good-1.png", "good-2.png", "several.png"]
        assert members["several.png"] == b"cutout of flag several_subjects (model u2netp, edges raw)"
        assert members["empty.png"] == f"cutout of flag no_subject (model {SECOND_MODEL}, edges raw)".encode()
        assert members["cut.png"].endswith(b"with the mask drawn by hand")

        # -- the review view shows each decision -------------------------------------------
        page.goto(f"{web.url}/review/shoot")
        assert page.locator(f"#review-{several} .verdict").inner_text().startswith("Approved")
        assert page.locator(f"#review-{cut} .verdict").inner_text().startswith("Corrected with a mask")
        assert page.locator(f"#approve-{several}").count() == 0, "an approved photo is not offered for approval"


def large_photo(name: str, folder: Path, box: tuple[int, int, int, int] | None = None, twice: bool = False) -> None:
    """A shipped photo at 1600 px (cropped to `box` first, or beside itself): large enough for the review's pictures."""
    with Image.open(photo(name.removesuffix(".jpg"))) as original:
        image = original.convert("RGB")
    if box:
        image = image.crop(box)
    if twice:
        pair = Image.new("RGB", (image.width * 2, image.height), image.getpixel((0, 0)))
        pair.paste(image, (0, 0))
        pair.paste(image, (image.width, 0))
        image = pair
    scale = 1600 / max(image.size)
    image.resize((round(image.width * scale), round(image.height * scale)), Image.LANCZOS).save(
        folder / name, quality=92
    )


def test_a_card_is_not_redrawn_under_the_reviewers_hand_and_keeps_the_model_and_mask_chosen(tmp_path, browser):
    root = tmp_path / "root"
    install_second_model(root)
    mask = tmp_path / "mask.png"
    mask.write_bytes(b"drawn by hand")
    with Daemon(root) as daemon, WebPage(root) as web:
        drop(root / "inbox", "shoot/empty.jpg", "flag no_subject")
        daemon.wait_complete("shoot")
        page = browser.new_page(viewport=DESK)
        page.goto(f"{web.url}/review/shoot")
        card = page.locator("li.review[data-name='empty.jpg']")
        item = card.get_attribute("id").removeprefix("review-")
        page.locator(f"#reject-{item} summary").click()
        page.select_option(f"#model-{item}", SECOND_MODEL)
        page.set_input_files(f"#mask-{item}", str(mask))
        # The page takes the card's next HTML for a change (as when its batch's ZIP is rebuilt), but holds it
        # while the reviewer's form is open: several live refreshes later it is the same card, as chosen.
        drawn = card.element_handle()
        page.evaluate("id => seen.set(id, '')", f"review-{item}")
        page.wait_for_timeout(3500)  # the page refreshes every second
        assert drawn.evaluate("e => e.isConnected"), "the card was redrawn under the reviewer's hand"
        assert page.locator(f"#model-{item}").input_value() == SECOND_MODEL
        assert page.locator(f"#mask-{item}").evaluate("i => Array.from(i.files, f => f.name)") == ["mask.png"]
        page.locator(f"#rerun-{item}").click()
        message_says(page, f"Running empty.jpg again with model {SECOND_MODEL}", what="rerun asked")
        # Sent: the form closes and the card is redrawn with what became of it.
        wait_for(lambda: not drawn.evaluate("e => e.isConnected"), what="the card redrawn once the rerun was sent")
        assert page.locator(f"#reject-{item}").evaluate("d => d.open") is False


def test_the_review_view_on_real_cutouts_large_zoomable_over_each_backdrop(tmp_path, browser):
    """Real photos and the real model; the screenshots of docs/web.md (BGREMOVER_TEST_SCREENSHOTS=docs/web)."""
    root, shoot = tmp_path / "root", tmp_path / "up" / "shoot"
    shoot.mkdir(parents=True)
    large_photo("coffee.jpg", shoot)
    large_photo("astronaut.jpg", shoot, box=(0, 120, 260, 400))  # the subject cut by the photo's edges
    Image.new("RGB", (1600, 1200), (236, 236, 232)).save(shoot / "empty.jpg")  # nothing in it
    with Daemon(root, fake_jobs=False) as daemon, WebPage(root) as web:
        for path in sorted(shoot.iterdir()):
            drop(root / "inbox", f"shoot/{path.name}", path.read_bytes())
        status = daemon.wait_complete("shoot", timeout=180)
        flagged = [i["name"] for i in status["items"] if i["review"] and i["review"]["state"] == "flagged"]
        assert "empty.jpg" in flagged, status["items"]
        page = browser.new_page(viewport={"width": 1280, "height": 1060})  # the first photo whole, with its buttons
        page.goto(f"{web.url}/review/shoot")
        order = [li.get_attribute("data-name") for li in page.locator("li.review").all()]
        assert order[: len(flagged)] == sorted(flagged, key=str.lower), order
        after = page.locator('li[data-name="coffee.jpg"] img.after')
        wait_for(lambda: after.evaluate("i => i.complete && i.naturalWidth > 0"), what="the large cutout", timeout=90)
        assert after.evaluate("i => Math.max(i.naturalWidth, i.naturalHeight)") >= 1024
        shot(page, tmp_path, "web-review")
        page.locator('input[name="backdrop"][value="black"]').check()
        assert page.evaluate("document.body.classList.contains('backdrop-black')")
        assert after.evaluate("i => getComputedStyle(i).backgroundColor") == "rgb(0, 0, 0)"
        page.locator('input[name="backdrop"][value="white"]').check()
        assert after.evaluate("i => getComputedStyle(i).backgroundColor") == "rgb(255, 255, 255)"
        page.locator('input[name="backdrop"][value="black"]').check()
        zoom = page.get_by_role("button", name="Zoom the cutout of coffee.jpg")
        zoom.click()
        assert zoom.get_attribute("aria-pressed") == "true"
        assert after.evaluate("i => i.getBoundingClientRect().width") == after.evaluate("i => i.naturalWidth")
        # At full size, the saucer's rim and the spoon: where an edge is judged.
        figure = page.locator('li[data-name="coffee.jpg"] figure.zoomed')
        figure.evaluate("f => { f.scrollIntoView(); f.scrollTo(f.scrollWidth * 0.45, f.scrollHeight * 0.4); }")
        shot(page, tmp_path, "web-review-zoomed", top=False)
