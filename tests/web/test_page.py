"""What the page says, checked against `bgremover status --json` and against the files it is made from."""

from __future__ import annotations

import html
import io
import json
import re
import shutil
import subprocess
import sys
import zipfile

from tests.conftest import REPO
from tests.support.harness import Daemon, drop, wait_for
from tests.support.images import photo
from tests.support.web import WebPage


def cli_status(root) -> dict:
    result = subprocess.run(
        [sys.executable, "-m", "bgremover", "status", "--json", "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def page_figures(fragment: str, session: str) -> dict:
    """The raw figures the page carries beside its text, for one session and for the daemon."""
    head = re.search(rf'<article[^>]*data-name="{re.escape(session)}".*?<summary([^>]*)>', fragment, re.S).group(1)
    daemon = re.search(r'<section id="daemon"([^>]*)>', fragment, re.S).group(1)

    def attribute(text: str, name: str):
        return json.loads(html.unescape(re.search(rf'{name}="([^"]*)"', text).group(1)))

    return {
        "total": attribute(head, "data-total"),
        "finished": attribute(head, "data-finished"),
        "counts": attribute(head, "data-counts"),
        "rate_per_s": attribute(head, "data-rate-per-s"),
        "eta_s": attribute(head, "data-eta-s"),
        "queued": attribute(daemon, "data-queued"),
        "processing": attribute(daemon, "data-processing"),
    }


def between(value: float, a: float, b: float, slack: float) -> bool:
    return min(a, b) - slack <= value <= max(a, b) + slack


def test_the_pages_figures_equal_bgremover_status_json_for_the_same_moment(tmp_path):
    root = tmp_path / "root"
    with Daemon(root) as daemon, WebPage(root) as web:
        for n in range(10):
            drop(root / "inbox", f"catalog/{n:02d}.jpg", "sleep 1.5")
        wait_for(
            lambda: (cli_status(root)["sessions"] or [{}])[0].get("finished", 0) >= 2,
            timeout=60,
            what="two items finished, so there is a rate",
        )
        compared = 0
        for _ in range(10):
            # The page's look is taken between the two commands' looks; with no item finished
            # between them, each figure lies between theirs (the rate falls as time passes).
            before, fragment, after = cli_status(root), web.get("/sessions")[2].decode(), cli_status(root)
            if before["sessions"][0]["counts"] != after["sessions"][0]["counts"]:
                continue
            cli, figures = before["sessions"][0], page_figures(fragment, "catalog")
            assert {k: figures[k] for k in ("total", "finished", "counts")} == {
                k: cli[k] for k in ("total", "finished", "counts")
            }
            assert (figures["queued"], figures["processing"]) == (before["queued"], before["processing"])
            assert between(
                figures["rate_per_s"], before["sessions"][0]["rate_per_s"], after["sessions"][0]["rate_per_s"], 1e-4
            )
            assert between(figures["eta_s"], before["sessions"][0]["eta_s"], after["sessions"][0]["eta_s"], 0.05)
            # The status document the page serves is the command's, by the same code.
            served = web.status()
            assert served["sessions"][0]["counts"].keys() == cli["counts"].keys()
            assert {k for k in served} == {k for k in before}
            compared += 1
            if compared == 3:
                break
        assert compared >= 1, "every look raced an item's finish"
        daemon.stop()
        wait_for(lambda: "is not running" in web.get("/sessions")[2].decode(), what="the page saying so")


def test_the_page_works_without_a_daemon_and_says_so(tmp_path):
    root = tmp_path / "fresh"
    with WebPage(root) as web:
        code, _, body = web.get("/")
        assert code == 200
        assert b"is not running" in body and b"No batches yet" in body
        assert web.status()["sessions"] == [] and web.status()["daemon"]["running"] is False
    assert not (root / "state" / "bgremover.sqlite3").exists(), "the page must never create the queue"


def test_older_complete_batches_are_a_page_away_and_a_page_must_be_a_number(root):
    """The worked root's one batch is complete and settled: it is on the newest page, and on no older one."""
    with WebPage(root) as web:
        newest = web.status()
        assert [s["name"] for s in newest["sessions"]] == ["shoot"] and newest["older_sessions"] == 0
        code, _, body = web.get("/api/status?page=1")
        assert code == 200 and json.loads(body)["sessions"] == [] and json.loads(body)["page"] == 1
        code, _, body = web.get("/sessions?page=1")
        assert code == 200 and b'data-name="shoot"' not in body and b'href="?page=0"' in body
        for bad in ("-1", "x", "1e3", "9" * 12):
            assert web.get(f"/api/status?page={bad}")[0] == 400, bad
            assert web.get(f"/?page={bad}")[0] == 400, bad


def test_an_item_whose_files_are_gone_shows_its_status_without_a_picture(root):
    shutil.rmtree(root / "archive")
    (root / "outbox" / "shoot.zip").unlink()
    shutil.rmtree(root / "state" / "results")  # the done cutout, kept there while the failed item may be retried
    with WebPage(root) as web:
        code, _, body = web.get("/sessions")
        assert code == 200
        assert b'class="before"' not in body and b'class="after"' not in body
        assert body.count(b"no picture") == 2 and b"Done" in body and b"Failed" in body
        assert b"Download ZIP" not in body
        for path in ("/thumbnails/1/before", "/thumbnails/1/after", "/download/shoot"):
            assert web.get(path)[0] == 404


def test_a_picture_is_made_once_small_and_cached_under_state(root):
    original = next((root / "archive" / "shoot").glob("ok.jpg"))
    shutil.copy(photo("astronaut"), original)
    with WebPage(root) as web:
        item = re.search(rb'id="item-(\d+)" data-name="ok.jpg"', web.get("/sessions")[2]).group(1).decode()
        code, headers, first = web.get(f"/thumbnails/{item}/before")
        assert code == 200 and headers["content-type"] == "image/webp"
        cached = list((root / "state" / "web" / "thumbnails").glob("*.webp"))
        assert len(cached) == 1
        made_at = cached[0].stat().st_mtime_ns
        assert web.get(f"/thumbnails/{item}/before")[2] == first
        assert cached[0].stat().st_mtime_ns == made_at, "served from the cache, not made again"
    from PIL import Image

    with Image.open(cached[0]) as picture:
        assert max(picture.size) == 256


def test_a_picture_whose_file_moved_on_is_made_from_where_it_went(root):
    # As if the session completed between choosing the files and reading them: the places a
    # file leaves (the store, the results) still hold a name, but nothing that reads as an image.
    from PIL import Image

    shutil.copy(photo("astronaut"), root / "archive" / "shoot" / "ok.jpg")
    cutout = io.BytesIO()
    Image.new("RGBA", (300, 200), (200, 40, 40, 128)).save(cutout, "PNG")
    with zipfile.ZipFile(root / "outbox" / "shoot.zip", "w") as archive:  # the fake job's cutout is no image
        archive.writestr("ok.png", cutout.getvalue())
    with WebPage(root) as web:
        item = re.search(rb'id="item-(\d+)" data-name="ok.jpg"', web.get("/sessions")[2]).group(1).decode()
        half_done = [root / "state" / "results" / f"{item}-1.png", root / "state" / "originals" / f"{item}.jpg"]
        for path in half_done:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"half a file")
        pictures = {kind: web.get(f"/thumbnails/{item}/{kind}") for kind in ("after", "before")}
        for path in half_done:
            path.unlink()
        for kind, mode in (("after", "RGBA"), ("before", "RGB")):
            code, headers, body = pictures[kind]
            assert code == 200 and headers["content-type"] == "image/webp", kind
            with Image.open(io.BytesIO(body)) as picture:
                assert picture.mode == mode, kind
            assert web.get(f"/thumbnails/{item}/{kind}")[2] == body, f"{kind}: not the ZIP's or the archive's picture"
