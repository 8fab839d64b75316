"""The disk misbehaves under a running daemon, and nothing is lost or failed for it.

The contract: when the outbox or the state folder fills up or turns read-only,
the daemon keeps its state, logs one clear error, tries again with a growing
wait, and finishes every session once the disk takes writes again. No image is
ever marked failed because of the disk. Each test mounts a real small tmpfs
(tests/support/disks.py), fills it or remounts it read-only, then gives the space back.
Real job processes and the bundled model, on small images.
"""

from __future__ import annotations

import io
import os
import sqlite3
import time
import zipfile
from pathlib import Path

import pytest
import structlog
from PIL import Image

from bgremover.backoff import FIRST_DELAY_SECONDS
from bgremover.models.manifest import load_model_spec
from bgremover.queue.states import SessionState, Status
from bgremover.settings import load_settings
from bgremover.supervisor.loop import Supervisor
from tests.support import fakerunner
from tests.support.disks import fill, set_immutable, set_read_only, small_tmpfs
from tests.support.harness import Daemon, drop, wait_for
from tests.support.images import encoded, shape_on_texture

NAMES = ("a.png", "b.png", "c.png")
# Real jobs, so a job that cannot write its result exits as the real one does.
SLOW = {"fake_jobs": False, "job_timeout_seconds": 120, "session_idle_seconds": 1}

fakerunner.register()


def image_bytes(seed: int) -> bytes:
    return encoded(shape_on_texture((64, 48), seed=seed)[0], "PNG")


def drop_catalog(root: Path, folder: str = "catalog") -> None:
    for seed, name in enumerate(NAMES):
        drop(root / "inbox", f"{folder}/{name}", image_bytes(seed))


def database_items(root: Path) -> dict[str, str]:
    """Item name -> status, straight from the database, as a reader beside the daemon sees it."""
    db = sqlite3.connect(f"file:{root / 'state' / 'bgremover.sqlite3'}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT name, status FROM items ORDER BY id").fetchall())
    except sqlite3.OperationalError:  # not made yet
        return {}
    finally:
        db.close()


def assert_everything_done(daemon: Daemon, session: str = "catalog") -> None:
    status = daemon.wait_complete(session, timeout=120)
    assert status["counts"]["done"] == len(NAMES) and status["counts"]["failed"] == 0, status
    members = daemon.zip_members(session)
    assert sorted(members) == sorted(NAMES)
    for data in members.values():
        assert Image.open(io.BytesIO(data)).mode == "RGBA"
    assert all(status == "done" for status in database_items(daemon.root).values())


def failed_events(daemon: Daemon) -> list[dict]:
    return [event for event in daemon.events("job_finished") if event["status"] == "failed"]


# -- the outbox ------------------------------------------------------------------


@pytest.mark.parametrize("trouble", ["full", "read-only"])
def test_an_outbox_that_refuses_writes_delays_the_zip_and_fails_nothing(tmp_path, trouble):
    root = tmp_path / "root"
    with small_tmpfs(root / "outbox", size_kb=512) as outbox:
        daemon = Daemon(root, **SLOW)
        with daemon:
            filler = fill(outbox) if trouble == "full" else None
            if trouble == "read-only":
                set_read_only(outbox, True)
            drop_catalog(root)

            # The jobs run (their results go to the state folder); only the outbox waits.
            wait_for(lambda: list(database_items(root).values()) == ["done"] * 3, timeout=120, what="3 done")
            wait_for(lambda: daemon.events("outbox_unwritable"), what="the outbox error")
            assert not (outbox / "catalog.zip").exists()
            time.sleep(2)  # a few retries happen meanwhile

            if filler:
                filler.unlink()
            else:
                set_read_only(outbox, False)
            assert_everything_done(daemon)

        [error] = daemon.events("outbox_unwritable")  # one line for the whole outage
        reason = "No space left on device" if trouble == "full" else "Read-only file system"
        assert f"the outbox refused a write ({reason})" in error["error"]
        assert error["level"] == "error"
        assert daemon.events("outbox_writable_again")
        assert failed_events(daemon) == []
        assert not daemon.events("upkeep_failed")


# -- the state folder --------------------------------------------------------------


@pytest.mark.parametrize("trouble", ["full", "unwritable"])
def test_a_state_folder_that_refuses_writes_holds_the_queue_and_fails_nothing(tmp_path, trouble):
    # The whole root on one small disk: inbox, state, outbox and archive fill up together.
    root = tmp_path / "root"
    with small_tmpfs(root, size_kb=16 * 1024):
        daemon = Daemon(root, stable_seconds=2, **SLOW)
        with daemon:
            # The database stays open for writing, so the disk cannot be remounted
            # read-only under it: "unwritable" makes the folders the daemon fills immutable.
            locked = [root / "state" / "originals", root / "state" / "results"]
            drop_catalog(root)  # each file is renamed in, so it needs no new space
            if trouble == "full":
                filler = fill(root)
            else:
                set_immutable(locked, True)  # before the files hold still for stable_seconds

            wait_for(lambda: daemon.events("state_unwritable"), timeout=60, what="the state error")
            time.sleep(3)  # retries with backoff meanwhile
            assert set(database_items(root).values()) <= {"queued", "processing"}

            if trouble == "full":
                filler.unlink()
            else:
                set_immutable(locked, False)
            assert_everything_done(daemon)

        [error] = daemon.events("state_unwritable")
        reason = "full" if trouble == "full" else "Operation not permitted"
        assert "the state folder refused a write" in error["error"] and reason in error["error"], error
        assert "nothing is lost or failed" in error["error"]
        assert daemon.events("state_writable_again")
        assert failed_events(daemon) == []
        assert not daemon.events("upkeep_failed")
        assert not daemon.events("take_failed")


# -- a file that changes under the watcher ------------------------------------------


def test_a_file_removed_or_replaced_before_its_take_is_skipped_cleanly(tmp_path):
    root = tmp_path / "root"
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(b"not yours")
    with Daemon(root, stable_seconds=1.5) as daemon:
        inbox = root / "inbox"
        for name in ("gone.jpg", "linked.jpg", "rewritten.jpg", "kept.jpg"):
            drop(inbox, f"drop/{name}", b"ok")
        time.sleep(0.5)  # seen by the watcher, not yet stable
        (inbox / "drop" / "gone.jpg").unlink()
        (inbox / "drop" / "linked.jpg").unlink()
        os.symlink(outside, inbox / "drop" / "linked.jpg")
        drop(inbox, "drop/rewritten.jpg", b"ok, second version")

        status = daemon.wait_complete("drop")
        assert sorted(item["name"] for item in status["items"]) == ["kept.jpg", "rewritten.jpg"]
        members = daemon.zip_members("drop")
        assert members["rewritten.png"] == b"cutout of ok, second version"
        ignored = daemon.events("file_ignored")
        assert [(e["path"], e["reason"]) for e in ignored] == [(str(inbox / "drop" / "linked.jpg"), "symlink")]
        assert not daemon.events("take_failed") and not daemon.events("upkeep_failed")
        assert outside.read_bytes() == b"not yours"


# -- a write's answer that comes after the folder changed -----------------------


def supervisor_on(root: Path) -> Supervisor:
    """A real Supervisor driven step by step in this process, with an open session whose items are all done."""
    settings = load_settings(None, root=root, stable_seconds=0, runner=fakerunner.NAME, job_slots=1)
    daemon = Supervisor(settings, load_model_spec(settings.model, verify=False))
    daemon.open_folders()
    store, at = daemon.store, time.time()
    store.create_session("catalog", "catalog", "png", at)
    for name in NAMES:
        item = store.add_item("catalog", name, name, ".png", f"inbox/catalog/{name}".encode(), at)
        for status in (Status.PROCESSING, Status.DONE):
            item = store.transition(item.id, item.status, status, at)
        daemon.spool.result(item, ".png").write_bytes(image_bytes(item.id))
    return daemon


def test_a_zip_refused_before_the_outbox_took_writes_again_starts_no_second_outage(tmp_path):
    # A ZIP build runs on its own thread: the outbox can take writes again between its start
    # and the pass that collects its refusal. That old refusal says nothing about the outbox now.
    root = tmp_path / "root"
    with small_tmpfs(root / "outbox", size_kb=512) as outbox, structlog.testing.capture_logs() as logs:
        daemon = supervisor_on(root)
        set_read_only(outbox, True)
        daemon.sessions.close_session(daemon.store.session("catalog"), "idle")  # its JSON refused: the outage begins
        time.sleep(FIRST_DELAY_SECONDS)
        daemon.sessions.finish_sessions(time.monotonic())  # due again: the build starts, and is refused
        daemon.builder.wait()

        set_read_only(outbox, False)
        daemon.publisher.flush_outbox(time.monotonic())  # the status JSON is written: the outage ends
        daemon.sessions.finish_sessions(time.monotonic())  # collects the old refusal, and builds again
        daemon.builder.wait()
        daemon.sessions.finish_sessions(time.monotonic())

        said = [line["event"] for line in logs if line["event"].startswith("outbox_") and line["log_level"] != "debug"]
        assert said == ["outbox_unwritable", "outbox_writable_again"], logs
        assert daemon.store.session("catalog").state is SessionState.COMPLETE
        assert sorted(zipfile.ZipFile(outbox / "catalog.zip").namelist()) == sorted(NAMES)
        daemon.store.close()
