"""The review of done items, through the folder contract: quality signals in the status JSON, and a person's decisions.

Fake jobs raise the signals (`flag CODE` in the dropped file, while edges is
raw); `bgremover review` writes the markers and the real daemon reads them.
"""

from __future__ import annotations

import json

from tests.support.cli import cli
from tests.support.harness import Daemon, drop, wait_for


def item(daemon: Daemon, session: str, name: str) -> dict:
    return next(entry for entry in daemon.status(session)["items"] if entry["name"] == name)


def settled(daemon: Daemon, session: str, check) -> dict:
    """Wait until the session is complete again and `check(its status)` holds; the status."""
    wait_for(
        lambda: (doc := daemon.status(session))["state"] == "complete" and check(doc),
        what=f"{session} complete again",
    )
    return daemon.status(session)


def test_a_flagged_item_is_done_with_its_reasons_and_listed_for_review(tmp_path):
    root = tmp_path / "root"
    with Daemon(root) as daemon:
        drop(root / "inbox", "shoot/empty.jpg", "flag no_subject")
        drop(root / "inbox", "shoot/good.jpg", "ok")
        doc = daemon.wait_complete("shoot")
        assert doc["counts"]["done"] == 2, "a flagged item stays done"
        flagged = item(daemon, "shoot", "empty.jpg")
        assert flagged["review"]["state"] == "flagged"
        assert [reason["code"] for reason in flagged["review"]["reasons"]] == ["no_subject"]
        assert item(daemon, "shoot", "good.jpg")["review"] is None
        assert doc["review"]["flagged"] == 1 and doc["review"]["signals"]["no_subject"] == 1
        assert sorted(daemon.zip_members("shoot")) == ["empty.png", "good.png"], "the ZIP's layout is unchanged"
        finished = [event for event in daemon.events("job_finished") if event["item"] == "empty.jpg"]
        assert finished[0]["review"] == ["no_subject"]

        status = cli("status", "--root", root)
        assert "empty.jpg" in status.stdout and "no_subject was raised" in status.stdout
        assert "good.jpg" not in status.stdout
        [shown] = json.loads(cli("status", "--json", "--root", root).stdout)["sessions"]
        assert [entry["name"] for entry in shown["flagged"]] == ["empty.jpg"]
        assert shown["flagged"][0]["review"]["reasons"][0]["code"] == "no_subject"
        listed = cli("review", "list", "--json", "--root", root)
        assert [(entry["session"], entry["name"]) for entry in json.loads(listed.stdout)] == [("shoot", "empty.jpg")]


def test_approve_retry_and_mask_each_show_in_the_zip_and_the_json(tmp_path):
    root = tmp_path / "root"
    mask = tmp_path / "mask.png"
    mask.write_bytes(b"drawn by hand")
    with Daemon(root, keep_originals="false") as daemon:
        for name in ("a.jpg", "b.jpg", "c.jpg"):
            drop(root / "inbox", f"shoot/{name}", "flag several_subjects")
        assert daemon.wait_complete("shoot")["review"]["flagged"] == 3

        assert cli("review", "approve", "shoot", "a.jpg", "--by", "ann", "--root", root).returncode == 0
        assert (
            cli("review", "retry", "shoot", "b.jpg", "--edges", "clean", "--by", "bo", "--root", root).returncode == 0
        )
        assert cli("review", "mask", "shoot", "c.jpg", mask, "--root", root).returncode == 0

        doc = settled(daemon, "shoot", lambda doc: doc["review"]["flagged"] == 0 and doc["counts"]["done"] == 3)
        approved, retried, corrected = (item(daemon, "shoot", name) for name in ("a.jpg", "b.jpg", "c.jpg"))
        assert approved["review"]["state"] == "approved"
        assert approved["review"]["decisions"][0]["by"] == "ann" and approved["review"]["decisions"][0]["at"]
        assert retried["review"]["state"] == "clean", "run again with other edges, it raised nothing"
        assert retried["review"]["decisions"][0]["options"] == {"edges": "clean"}
        assert retried["options"] == {"edges": "clean"} and retried["attempts"] == 2
        assert corrected["review"]["state"] == "corrected" and corrected["attempts"] == 2
        assert doc["review"]["approved"] == 1 and doc["review"]["corrected"] == 1

        members = daemon.zip_members("shoot")
        assert members["a.png"] == b"cutout of flag several_subjects (model u2netp, edges raw)"
        assert members["b.png"] == b"cutout of flag several_subjects (model u2netp, edges clean)"
        assert members["c.png"].endswith(b"with the mask drawn by hand")
        assert not list((root / "review").rglob("*.jpg")), "every marker is used up"
        wait_for(lambda: not list((root / "state" / "originals").iterdir()), what="the originals deleted once decided")


def test_review_folder_puts_flagged_outputs_under_review_until_approved(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, review_folder="true") as daemon:
        drop(root / "inbox", "shoot/cut.jpg", "flag cut_by_frame")
        drop(root / "inbox", "shoot/good.jpg", "ok")
        daemon.wait_complete("shoot")
        assert sorted(daemon.zip_members("shoot")) == ["_review/cut.png", "good.png"]
        assert item(daemon, "shoot", "cut.jpg")["output"] == "_review/cut.png"

        assert cli("review", "approve", "shoot", "cut.jpg", "--root", root).returncode == 0
        settled(daemon, "shoot", lambda doc: doc["review"]["approved"] == 1)
        wait_for(lambda: sorted(daemon.zip_members("shoot")) == ["cut.png", "good.png"], what="the ZIP rewritten")
        assert item(daemon, "shoot", "cut.jpg")["output"] == "cut.png"
        assert item(daemon, "shoot", "cut.jpg")["review"]["decisions"][0]["by"] is None


def test_what_cannot_be_reviewed_is_refused_by_the_command_and_ignored_by_the_daemon(tmp_path):
    root = tmp_path / "root"
    with Daemon(root) as daemon:
        drop(root / "inbox", "shoot/broken.jpg", "bad-input")
        drop(root / "inbox", "shoot/empty.jpg", "flag no_subject")
        daemon.wait_complete("shoot")

        refused = cli("review", "approve", "shoot", "broken.jpg", "--root", root)
        assert refused.returncode == 1 and "only a done item can be reviewed" in refused.stderr
        unknown = cli("review", "retry", "shoot", "empty.jpg", "--set", "edges=sharp", "--root", root)
        assert unknown.returncode == 1 and "edges" in unknown.stderr
        no_model = cli("review", "retry", "shoot", "empty.jpg", "--model", "nosuchmodel", "--root", root)
        assert no_model.returncode == 1 and "nosuchmodel" in no_model.stderr
        assert not list((root / "review").rglob("*.jpg")), "nothing refused was written"

        # Written by hand, past the command's checks: the daemon says why in its log and changes nothing.
        (root / "review" / "approve" / "shoot").mkdir(parents=True, exist_ok=True)
        (root / "review" / "approve" / "shoot" / "broken.jpg").write_text("{}")
        (root / "review" / "approve" / "shoot" / "ghost.jpg").write_text("{}")
        wait_for(lambda: len(daemon.events("review_marker_ignored")) == 2, what="both markers ignored")
        reasons = sorted(event["reason"] for event in daemon.events("review_marker_ignored"))
        assert reasons == ["item is failed", "no such item"]
        assert item(daemon, "shoot", "empty.jpg")["review"]["state"] == "flagged"
        assert not (root / "review" / "approve" / "shoot").exists(), "the session's marker folder is tidied away"


def test_a_review_marker_that_is_a_link_is_never_followed(tmp_path):
    root = tmp_path / "root"
    elsewhere = tmp_path / "elsewhere.json"
    elsewhere.write_text('{"by": "someone outside the root"}')
    with Daemon(root) as daemon:
        drop(root / "inbox", "shoot/empty.jpg", "flag no_subject")
        daemon.wait_complete("shoot")
        (root / "review" / "approve" / "shoot").mkdir(parents=True, exist_ok=True)
        (root / "review" / "approve" / "shoot" / "empty.jpg").symlink_to(elsewhere)
        (root / "review" / "retry" / "shoot").mkdir(parents=True, exist_ok=True)
        (root / "review" / "retry" / "shoot" / "empty.jpg").symlink_to(tmp_path / "nothing-here")
        wait_for(lambda: len(daemon.events("review_marker_ignored")) == 2, what="both links ignored")
        assert item(daemon, "shoot", "empty.jpg")["review"]["state"] == "flagged"
        assert elsewhere.read_text() == '{"by": "someone outside the root"}'
        assert daemon.process.poll() is None, "the daemon runs on"
