"""Images above max_megapixels: reduced to fit with a note saying so (large_images = "reduce", the default), or
refused with one sentence (large_images = "refuse").

The limit is set far below the test images' size, so small images exercise it
fast: in matting.decode, in the job process, and in a real daemon with the real model.
"""

from __future__ import annotations

import io
import zipfile

from PIL import Image

from tests.support.harness import Daemon, drop, wait_for
from tests.support.images import photo
from tests.support.large_images import COFFEE, assert_fits, assert_note

# ---------------------------------------------------------------- end to end


def wait_complete(daemon: Daemon, session: str) -> dict:
    """The session's status once complete; a step of the daemon's loop that failed meanwhile fails the test at once."""

    def complete_or_broken():
        status = daemon.status(session)
        return daemon.events("upkeep_failed") or (status and status["state"] == "complete" and status)

    done = wait_for(complete_or_broken, 120, what=f"{session} complete")
    for failed in daemon.events("upkeep_failed"):
        raise AssertionError(f"a step of the supervisor loop failed:\n{failed.get('exception', failed)}")
    return done


def test_the_daemon_reduces_a_large_image_and_says_so_in_the_status(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, fake_jobs=False, max_megapixels=0.05) as daemon:
        drop(root / "inbox", "large/coffee.jpg", photo("coffee").read_bytes())
        status = wait_complete(daemon, "large")

    item = status["items"][0]
    assert (item["status"], item["error"]) == ("done", None), item
    with zipfile.ZipFile(root / "outbox" / "large.zip") as archive:
        cutout = Image.open(io.BytesIO(archive.read("coffee.png")))
    assert_fits(cutout.size, COFFEE, 0.05)
    assert_note(item["note"], COFFEE, cutout.size, 0.05)


def test_the_daemon_refuses_a_large_image_when_told_to(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, fake_jobs=False, max_megapixels=0.05, large_images="refuse") as daemon:
        drop(root / "inbox", "large/coffee.jpg", photo("coffee").read_bytes())
        status = wait_complete(daemon, "large")

    item = status["items"][0]
    assert item["status"] == "failed", item
    assert "0.1 megapixels (400×267)" in item["error"] and "max_megapixels = 0.05" in item["error"], item
    assert (item["note"], item["retry_marker"]) == (None, "retry/large/coffee.jpg")
    assert (root / item["retry_marker"]).parent.is_dir()
    assert status["counts"]["failed"] == 1 and daemon.zip_members("large") == {}
