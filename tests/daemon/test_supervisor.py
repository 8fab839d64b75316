"""The daemon's contract, end to end, with fake job bodies (tests/support/fakejob.py) in real processes.

Each test runs `bgremover run` as a real process on a temporary root with the
real watcher and a real SQLite file; what a dropped file contains decides what
its job does, so a test drops a file that sleeps, crashes or hogs memory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from bgremover.queue.states import Status
from bgremover.queue.store import Store
from tests.support.harness import Daemon, drop, wait_for

ITEM_FIELDS = {"name", "status", "output", "mask", "error", "note", "attempts", "retry_marker", "review"}
SESSION_FIELDS = {
    "session",
    "state",
    "format",
    "model",
    "review",
    "created_at",
    "updated_at",
    "total",
    "counts",
    "zip",
    "error",
    "finish_error",
    "ticket",
    "items",
}


@pytest.fixture(autouse=True, params=[1, 3], ids=["1-slot", "3-slots"])
def job_slots(request, monkeypatch) -> int:
    """The whole contract holds however many jobs run at once: every test runs with one job slot and with three.

    Two slots lie between them; the property test (tests/unit/test_queue_properties.py) draws
    its sequences at 1, 2 and 3 slots, and the crash soak runs at each.
    """
    monkeypatch.setenv("BGREMOVER_JOB_SLOTS", str(request.param))
    return request.param


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "root"


def items_by_name(status: dict) -> dict[str, dict]:
    return {item["name"]: item for item in status["items"]}


def only_session(daemon: Daemon) -> str:
    names = wait_for(lambda: list(daemon.statuses()), what="a session")
    assert len(names) == 1, names
    return names[0]


def job_pid(daemon: Daemon, item: str, attempt: int = 1) -> int:
    started = wait_for(
        lambda: [e for e in daemon.events("job_started") if e["item"] == item and e["attempt"] == attempt],
        what=f"job of {item}, attempt {attempt}",
    )
    return started[-1]["pid"]


def test_a_loose_file_becomes_a_session_and_comes_back_in_its_zip(root):
    with Daemon(root) as daemon:
        drop(root / "inbox", "shoe.jpg", "ok")
        session = only_session(daemon)
        status = daemon.wait_complete(session)
        assert session.startswith("batch-") and len(session) == len("batch-YYYYmmdd-HHMMSS")
        assert set(status) == SESSION_FIELDS
        assert (status["state"], status["format"], status["total"], status["zip"]) == (
            "complete",
            "png",
            1,
            f"{session}.zip",
        )
        assert status["counts"] == {"queued": 0, "processing": 0, "done": 1, "failed": 0, "cancelled": 0}
        item = status["items"][0]
        assert set(item) == ITEM_FIELDS
        assert item == {
            "name": "shoe.jpg",
            "status": "done",
            "output": "shoe.png",
            "mask": None,
            "error": None,
            "note": None,
            "attempts": 1,
            "retry_marker": None,
            "review": None,
        }
        assert daemon.zip_members(session) == {"shoe.png": b"cutout of ok"}
        assert list((root / "inbox").iterdir()) == []
        assert (root / "archive" / session / "shoe.jpg").read_bytes() == b"ok"


def test_a_dropped_folder_is_one_session_and_nested_names_keep_their_path(root):
    with Daemon(root) as daemon:
        drop(root / "inbox", "catalog/top.jpg")
        drop(root / "inbox", "catalog/shoes/red.PNG")
        drop(root / "inbox", "catalog/shoes/deep/blue.webp")
        status = daemon.wait_complete("catalog")
        assert {i["name"]: i["output"] for i in status["items"]} == {
            "top.jpg": "top.png",
            "shoes/red.PNG": "shoes/red.png",
            "shoes/deep/blue.webp": "shoes/deep/blue.png",
        }
        assert set(daemon.zip_members("catalog")) == {"top.png", "shoes/red.png", "shoes/deep/blue.png"}
        wait_for(lambda: not (root / "inbox" / "catalog").exists(), what="the emptied folder to go")


def test_colliding_output_names_get_distinct_members(root):
    with Daemon(root) as daemon:
        drop(root / "inbox", "set/a.jpg", "from jpg")
        drop(root / "inbox", "set/a.png", "from png")
        status = daemon.wait_complete("set")
        outputs = [item["output"] for item in status["items"]]
        assert len(set(outputs)) == 2 and "a.png" in outputs
        members = daemon.zip_members("set")
        assert sorted(members.values()) == [b"cutout of from jpg", b"cutout of from png"]


def test_a_full_session_spills_into_numbered_sessions(root):
    with Daemon(root, max_session_items=3) as daemon:
        for n in range(7):
            drop(root / "inbox", f"big/{n}.jpg")
        totals = [daemon.wait_complete(name)["total"] for name in ("big", "big-2", "big-3")]
        assert totals == [3, 3, 1]
        names = [i["name"] for name in ("big", "big-2", "big-3") for i in daemon.status(name)["items"]]
        assert sorted(names) == [f"{n}.jpg" for n in range(7)]


def test_one_bad_job_fails_alone_with_an_error_that_says_why(root):
    with Daemon(root) as daemon:
        drop(root / "inbox", "mixed/1-good.jpg")
        drop(root / "inbox", "mixed/2-crash.jpg", "exit 3")
        drop(root / "inbox", "mixed/3-bad.jpg", "bad-input")
        drop(root / "inbox", "mixed/4-killed.jpg", "sigkill")
        drop(root / "inbox", "mixed/5-good.jpg")
        status = daemon.wait_complete("mixed")
        items = items_by_name(status)
        assert items["2-crash.jpg"]["error"] == "the job crashed with exit code 3"
        assert items["3-bad.jpg"]["error"] == "the file is not an image Pillow can read"
        assert items["4-killed.jpg"]["error"] == "the job was killed by SIGKILL (perhaps out of memory)"
        assert status["counts"]["done"] == 2 and status["counts"]["failed"] == 3
        assert set(daemon.zip_members("mixed")) == {"1-good.png", "5-good.png"}
        for name in ("2-crash.jpg", "3-bad.jpg", "4-killed.jpg"):
            marker = items[name]["retry_marker"]
            assert marker == f"retry/mixed/{name}" and (root / marker).parent.is_dir()


def test_touching_the_retry_marker_reruns_only_that_item_and_rewrites_the_zip(root, tmp_path):
    flag = tmp_path / "flaky-flag"
    with Daemon(root) as daemon:
        drop(root / "inbox", "retry-me/good.jpg", "ok")
        drop(root / "inbox", "retry-me/flaky.jpg", f"flaky {flag}")
        status = daemon.wait_complete("retry-me")
        item = items_by_name(status)["flaky.jpg"]
        assert item["status"] == "failed" and "touch the retry marker" in item["error"]
        assert set(daemon.zip_members("retry-me")) == {"good.png"}

        (root / item["retry_marker"]).touch()
        wait_for(lambda: items_by_name(daemon.status("retry-me"))["flaky.jpg"]["status"] == "done", what="retry")
        status = daemon.wait_complete("retry-me")
        assert items_by_name(status)["flaky.jpg"]["attempts"] == 2
        assert items_by_name(status)["good.jpg"]["attempts"] == 1
        assert set(daemon.zip_members("retry-me")) == {"good.png", "flaky.png"}
        assert not (root / item["retry_marker"]).exists()


def test_a_marker_that_names_no_item_is_removed_with_a_log_line(root):
    with Daemon(root) as daemon:
        marker = root / "retry" / "nosuch" / "x.jpg"
        marker.parent.mkdir(parents=True)
        marker.touch()
        (root / "cancel" / "nosuch").touch()
        wait_for(lambda: not marker.exists() and not (root / "cancel" / "nosuch").exists(), what="markers removed")
        assert daemon.events("retry_marker_ignored")[0]["reason"] == "no such item"
        assert daemon.events("cancel_marker_ignored")[0]["session"] == "nosuch"


def sleepers(count: int) -> list[str]:
    """Names for one sleeping job per slot: with every slot busy, the next item waits in the queue."""
    return ["2.jpg"] + [f"2-{n}.jpg" for n in range(2, count + 1)]


def test_cancel_stops_the_job_in_flight_cancels_the_queue_and_keeps_what_is_done(root, job_slots):
    with Daemon(root, session_idle_seconds=30) as daemon:
        drop(root / "inbox", "shoot/1.jpg", "ok")
        wait_for(lambda: (s := daemon.status("shoot")) and s["counts"]["done"] == 1, what="first done")
        for name in sleepers(job_slots):
            drop(root / "inbox", f"shoot/{name}", "sleep")
        for name in sleepers(job_slots):
            job_pid(daemon, name)
        drop(root / "inbox", "shoot/3.jpg", "ok")
        wait_for(lambda: daemon.status("shoot")["total"] == 2 + job_slots, what="the last one queued")
        (root / "cancel" / "shoot").touch()
        status = daemon.wait_complete("shoot", 20)
        assert {i["name"]: i["status"] for i in status["items"]} == {
            "1.jpg": "done",
            **dict.fromkeys(sleepers(job_slots), "cancelled"),
            "3.jpg": "cancelled",
        }
        assert set(daemon.zip_members("shoot")) == {"1.png"}
        assert not (root / "cancel" / "shoot").exists()

        # A cancelled item resumes through its retry marker.
        (root / items_by_name(status)["3.jpg"]["retry_marker"]).touch()
        wait_for(lambda: items_by_name(daemon.status("shoot"))["3.jpg"]["status"] == "done", what="resume")
        assert set(daemon.wait_complete("shoot")["items"][0]) == ITEM_FIELDS
        wait_for(lambda: set(daemon.zip_members("shoot")) == {"1.png", "3.png"}, what="zip rewritten")


def test_a_job_past_its_timeout_is_killed_with_its_whole_process_group(root, tmp_path):
    pidfile = tmp_path / "grandchild.pid"
    with Daemon(root, job_timeout_seconds=1.5) as daemon:
        drop(root / "inbox", "slow/stubborn.jpg", "ignore-term")
        drop(root / "inbox", "slow/spawner.jpg", f"grandchild {pidfile}")
        drop(root / "inbox", "slow/fine.jpg", "ok")
        status = daemon.wait_complete("slow", 30)
        items = items_by_name(status)
        for name in ("stubborn.jpg", "spawner.jpg"):
            assert items[name]["error"] == "the job took longer than 1.5 s (job_timeout_seconds) and was killed"
        assert items["fine.jpg"]["status"] == "done"
        grandchild = int(pidfile.read_text())
        wait_for(lambda: not Path(f"/proc/{grandchild}").exists(), 5, what="the grandchild to be gone")


def test_a_job_over_its_memory_limit_fails_alone(root):
    with Daemon(root, job_memory_limit_mb=200) as daemon:
        drop(root / "inbox", "heavy/hog.jpg", "memory 400")
        drop(root / "inbox", "heavy/light.jpg", "ok")
        status = daemon.wait_complete("heavy", 30)
        items = items_by_name(status)
        assert items["hog.jpg"]["error"] == (
            "the job used more than the memory limit of 200 MB (job_memory_limit_mb) and was stopped"
        )
        assert items["light.jpg"]["status"] == "done"


def test_a_job_killed_from_outside_fails_and_the_next_one_runs(root):
    with Daemon(root) as daemon:
        drop(root / "inbox", "victim/a.jpg", "sleep")
        drop(root / "inbox", "victim/b.jpg", "ok")
        os.kill(job_pid(daemon, "a.jpg"), signal.SIGKILL)
        status = daemon.wait_complete("victim")
        assert items_by_name(status)["a.jpg"]["error"] == "the job was killed by SIGKILL (perhaps out of memory)"
        assert items_by_name(status)["b.jpg"]["status"] == "done"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stop_signal_ends_the_daemon_within_ten_seconds_and_requeues_the_item_in_flight(root, sig):
    daemon = Daemon(root).start()
    drop(root / "inbox", "stop/a.jpg", "ignore-term")
    pid = job_pid(daemon, "a.jpg")
    started = time.monotonic()
    assert daemon.stop(sig, timeout=10) == 0
    assert time.monotonic() - started < 10
    assert not Path(f"/proc/{pid}").exists()
    item = daemon.status("stop")["items"][0]
    assert (item["status"], item["error"]) == ("queued", None)


def runs_a_job_of_the_past(pid: int, daemon: Daemon) -> bool:
    """Whether `pid` is still a job process, and not one of this life's (a child of its daemon)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return (
        stat[0] not in ("Z", "X") and b"bgremover.runners.forkserver" in cmdline and int(stat[1]) != daemon.process.pid
    )


def test_a_daemon_killed_mid_session_finishes_every_item_exactly_once(root):
    daemon = Daemon(root).start()
    for n in range(6):
        drop(root / "inbox", f"crash/{n}.jpg", "sleep 0.3" if n != 2 else "sleep 30")
    job_pid(daemon, "2.jpg")
    daemon.kill()  # kill -9: no clean-up of any kind
    store = Store(root / "state" / "bgremover.sqlite3", readonly=True)
    in_flight = sorted(item.name for item in store.items(None, Status.PROCESSING))
    store.close()
    assert "2.jpg" in in_flight
    # The jobs it left behind run on in their own process groups until the next life kills them.
    first_life = [e["pid"] for e in daemon.events("job_started")]
    restarted = Daemon(root).start()
    try:
        leftover = {e["item"] for e in restarted.events("leftover_job_killed")}
        assert "2.jpg" in leftover and leftover <= set(in_flight)  # a short job may have ended on its own
        assert [pid for pid in first_life if runs_a_job_of_the_past(pid, restarted)] == []
        # The interrupted item runs first in the new life and would sleep again: end it.
        os.kill(job_pid(restarted, "2.jpg", attempt=2), signal.SIGKILL)
        status = restarted.wait_complete("crash")
    finally:
        restarted.stop()
    names = sorted(item["name"] for item in status["items"])
    assert names == [f"{n}.jpg" for n in range(6)]
    finished = [(e["item"], e["status"]) for e in restarted.events("job_finished")]
    assert sorted(finished) == sorted([(f"{n}.jpg", "done") for n in range(6) if n != 2] + [("2.jpg", "failed")])
    assert set(restarted.zip_members("crash")) == {f"{n}.png" for n in range(6) if n != 2}
    assert len(restarted.zip_members("crash")) == 5


def test_files_dropped_while_the_daemon_is_down_are_taken_at_start(root):
    drop(root / "inbox", "waiting.jpg")
    drop(root / "inbox", "early/one.jpg")
    with Daemon(root) as daemon:
        assert daemon.wait_complete("early")["items"][0]["status"] == "done"
        loose = [name for name in daemon.statuses() if name.startswith("batch-")]
        assert daemon.wait_complete(loose[0])["items"][0]["name"] == "waiting.jpg"


def test_temporary_names_and_foreign_files_stay_in_the_inbox(root):
    with Daemon(root) as daemon:
        for name in ("notes.txt", "photo.jpg.part", ".hidden.jpg", "~$lock.jpg", "x.crdownload", "y.tmp"):
            drop(root / "inbox", name)
        drop(root / "inbox", "real.jpg")
        session = only_session(daemon)
        assert [i["name"] for i in daemon.wait_complete(session)["items"]] == ["real.jpg"]
        left = sorted(p.name for p in (root / "inbox").iterdir())
        assert left == [".hidden.jpg", "notes.txt", "photo.jpg.part", "x.crdownload", "y.tmp", "~$lock.jpg"]
        warnings = [e for e in daemon.events("file_ignored") if e.get("path", "").endswith("notes.txt")]
        assert len(warnings) == 1


def test_new_files_and_markers_are_handled_while_a_job_runs(root, job_slots):
    with Daemon(root, session_idle_seconds=30) as daemon:
        for name in sleepers(job_slots):
            drop(root / "inbox", f"busy/{name}", "sleep")
        for name in sleepers(job_slots):
            job_pid(daemon, name)
        drop(root / "inbox", "busy/next.jpg")
        wait_for(
            lambda: daemon.status("busy")["total"] == job_slots + 1, 10, what="the new file queued during the jobs"
        )
        (root / "cancel" / "busy").touch()
        status = daemon.wait_complete("busy", 15)
        assert status["counts"]["cancelled"] == job_slots + 1


def test_marker_folders_come_back_if_someone_removes_them(root):
    with Daemon(root) as daemon:
        drop(root / "inbox", "gone/broken.jpg", "exit 3")
        marker = root / daemon.wait_complete("gone")["items"][0]["retry_marker"]
        shutil.rmtree(root / "retry")
        shutil.rmtree(root / "cancel")
        wait_for(lambda: marker.parent.is_dir() and (root / "cancel").is_dir(), 10, what="marker folders restored")
        marker.touch()
        wait_for(lambda: daemon.status("gone")["items"][0]["attempts"] == 2, 20, what="the retry")


def test_a_file_arriving_after_the_idle_close_opens_the_next_session(root):
    with Daemon(root) as daemon:
        drop(root / "inbox", "shoot/first.jpg")
        assert daemon.wait_complete("shoot")["total"] == 1
        drop(root / "inbox", "shoot/late.jpg")
        late = daemon.wait_complete("shoot-2")
        assert [item["name"] for item in late["items"]] == ["late.jpg"]
        assert [item["name"] for item in daemon.status("shoot")["items"]] == ["first.jpg"]


def test_the_status_json_is_strict_utf8_whatever_the_file_names(root):
    inbox = os.fsencode(root / "inbox")
    with Daemon(root) as daemon:
        for raw in (b"caf\xe9.jpg", "stra\u00dfe \U0001f45f.jpg".encode()):
            os.makedirs(inbox + b"/names", exist_ok=True)
            with open(inbox + b"/names/" + raw, "wb") as handle:
                handle.write(b"ok")
        status = daemon.wait_complete("names")
        raw_json = (root / "outbox" / "names.json").read_bytes()
        raw_json.decode("utf-8", errors="strict")
        assert sorted(item["name"] for item in status["items"]) == ["caf%E9.jpg", "stra\u00dfe \U0001f45f.jpg"]
        assert sorted(daemon.zip_members("names")) == ["caf%E9.png", "stra\u00dfe \U0001f45f.png"]


def crash_between_record_and_move(root: Path, session: str, name: str, content: str | None) -> None:
    """The state a kill -9 leaves between committing an item and renaming its file out of the inbox."""
    Daemon(root)  # lays out the folders
    (root / "state").mkdir(exist_ok=True)
    store = Store(root / "state" / "bgremover.sqlite3")
    store.create_session(session, session, "png", time.time())
    store.add_item(session, name, name.replace(".jpg", ".png"), ".jpg", f"inbox/{session}/{name}".encode(), time.time())
    store.close()
    if content is not None:
        drop(root / "inbox", f"{session}/{name}", content)


def test_a_take_cut_short_by_a_crash_is_finished_once_at_restart(root):
    crash_between_record_and_move(root, "half", "a.jpg", "ok")
    with Daemon(root) as daemon:
        status = daemon.wait_complete("half")
        assert [(i["name"], i["status"]) for i in status["items"]] == [("a.jpg", "done")]
        assert daemon.zip_members("half") == {"a.png": b"cutout of ok"}
        assert [e["item"] for e in daemon.events("take_completed")] == ["a.jpg"]


def test_a_file_that_vanished_before_its_take_is_forgotten_with_its_empty_session(root):
    crash_between_record_and_move(root, "ghost", "gone.jpg", None)
    with Daemon(root) as daemon:
        assert [e["item"] for e in daemon.events("file_vanished")] == ["gone.jpg"]
        assert daemon.status("ghost") is None
        drop(root / "inbox", "other.jpg")
        loose = wait_for(lambda: [n for n in daemon.statuses() if n.startswith("batch-")], what="a new session")
        daemon.wait_complete(loose[0])
        assert list(daemon.statuses()) == loose


def test_an_attempt_that_finished_after_the_daemon_died_leaves_no_files_behind(root):
    # The job outlives its daemon and writes its result, report and log for
    # attempt 1; the next life runs the item again as attempt 2, so nothing
    # would ever read attempt 1's files: recovery removes them.
    daemon = Daemon(root).start()
    drop(root / "inbox", "late/one.jpg", "sleep 1.5")
    job_pid(daemon, "one.jpg")  # its job has started
    daemon.kill()
    results = root / "state" / "results"
    # Attempt 1 finishes on its own: its cutout and its log are written (the fake job writes no report on success).
    wait_for(lambda: sorted(p.name for p in results.iterdir()) == ["1-1.log", "1-1.png"], what="the orphan's result")
    with Daemon(root) as restarted:
        status = restarted.wait_complete("late")
        assert [(i["status"], i["attempts"]) for i in status["items"]] == [("done", 2)]
    assert list(results.iterdir()) == []


def test_every_log_line_names_its_session_item_and_event_and_job_stderr_is_kept_bounded(root):
    with Daemon(root) as daemon:
        drop(root / "inbox", "talk/quiet.jpg", "ok")
        drop(root / "inbox", "talk/chatty.jpg", "chatty 50000")
        daemon.wait_complete("talk")
    records = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    assert records and all({"session", "item", "event"} <= record.keys() for record in records)
    finished = {e["item"]: e for e in daemon.events("job_finished")}
    assert finished["chatty.jpg"]["status"] == "done"
    assert finished["chatty.jpg"]["stderr"].endswith("last words")  # the tail: where the news usually is
    assert len(finished["chatty.jpg"]["stderr"].encode()) <= 2000
    assert "stderr" not in finished["quiet.jpg"]
    assert daemon.events("daemon_ready")[0]["session"] is None
