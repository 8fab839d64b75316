"""Taking a dropped file: once it has left the inbox, it is the item's, whatever fails after the move.

A real Supervisor on a real temporary root and SQLite file, driven step by step
in this process (the jobs are the fake runner's, and none is started here).
Faults are injected where the operating system would raise them.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from pathlib import Path

import pytest
import structlog

from bgremover.models.manifest import load_model_spec
from bgremover.queue import spool as spoolmodule
from bgremover.queue.schema import ITEMS
from bgremover.queue.states import SessionState, Status
from bgremover.queue.store import IllegalTransition, Store
from bgremover.settings import load_settings
from bgremover.supervisor import taking
from bgremover.supervisor.loop import Supervisor
from bgremover.supervisor.taking import TAKES_PER_PASS
from tests.support import fakerunner

fakerunner.register()


@pytest.fixture
def daemon(tmp_path):
    settings = load_settings(
        None,
        root=tmp_path / "root",
        stable_seconds=0,
        session_idle_seconds=3600,
        job_module="tests.support.fakejob",
        runner=fakerunner.NAME,
        job_slots=1,
    )
    supervisor = Supervisor(settings, load_model_spec(settings.model, verify=False))
    supervisor.open_folders()
    supervisor.recovery.recover()
    with structlog.testing.capture_logs():
        yield supervisor
    supervisor.store.close()


def drop_and_take(daemon: Supervisor, name: str, content: bytes) -> None:
    path = daemon.settings.inbox / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    daemon.intake.rescan()
    daemon.taking.take_ready_files(time.monotonic())


def failing_fsync_of(folder: Path, monkeypatch) -> None:
    """fsync of `folder` fails with EIO, as a failing disk or a NAS that lost its server does."""
    honest = spoolmodule.fsync_folder

    def fsync_folder(path: Path) -> None:
        if Path(path) == folder:
            raise OSError(errno.EIO, os.strerror(errno.EIO), str(path))
        honest(path)

    monkeypatch.setattr(spoolmodule, "fsync_folder", fsync_folder)


def test_a_take_whose_folder_fsync_fails_after_the_move_keeps_its_item_and_file(daemon, monkeypatch):
    failing_fsync_of(daemon.spool.originals, monkeypatch)
    drop_and_take(daemon, "first.jpg", b"the first photo")
    monkeypatch.undo()

    [item] = daemon.store.items()
    assert item.status is Status.QUEUED, "the file has left the inbox: its item stays"
    assert daemon.spool.original(item).read_bytes() == b"the first photo"
    assert not (daemon.settings.inbox / "first.jpg").exists()


def test_an_item_id_is_never_used_again_so_a_later_file_never_lands_on_an_earlier_ones(daemon):
    drop_and_take(daemon, "first.jpg", b"the first photo")
    [first] = daemon.store.items()
    assert daemon.store.withdraw(first.id)  # as a take whose file vanished is undone
    drop_and_take(daemon, "second.jpg", b"the second photo")
    [second] = daemon.store.items()
    assert second.id > first.id


def test_a_queue_made_by_an_older_version_is_renumbered_once_and_keeps_its_items_and_rules(tmp_path):
    path = tmp_path / "queue.db"
    store = Store(path)
    store.create_session("shoot", "shoot", "png", 1.0)
    kept = store.add_item("shoot", "a.jpg", "a.png", ".jpg", b"inbox/shoot/a.jpg", 1.0)
    last = store.add_item("shoot", "b.jpg", "b.png", ".jpg", b"inbox/shoot/b.jpg", 1.0)
    store.close()
    older_items_table(path)  # as versions before AUTOINCREMENT made it, rows and all

    store = Store(path)
    assert [item.name for item in store.items()] == ["a.jpg", "b.jpg"]
    assert store.withdraw(last.id)
    again = store.add_item("shoot", "c.jpg", "c.png", ".jpg", b"inbox/shoot/c.jpg", 2.0)
    assert again.id > last.id, "the withdrawn last id came back"
    with pytest.raises(IllegalTransition):
        store.transition(kept.id, Status.QUEUED, Status.DONE, 3.0)  # the state table still holds
    store.close()


def older_items_table(path: Path) -> None:
    """Rebuild the items table without AUTOINCREMENT, keeping its rows."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN")
    db.execute(ITEMS.format(name="items_old").replace(" AUTOINCREMENT", ""))
    db.execute("INSERT INTO items_old SELECT * FROM items")
    db.execute("DROP TABLE items")
    db.execute("ALTER TABLE items_old RENAME TO items")
    db.execute("COMMIT")
    [sql] = db.execute("SELECT sql FROM sqlite_master WHERE name = 'items'").fetchone()
    assert "AUTOINCREMENT" not in sql
    db.close()


def test_a_name_windows_cannot_extract_keeps_its_name_and_gets_a_member_it_can(daemon):
    drop_and_take(daemon, "CON.jpg", b"a photo")
    [item] = daemon.store.items()
    assert (item.name, item.member) == ("CON.jpg", "CON_.png")


def test_a_wall_clock_step_closes_no_open_session(daemon, monkeypatch):
    drop_and_take(daemon, "shoot/a.jpg", b"a photo")
    [session] = daemon.store.sessions(SessionState.OPEN)
    stepped = time.time() + 10 * 3600  # NTP steps the wall clock hours ahead; the monotonic clock does not move
    monkeypatch.setattr(time, "time", lambda: stepped)

    daemon.sessions.close_idle_sessions(time.monotonic())
    assert daemon.store.session(session.name).state is SessionState.OPEN

    daemon.sessions.close_idle_sessions(time.monotonic() + daemon.settings.session_idle_seconds)
    assert daemon.store.session(session.name).state is SessionState.PROCESSING


def test_a_file_that_changed_after_it_was_seen_stable_is_not_taken_until_it_holds_still_again(daemon):
    path = daemon.settings.inbox / "growing.jpg"
    path.write_bytes(b"first half")
    daemon.intake.rescan()
    [ready] = daemon.intake.ready(time.monotonic())
    with open(path, "ab") as out:
        out.write(b", second half")

    assert daemon.taking.take(ready) is None
    assert path.exists() and daemon.store.items() == []
    daemon.taking.take_ready_files(time.monotonic())
    [item] = daemon.store.items()
    assert daemon.spool.original(item).read_bytes() == b"first half, second half"


def test_empty_folders_a_copy_made_after_the_last_take_are_kept_until_it_fills_them(daemon, monkeypatch):
    inbox = daemon.settings.inbox
    drop_and_take(daemon, "shoot/a.jpg", b"a photo")
    time.sleep(1.2)  # a copy (rsync) makes its folders first, after the files taken so far, then stalls
    (inbox / "shoot" / "day2" / "raw").mkdir(parents=True)
    idle = daemon.settings.session_idle_seconds
    daemon.sessions.close_idle_sessions(time.monotonic() + idle)
    assert daemon.store.sessions(SessionState.OPEN) == []
    later = time.time() + 3600
    monkeypatch.setattr(time, "time", lambda: later)
    daemon.sessions.close_idle_sessions(time.monotonic() + idle)
    monkeypatch.undo()

    assert (inbox / "shoot" / "day2" / "raw").is_dir(), "a folder the copy is about to fill was removed"
    drop_and_take(daemon, "shoot/day2/raw/b.jpg", b"the photo the copy wrote later")
    [_, item] = daemon.store.items()
    assert daemon.spool.original(item).read_bytes() == b"the photo the copy wrote later"


def test_a_folder_emptied_by_its_takes_is_removed_once_quiet(daemon, monkeypatch):
    inbox = daemon.settings.inbox
    drop_and_take(daemon, "album/x/a.jpg", b"a photo")
    daemon.sessions.close_idle_sessions(time.monotonic() + daemon.settings.session_idle_seconds)
    later = time.time() + 60
    monkeypatch.setattr(time, "time", lambda: later)
    daemon.sessions.close_idle_sessions(time.monotonic())
    assert not (inbox / "album").exists()


def supervisor_with(root: Path, **settings) -> Supervisor:
    settings = load_settings(
        None, root=root, stable_seconds=0, session_idle_seconds=3600, runner=fakerunner.NAME, **settings
    )
    supervisor = Supervisor(settings, load_model_spec(settings.model, verify=False))
    supervisor.open_folders()
    supervisor.recovery.recover()
    return supervisor


def test_an_open_session_keeps_the_output_it_started_with_when_the_setting_changes_across_a_restart(tmp_path):
    root = tmp_path / "root"
    with structlog.testing.capture_logs():
        before = supervisor_with(root, output="both")
        drop_and_take(before, "first.jpg", b"the first photo")
        before.store.close()

        after = supervisor_with(root, output="cutout")
        [session] = after.store.sessions()
        assert after.options.with_masks(session), "its first item was named with a mask beside it"
        [item] = after.store.items()
        model = after.options.model_of(session)
        spec = after.dispatch.job_spec(item, after.spool.stored(item), session, model)
        assert spec.options.output == "both" and spec.mask is not None, "its job makes the mask its ZIP expects"
        after.store.close()


def test_a_file_whose_archive_path_would_pass_path_max_is_refused_at_take_and_stays_in_the_inbox(daemon):
    # Each byte that is not UTF-8 is named %XX (three bytes) in the archive, so a path that
    # fits in the inbox can be three times longer there.
    folder = os.path.join(os.fsencode(daemon.settings.inbox), b"deep", *[b"\xe9" * 80] * 17)
    os.makedirs(folder)
    dropped = os.path.join(folder, b"photo.jpg")
    Path(os.fsdecode(dropped)).write_bytes(b"a photo")
    with structlog.testing.capture_logs() as logs:
        daemon.intake.rescan()
        daemon.taking.take_ready_files(time.monotonic())

    assert daemon.store.items() == [], "nothing is recorded that could not be archived"
    assert Path(os.fsdecode(dropped)).read_bytes() == b"a photo", "the file stays where the user left it"
    [refusal] = [line for line in logs if line["event"] == "file_refused"]
    assert "4096" in refusal["reason"]


def test_a_burst_of_files_is_taken_a_bounded_batch_a_pass_and_the_next_pass_is_due_at_once(daemon, monkeypatch):
    monkeypatch.setattr(taking, "TAKE_SECONDS_PER_PASS", 3600.0)  # a disk fast enough that the count is the bound
    count = TAKES_PER_PASS * 2 + 10
    for index in range(count):
        (daemon.settings.inbox / f"{index:04}.jpg").write_bytes(b"a photo")
    daemon.intake.rescan()
    taken = []
    while sum(taken) < count:
        now = time.monotonic()
        daemon.taking.take_ready_files(now)
        taken.append(len(daemon.store.items()) - sum(taken))
        assert taken[-1] <= TAKES_PER_PASS, "one pass takes a bounded batch"
        if sum(taken) < count:
            assert daemon.intake.seconds_until_due(now) == 0, "the rest are due: the loop does not sleep"
    assert taken == [TAKES_PER_PASS, TAKES_PER_PASS, 10]
    assert not any(daemon.settings.inbox.glob("*.jpg")), "every file taken, none lost"
    in_order_taken = [item.name for item in sorted(daemon.store.items(), key=lambda item: item.id)]
    assert in_order_taken == [f"{index:04}.jpg" for index in range(count)], "batches follow the names"


def test_a_pass_over_its_time_for_takes_leaves_the_rest_due_for_the_next(daemon, monkeypatch):
    monkeypatch.setattr(taking, "TAKE_SECONDS_PER_PASS", 0.0)  # a disk so slow that every take uses it all
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        (daemon.settings.inbox / name).write_bytes(b"a photo")
    daemon.intake.rescan()
    for passes in (1, 2, 3):
        now = time.monotonic()
        daemon.taking.take_ready_files(now)
        assert len(daemon.store.items()) == passes, "one take a pass, but always one"
    assert daemon.intake.seconds_until_due(time.monotonic()) is None
