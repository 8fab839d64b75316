"""A retry marker that holds a file: the item runs again on that file, the user's fixed original."""

from __future__ import annotations

import os

from tests.support.harness import Daemon, drop, wait_for


def put_marker(root, session: str, name: str, content: bytes) -> None:
    """As the web page does: written under a dot-name beside the marker, then renamed to it."""
    marker = root / "retry" / session / name
    marker.parent.mkdir(parents=True, exist_ok=True)
    temp = marker.with_name(".being-written")
    temp.write_bytes(content)
    os.rename(temp, marker)


def test_a_retry_marker_with_content_replaces_the_original_and_the_item_is_done(tmp_path):
    root = tmp_path / "root"
    with Daemon(root) as daemon:
        drop(root / "inbox", "shoot/good.jpg", "ok")
        drop(root / "inbox", "shoot/broken.jpg", "bad-input")
        assert daemon.wait_complete("shoot")["counts"]["failed"] == 1
        put_marker(root, "shoot", "broken.jpg", b"ok, fixed")
        wait_for(
            lambda: (
                daemon.status("shoot")["counts"]["done"] == 2
                and daemon.status("shoot")["zip"]
                and daemon.status("shoot")["state"] == "complete"
            ),
            what="the fixed item done",
        )
        assert daemon.zip_members("shoot")["broken.png"] == b"cutout of ok, fixed"
        assert daemon.events("original_replaced")[0]["item"] == "broken.jpg"
        assert not (root / "retry" / "shoot" / "broken.jpg").exists(), "the marker is used up"
        assert (root / "archive" / "shoot" / "broken.jpg").read_bytes() == b"ok, fixed"


def test_a_marker_still_being_written_under_a_dot_name_is_left_alone(tmp_path):
    root = tmp_path / "root"
    with Daemon(root) as daemon:
        drop(root / "inbox", "shoot/broken.jpg", "bad-input")
        daemon.wait_complete("shoot")
        half = root / "retry" / "shoot" / ".half-written"
        half.write_bytes(b"ok")
        touched = root / "retry" / "shoot" / "broken.jpg"
        touched.touch()  # an empty marker: a plain retry, on the same original, which fails again
        wait_for(
            lambda: (
                daemon.status("shoot")["items"][0]["attempts"] == 2 and daemon.status("shoot")["state"] == "complete"
            ),
            what="the plain retry",
        )
        assert daemon.status("shoot")["counts"]["failed"] == 1
        assert half.read_bytes() == b"ok", "a dot-name is never read as a marker"
        assert not daemon.events("retry_marker_ignored")


def test_a_symlinked_retry_marker_is_a_plain_retry_and_never_followed(tmp_path):
    root = tmp_path / "root"
    elsewhere = tmp_path / "elsewhere.jpg"
    elsewhere.write_bytes(b"ok, from outside the root")
    with Daemon(root) as daemon:
        drop(root / "inbox", "shoot/broken.jpg", "bad-input")
        daemon.wait_complete("shoot")
        (root / "retry" / "shoot" / "broken.jpg").symlink_to(elsewhere)
        wait_for(
            lambda: (
                daemon.status("shoot")["items"][0]["attempts"] == 2 and daemon.status("shoot")["state"] == "complete"
            ),
            what="the retry",
        )
        assert daemon.status("shoot")["counts"]["failed"] == 1, "the link's target was not taken as the original"
        assert not daemon.events("original_replaced")
