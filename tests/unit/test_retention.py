"""Retention: complete sessions leave the database and state/ after keep_sessions_days, their delivered files
after keep_outbox_days, a few at a time, and nothing a user dropped is ever deleted on the way.

A real Supervisor on a real temporary root and SQLite file, driven step by
step in this process. Sessions are made as the daemon leaves them, through the
store's own moves, at a time in the past the test chooses.
"""

from __future__ import annotations

import json
import os
import time

import pytest
import structlog

from bgremover.models.manifest import load_model_spec
from bgremover.queue.states import SessionState, Status
from bgremover.settings import load_settings
from bgremover.supervisor.loop import Supervisor
from bgremover.supervisor.markers import MARKER_WALK_SECONDS
from bgremover.supervisor.retention import SESSIONS_PER_STEP, Retention
from tests.support import fakerunner

fakerunner.register()

DAY = 86400.0
PATHS = {
    Status.DONE: [Status.PROCESSING, Status.DONE],
    Status.FAILED: [Status.PROCESSING, Status.FAILED],
    Status.CANCELLED: [Status.CANCELLED],
}


def supervisor(root, **settings) -> Supervisor:
    settings = load_settings(
        None,
        root=root,
        stable_seconds=0,
        session_idle_seconds=3600,
        runner=fakerunner.NAME,
        job_slots=1,
        keep_originals=False,
        **settings,
    )
    daemon = Supervisor(settings, load_model_spec(settings.model, verify=False))
    daemon.open_folders()
    daemon.recovery.recover()
    return daemon


@pytest.fixture
def make(tmp_path):
    made = []

    def make(**settings) -> Supervisor:
        made.append(supervisor(tmp_path / "root", **settings))
        return made[-1]

    with structlog.testing.capture_logs():
        yield make
    for daemon in made:
        daemon.store.close()


def complete_session(daemon: Supervisor, name: str, days_ago: float, **items: Status) -> None:
    """A session as the daemon leaves it once complete, `days_ago`: keep_originals false, so only the
    failed and cancelled items' originals are still in state/originals, and the done items' cutouts stay
    in state/results while a retry may rewrite the ZIP."""
    store, spool, at = daemon.store, daemon.spool, time.time() - days_ago * DAY
    store.create_session(name, name, "png", at)
    for stem, status in items.items():
        item = store.add_item(name, f"{stem}.jpg", f"{stem}.png", ".jpg", f"inbox/{name}/{stem}.jpg".encode(), at)
        for dst in PATHS[status]:
            item = store.transition(item.id, item.status, dst, at)
        if status is Status.DONE:
            spool.result(item, ".png").write_bytes(b"cutout")
        else:
            spool.stored(item).write_bytes(f"the user's {stem}".encode())
            daemon.moves.ensure_retry_folder(item)
    store.set_session_state(name, {SessionState.OPEN}, SessionState.PROCESSING, at)
    store.set_session_state(name, {SessionState.PROCESSING}, SessionState.COMPLETE, at, f"{name}.zip")
    for suffix in (".zip", ".json"):
        delivered(daemon, f"{name}{suffix}", days_ago)


def delivered(daemon: Supervisor, name: str, days_ago: float) -> None:
    path = daemon.settings.outbox / name
    path.write_bytes(b"delivered")
    at = time.time() - days_ago * DAY
    os.utime(path, (at, at))


def archived(daemon: Supervisor, session: str, days_ago: float, *names: str) -> None:
    at = time.time() - days_ago * DAY
    for name in names:
        path = daemon.settings.archive_dir / session / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"an original")
    for folder in sorted((daemon.settings.archive_dir / session).rglob("*")) + [daemon.settings.archive_dir / session]:
        os.utime(folder, (at, at))


def step(daemon: Supervisor) -> None:
    """One retention step, whenever it was last run."""
    retention = Retention(daemon.settings, daemon.store, daemon.spool, daemon.sessions, daemon.moves)
    retention.prune(time.monotonic())


def files_under(folder) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())


def test_a_session_complete_longer_than_keep_sessions_days_leaves_the_database_and_state(make):
    daemon = make(keep_sessions_days=30)
    complete_session(daemon, "old", 31, good=Status.DONE, bad=Status.FAILED, stopped=Status.CANCELLED)
    ids = [item.id for item in daemon.store.items("old")]
    step(daemon)

    assert daemon.store.session("old") is None
    assert daemon.store.items("old") == []
    assert all(daemon.store.events(item_id) == [] for item_id in ids), "their events go with them"
    assert files_under(daemon.spool.originals) == [] and files_under(daemon.spool.results) == []
    assert not (daemon.settings.retry_dir / "old").exists(), "nothing in it can be retried any more"


def test_the_originals_of_failed_and_cancelled_items_are_moved_to_the_archive_never_deleted(make):
    daemon = make(keep_sessions_days=30)
    complete_session(daemon, "old", 31, good=Status.DONE, bad=Status.FAILED, stopped=Status.CANCELLED)
    step(daemon)
    archive = daemon.settings.archive_dir / "old"
    assert (archive / "bad.jpg").read_bytes() == b"the user's bad"
    assert (archive / "stopped.jpg").read_bytes() == b"the user's stopped"
    assert files_under(daemon.settings.outbox) == ["old.json", "old.zip"], "keep_outbox_days 0: delivered stays"


def test_younger_sessions_and_unfinished_ones_stay(make):
    daemon = make(keep_sessions_days=30)
    complete_session(daemon, "young", 29, good=Status.DONE, bad=Status.FAILED)
    daemon.store.create_session("open-for-long", None, "png", time.time() - 90 * DAY)
    step(daemon)
    assert daemon.store.session("young") is not None and daemon.store.session("open-for-long") is not None
    assert len(files_under(daemon.spool.originals)) == 1
    assert (daemon.settings.retry_dir / "young").is_dir()


def test_keep_sessions_days_zero_keeps_every_session(make):
    daemon = make(keep_sessions_days=0)
    complete_session(daemon, "ancient", 3650, good=Status.DONE)
    step(daemon)
    assert daemon.store.session("ancient") is not None


def test_each_step_forgets_a_bounded_batch_oldest_first(make):
    daemon = make(keep_sessions_days=1)
    for n in range(SESSIONS_PER_STEP + 5):
        complete_session(daemon, f"s{n:02}", 100 - n, good=Status.DONE)
    step(daemon)
    left = [session.name for session in daemon.store.sessions()]
    assert left == [f"s{n:02}" for n in range(SESSIONS_PER_STEP, SESSIONS_PER_STEP + 5)]
    step(daemon)
    assert daemon.store.sessions() == []


def test_a_marker_a_user_left_in_a_retry_folder_keeps_the_folder_and_the_marker(make):
    daemon = make(keep_sessions_days=1)
    complete_session(daemon, "old", 2, bad=Status.FAILED)
    marker = daemon.settings.retry_dir / "old" / ".being-written"
    marker.write_bytes(b"a fixed file on its way")
    step(daemon)
    assert daemon.store.session("old") is None
    assert marker.read_bytes() == b"a fixed file on its way"


def test_a_kill_after_the_files_and_before_the_rows_is_finished_by_the_next_step(make, monkeypatch):
    daemon = make(keep_sessions_days=1)
    complete_session(daemon, "old", 2, good=Status.DONE, bad=Status.FAILED)

    def killed(name):
        raise KeyboardInterrupt("killed before the transaction")

    monkeypatch.setattr(daemon.store, "forget_session", killed)
    with pytest.raises(KeyboardInterrupt):
        step(daemon)
    monkeypatch.undo()
    # What the kill left: a complete session whose failed original a retry still finds, in the archive.
    [bad] = daemon.store.items("old", Status.FAILED)
    assert daemon.spool.original(bad).read_bytes() == b"the user's bad"

    step(make(keep_sessions_days=1))  # the next life
    assert daemon.store.session("old") is None
    assert (daemon.settings.archive_dir / "old" / "bad.jpg").read_bytes() == b"the user's bad"


def test_a_session_whose_originals_the_archive_refuses_stays_and_says_why(make):
    daemon = make(keep_sessions_days=1)
    complete_session(daemon, "old", 2, bad=Status.FAILED)
    (daemon.settings.archive_dir / "old").write_bytes(b"a file where its archive folder would go")
    with structlog.testing.capture_logs() as logs:
        step(daemon)
    assert daemon.store.session("old") is not None
    assert files_under(daemon.spool.originals), "the original stays where it was"
    assert [entry["event"] for entry in logs if entry["log_level"] == "warning"] == ["session_not_forgotten"]


def test_delivered_files_go_by_their_own_age_whether_or_not_the_database_knows_them(make):
    daemon = make(keep_sessions_days=0, keep_outbox_days=7)
    for name in ("gone.zip", "gone.json", "fresh.zip", "fresh.json"):
        delivered(daemon, name, 8 if name.startswith("gone") else 6)
    for name in ("notes.txt", ".gone.json.tmp"):
        delivered(daemon, name, 30)  # not a name the daemon delivers
    archived(daemon, "gone", 8, "a.jpg", "shoes/red.jpg")
    archived(daemon, "fresh", 6, "b.jpg")
    step(daemon)
    assert files_under(daemon.settings.outbox) == [".gone.json.tmp", "fresh.json", "fresh.zip", "notes.txt"]
    assert files_under(daemon.settings.archive_dir) == ["fresh/b.jpg"]


def test_an_archive_folder_something_was_moved_into_lately_stays(make):
    daemon = make(keep_outbox_days=7)
    archived(daemon, "shoot", 8, "a.jpg", "shoes/red.jpg")
    os.utime(daemon.settings.archive_dir / "shoot" / "shoes")  # red.jpg's folder: written just now
    step(daemon)
    assert files_under(daemon.settings.archive_dir) == ["shoot/a.jpg", "shoot/shoes/red.jpg"]


def test_delivered_files_of_a_session_with_an_item_left_to_retry_stay_while_the_database_keeps_it(make):
    daemon = make(keep_sessions_days=30, keep_outbox_days=7)
    complete_session(daemon, "retryable", 10, good=Status.DONE, bad=Status.FAILED)
    complete_session(daemon, "all-done", 10, good=Status.DONE)
    step(daemon)
    assert files_under(daemon.settings.outbox) == ["retryable.json", "retryable.zip"]


def test_an_archive_folder_half_deleted_by_a_kill_is_finished_at_the_next_step(make):
    daemon = make(keep_outbox_days=7)
    left = daemon.settings.archive_dir / ".pruning" / "shoot" / "shoes"
    left.mkdir(parents=True)
    (left / "red.jpg").write_bytes(b"half of a folder on its way out")
    step(daemon)
    assert list((daemon.settings.archive_dir / ".pruning").iterdir()) == []


def test_a_session_name_whose_files_remain_is_not_given_to_a_new_session(make):
    daemon = make(keep_sessions_days=1)
    complete_session(daemon, "shoot", 2, bad=Status.FAILED)
    step(daemon)
    assert daemon.store.session("shoot") is None
    (daemon.settings.outbox / "shoot.json").unlink()  # collected; its ZIP and archive folder are still there
    (daemon.settings.inbox / "shoot").mkdir()
    (daemon.settings.inbox / "shoot" / "new.jpg").write_bytes(b"ok")
    daemon.intake.rescan()
    daemon.taking.take_ready_files(time.monotonic())
    assert [session.name for session in daemon.store.sessions()] == ["shoot-2"]


def test_a_retried_item_done_removes_its_sessions_retry_folder_once_nothing_is_left_to_retry(make):
    daemon = make()
    complete_session(daemon, "s", 0, one=Status.FAILED, two=Status.FAILED)
    for stem in ("one", "two"):
        item = daemon.store.item_named("s", f"{stem}.jpg")
        daemon.markers.retry_item("s", item.name)
        item = daemon.moves.move(daemon.store.item(item.id), Status.PROCESSING, "test")
        daemon.moves.finish(item, Status.DONE, None)
        assert (daemon.settings.retry_dir / "s").is_dir() is (stem == "one"), stem


def test_retry_folders_are_made_at_start_only_for_sessions_retention_keeps(make, tmp_path):
    daemon = make(keep_sessions_days=30)
    complete_session(daemon, "young", 29, bad=Status.FAILED)
    complete_session(daemon, "old", 31, bad=Status.FAILED)
    for name in ("young", "old"):
        (daemon.settings.retry_dir / name).rmdir()
    make(keep_sessions_days=30)  # a start: recovery makes the marker folders
    assert sorted(p.name for p in daemon.settings.retry_dir.iterdir()) == ["young"]


def test_between_walks_only_the_retry_folders_the_watcher_saw_change_are_read(make):
    daemon = make()
    complete_session(daemon, "quiet", 0, bad=Status.FAILED)
    complete_session(daemon, "touched", 0, bad=Status.FAILED)
    start = time.monotonic()
    daemon.markers.read_markers(start)  # the first pass walks all of retry/
    unseen = daemon.settings.retry_dir / "quiet" / "bad.jpg"
    unseen.touch()  # before the watcher starts: as a marker whose event was lost
    daemon.intake.start()
    try:
        (daemon.settings.retry_dir / "touched" / "bad.jpg").touch()

        def requeued(name):
            return daemon.store.item_named(name, "bad.jpg").status is Status.QUEUED

        deadline = time.monotonic() + 5
        while not requeued("touched") and time.monotonic() < deadline:
            time.sleep(0.05)
            daemon.markers.read_markers(start + 1)
        assert requeued("touched"), "the watcher's event names the folder to read"
    finally:
        daemon.intake.stop()
    assert not requeued("quiet") and unseen.exists(), "a folder no event named is not read between walks"
    daemon.markers.read_markers(start + MARKER_WALK_SECONDS)
    assert requeued("quiet") and not unseen.exists(), "the periodic walk finds what no event told of"


def test_a_forgotten_sessions_json_names_no_retry_marker_and_says_where_each_original_went(make):
    daemon = make(keep_sessions_days=30)
    complete_session(daemon, "old", 31, good=Status.DONE, bad=Status.FAILED, stopped=Status.CANCELLED)
    daemon.publisher.publish("old")
    before = json.loads((daemon.settings.outbox / "old.json").read_text())
    assert {item["name"]: item["retry_marker"] for item in before["items"]} == {
        "good.jpg": None,
        "bad.jpg": "retry/old/bad.jpg",
        "stopped.jpg": "retry/old/stopped.jpg",
    }
    step(daemon)

    after = json.loads((daemon.settings.outbox / "old.json").read_text())
    assert after["forgotten"] is True and after["counts"] == before["counts"]
    assert [item["retry_marker"] for item in after["items"]] == [None, None, None]
    originals = {item["name"]: item.get("original") for item in after["items"]}
    assert originals == {"good.jpg": None, "bad.jpg": "archive/old/bad.jpg", "stopped.jpg": "archive/old/stopped.jpg"}
    assert all((daemon.settings.root / path).is_file() for path in originals.values() if path)
