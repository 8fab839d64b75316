"""The upload marker: uploaded/ID lists an upload's inbox paths; once none is left in the inbox, the sessions they
joined close at once instead of after session_idle_seconds. Real daemon, fake jobs."""

from __future__ import annotations

import os
import time

from tests.support.harness import Daemon, drop, wait_for

IDLE = 600  # seconds: no session in these tests closes by the idle rule


def mark(root, name: str, lines: list[str]) -> None:
    """Written under a dot-name and renamed, as the page and the docs do it."""
    folder = root / "uploaded"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f".{name}").write_text("".join(f"{line}\n" for line in lines))
    os.rename(folder / f".{name}", folder / name)


def closed(daemon: Daemon) -> dict[str, str]:
    return {event["session"]: event["reason"] for event in daemon.events("session_closed")}


def test_a_marker_closes_the_folder_and_loose_sessions_its_files_joined_and_no_other(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, session_idle_seconds=IDLE) as daemon:
        drop(root / "inbox", "other/x.jpg", "ok")  # a folder no marker names: it waits for the idle rule
        wait_for(lambda: daemon.events("item_queued"), what="other's file taken")
        names = ["shoot/a.jpg", "shoot/deep/b.jpg", "loose.jpg"]
        for name in names:
            drop(root / "inbox", name, "ok")
        mark(root, "upload-1", names)  # once the files are in place, as the contract asks
        wait_for(lambda: len(closed(daemon)) == 2, what="the upload's two sessions closed")
        loose = next(name for name in closed(daemon) if name.startswith("batch-"))
        assert closed(daemon) == {"shoot": "uploaded", loose: "uploaded"}
        assert daemon.wait_complete("shoot")["total"] == 2 and daemon.wait_complete(loose)["total"] == 1
        assert not list((root / "uploaded").iterdir()), "the marker is removed once read"
        assert daemon.status("other")["state"] == "open"


def test_a_marker_whose_files_never_leave_the_inbox_expires_and_closes_nothing(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, session_idle_seconds=IDLE) as daemon:
        drop(root / "inbox", "shoot/a.jpg", "ok")
        wait_for(lambda: daemon.events("item_queued"), what="shoot's file taken")
        drop(root / "inbox", "shoot/.still-copying.jpg", "ok")  # a dot-name: intake never takes it
        mark(root, "stuck", ["shoot/.still-copying.jpg", "shoot/a.jpg"])
        long_ago = time.time() - 2 * 3600
        os.utime(root / "uploaded" / "stuck", (long_ago, long_ago))
        wait_for(lambda: daemon.events("upload_marker_expired"), what="the marker dropped")
        assert daemon.events("upload_marker_expired")[0]["waiting"] == 1
        assert not (root / "uploaded" / "stuck").exists()
        assert closed(daemon) == {} and daemon.status("shoot")["state"] == "open"
