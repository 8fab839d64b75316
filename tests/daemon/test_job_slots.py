"""Several jobs at once (job_slots = 3), end to end: each slot keeps every promise one job keeps.

A real daemon with the real watcher, SQLite file and fork server runs fake job
bodies (tests/support/fakejob.py) in real processes, three at a time: a dropped
file's first line says whether its job sleeps, hogs memory or succeeds.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.support.harness import Daemon, drop, wait_for
from tests.support.metrics import free_port, scrape, value

SLOTS = 3


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "root"


def items_by_name(status: dict) -> dict[str, dict]:
    return {item["name"]: item for item in status["items"]}


def running_jobs(daemon: Daemon, count: int) -> list[dict]:
    """Wait until `count` jobs have started and none has finished; their job_started lines."""
    return wait_for(
        lambda: len(started := daemon.events("job_started")) >= count and started, 20, what=f"{count} jobs running"
    )


def processing(root: Path) -> list[str]:
    with sqlite3.connect(f"file:{root / 'state' / 'bgremover.sqlite3'}?mode=ro", uri=True) as db:
        return sorted(name for (name,) in db.execute("SELECT name FROM items WHERE status = 'processing'"))


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def test_free_slots_take_the_oldest_items_at_once_each_in_a_fresh_process(root):
    with Daemon(root, job_slots=SLOTS) as daemon:
        staging = root.parent / "staging"
        (staging / "shoot").mkdir(parents=True)
        for n in range(5):
            (staging / "shoot" / f"{n}.jpg").write_text("sleep 1")
        os.rename(staging / "shoot", root / "inbox" / "shoot")  # all five at once
        started = running_jobs(daemon, SLOTS)[:SLOTS]
        assert sorted(e["item"] for e in started) == ["0.jpg", "1.jpg", "2.jpg"]
        assert len({e["pid"] for e in started}) == SLOTS and {e["slot"] for e in started} == {0, 1, 2}
        assert all(alive(e["pid"]) for e in started) and len(processing(root)) == SLOTS
        status = daemon.wait_complete("shoot", 30)
    assert status["counts"]["done"] == 5
    assert [e["item"] for e in daemon.events("job_started")] == [f"{n}.jpg" for n in range(5)], "not oldest first"
    assert len({e["pid"] for e in daemon.events("job_started")}) == 5, "a process ran two jobs"
    # One waiting process per slot: no freed slot waited for a process to start.
    assert all(e["ready_in_advance"] for e in daemon.events("job_started")), daemon.events("job_started")


def test_cancel_stops_every_running_job_of_the_session_and_no_other(root):
    # Four slots: three for the session cancelled, one for another session's job, which must finish.
    with Daemon(root, job_slots=SLOTS + 1, session_idle_seconds=30) as daemon:
        drop(root / "inbox", "other/keep.jpg", "sleep 5")
        wait_for(lambda: daemon.events("job_started"), what="the other session's job")
        for n in range(3):
            drop(root / "inbox", f"shoot/{n}.jpg", "sleep")
        drop(root / "inbox", "shoot/queued.jpg", "ok")
        started = running_jobs(daemon, SLOTS + 1)
        wait_for(lambda: (s := daemon.status("shoot")) and s["total"] == 4, what="the fourth queued")
        assert "queued.jpg" not in processing(root), "a fifth job ran in four slots"
        (root / "cancel" / "shoot").touch()
        status = daemon.wait_complete("shoot", 20)
        assert {i["name"]: (i["status"], i["error"]) for i in status["items"]} == {
            **{f"{n}.jpg": ("cancelled", "cancelled while processing") for n in range(3)},
            "queued.jpg": ("cancelled", "cancelled"),
        } or status
        for event in started:
            if event["session"] == "shoot":
                wait_for(lambda pid=event["pid"]: not alive(pid), 10, what=f"job {event['pid']} gone")
        assert "keep.jpg" in processing(root), "another session's job was stopped"
        wait_for(
            lambda: items_by_name(daemon.status("other"))["keep.jpg"]["status"] == "done",
            20,
            what="the other session's job done",
        )


def test_a_timeout_and_a_memory_kill_fail_their_own_items_while_the_other_slots_finish(root):
    with Daemon(root, job_slots=SLOTS, job_timeout_seconds=2, job_memory_limit_mb=150) as daemon:
        drop(root / "inbox", "mixed/hang.jpg", "sleep")
        drop(root / "inbox", "mixed/hog.jpg", "memory 400")
        for n in range(4):
            drop(root / "inbox", f"mixed/fine-{n}.jpg", "sleep 0.5")
        status = daemon.wait_complete("mixed", 40)
        items = items_by_name(status)
        assert items["hang.jpg"]["error"] == "the job took longer than 2 s (job_timeout_seconds) and was killed"
        assert items["hog.jpg"]["error"] == (
            "the job used more than the memory limit of 150 MB (job_memory_limit_mb) and was stopped"
        )
        assert [items[f"fine-{n}.jpg"]["status"] for n in range(4)] == ["done"] * 4
        assert set(daemon.zip_members("mixed")) == {f"fine-{n}.png" for n in range(4)}
        # The fine ones did not wait for the hung one: they ran beside it.
        finished = {e["item"]: e for e in daemon.events("job_finished")}
        assert max(finished[f"fine-{n}.jpg"]["timestamp"] for n in range(2)) < finished["hang.jpg"]["timestamp"]


def test_sigterm_with_three_in_flight_requeues_them_all_within_ten_seconds_and_a_restart_finishes_each_once(root):
    daemon = Daemon(root, job_slots=SLOTS, session_idle_seconds=30).start()
    for n in range(3):
        drop(root / "inbox", f"shoot/{n}.jpg", "ignore-term" if n == 1 else "sleep")
    drop(root / "inbox", "shoot/later.jpg", "ok")
    started = running_jobs(daemon, SLOTS)
    asked = time.monotonic()
    assert daemon.stop(signal.SIGTERM) == 0
    assert time.monotonic() - asked < 10
    assert processing(root) == []
    status = daemon.status("shoot")
    assert {i["name"]: (i["status"], i["error"], i["attempts"]) for i in status["items"]} == {
        **{f"{n}.jpg": ("queued", None, 1) for n in range(3)},
        "later.jpg": ("queued", None, 0),
    }
    assert not any(alive(e["pid"]) for e in started), "a job outlived its daemon"
    # The next life runs them again, now with a timeout that ends them.
    again = Daemon(root, job_slots=SLOTS, session_idle_seconds=0.5, job_timeout_seconds=1.5).start()
    try:
        done = again.wait_complete("shoot", 40)
    finally:
        again.stop()
    counts = done["counts"]
    assert counts["done"] == 1 and counts["failed"] == 3, done  # the sleepers time out now; later.jpg is done
    assert set(again.zip_members("shoot")) == {"later.png"}
    finished = [e["item"] for e in again.events("job_finished") if e["status"] in ("done", "failed")]
    assert sorted(finished) == ["0.jpg", "1.jpg", "2.jpg", "later.jpg"], "an item ran twice or not at all"


def test_a_restart_after_kill_9_ends_every_job_of_the_previous_life_even_one_whose_pid_was_not_recorded(root):
    daemon = Daemon(root, job_slots=SLOTS).start()
    for n in range(3):
        drop(root / "inbox", f"shoot/{n}.jpg", "sleep")
    pids = [e["pid"] for e in running_jobs(daemon, SLOTS)]
    daemon.kill()
    # As if the kill had landed between a job's start and the recording of its pid.
    with sqlite3.connect(root / "state" / "bgremover.sqlite3") as db:
        db.execute("UPDATE items SET job_pid = NULL WHERE name = '1.jpg'")
    assert all(alive(pid) for pid in pids), "the jobs should outlive a kill -9 of their daemon"
    restarted = Daemon(root, job_slots=SLOTS, job_timeout_seconds=1).start()
    try:
        assert not any(alive(pid) for pid in pids), "a job of the previous life still runs"
        recorded = sorted(e["item"] for e in restarted.events("leftover_job_killed"))
        assert recorded == ["0.jpg", "2.jpg"]
        assert pids[1] in {e["pid"] for e in restarted.events("leftover_process_killed")}
        restarted.wait_complete("shoot", 40)
    finally:
        restarted.stop()


def test_status_metrics_and_the_log_say_how_many_jobs_run(root):
    port = free_port()
    with Daemon(root, job_slots=SLOTS, metrics_port=port, session_idle_seconds=30) as daemon:
        chosen = daemon.events("job_slots_chosen")
        assert chosen and chosen[0]["slots"] == SLOTS and chosen[0]["reason"].startswith("job_slots = 3, ")
        for n in range(4):
            drop(root / "inbox", f"shoot/{n}.jpg", "sleep")
        running_jobs(daemon, SLOTS)
        env = {key: value for key, value in os.environ.items() if not key.startswith("BGREMOVER_")}
        text = subprocess.run(
            [sys.executable, "-m", "bgremover", "status", "--root", str(root)],
            cwd=REPO,
            env={**env, "PYTHONPATH": str(REPO)},
            capture_output=True,
            text=True,
            check=True,
        )
        first = text.stdout.splitlines()[0]
        assert first.startswith(f"daemon: running (pid {daemon.process.pid}, 3 job slots); 1 queued, 3 processing")
        samples = wait_for(
            lambda: (s := scrape(port)) and value(s, "bgremover_jobs_running") == 3 and s,
            10,
            what="the metrics to show 3 jobs",
        )
        assert value(samples, "bgremover_job_slots") == 3
        assert all(0 < value(samples, "bgremover_job_slot_busy_ratio", slot=str(n)) <= 1 for n in range(3))
        (root / "cancel" / "shoot").touch()
        daemon.wait_complete("shoot", 20)


def test_by_default_the_daemon_chooses_its_slots_from_this_machine_and_says_why(root):
    from bgremover.settings import usable_cores
    from bgremover.supervisor.slots import available_memory_mb, choose

    daemon = Daemon(root)
    del daemon.env["BGREMOVER_JOB_SLOTS"]  # the harness's one slot: this test wants the default
    with daemon:
        chosen = daemon.events("job_slots_chosen")[0]
        # The same rule on the same figures (the memory available moves a little between two reads).
        expected = choose("auto", usable_cores(), available_memory_mb(), 3072)
        assert chosen["slots"] == expected.slots and chosen["threads_per_job"] == expected.threads
        assert chosen["reason"].startswith(f"job_slots = auto: {expected.slots}, ")
        assert daemon.events("daemon_ready")[-1]["job_slots"] == expected.slots
        for n in range(expected.slots + 1):
            drop(root / "inbox", f"shoot/{n}.jpg", "sleep 0.5")
        assert daemon.wait_complete("shoot", 30)["counts"]["done"] == expected.slots + 1


def test_a_job_killed_by_a_real_time_signal_fails_its_item_by_name_while_the_other_slots_finish(root):
    with Daemon(root, job_slots=SLOTS) as daemon:
        drop(root / "inbox", "mixed/rt.jpg", f"signal {signal.SIGRTMIN + 3}")
        for n in range(4):
            drop(root / "inbox", f"mixed/fine-{n}.jpg", "sleep 0.5")
        status = daemon.wait_complete("mixed", 40)
        items = items_by_name(status)
        assert (items["rt.jpg"]["status"], items["rt.jpg"]["error"]) == ("failed", "the job was killed by SIGRTMIN+3")
        assert [items[f"fine-{n}.jpg"]["status"] for n in range(4)] == ["done"] * 4
        assert not daemon.events("upkeep_failed"), daemon.events("upkeep_failed")


def test_a_restart_leaves_alive_a_process_that_took_over_a_recorded_jobs_pid(root):
    daemon = Daemon(root, job_slots=1).start()
    drop(root / "inbox", "shoot/0.jpg", "sleep")
    [job] = running_jobs(daemon, 1)
    daemon.kill()
    # As if the job had ended and its pid had gone to another process since: another
    # root's job, say, leading its own process group and naming the job module on its
    # command line, so that only its start time tells them apart.
    impostor = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(60)", "tests.support.fakejob"], process_group=0
    )
    try:
        with sqlite3.connect(root / "state" / "bgremover.sqlite3") as db:
            db.execute("UPDATE items SET job_pid = ? WHERE name = '0.jpg'", (impostor.pid,))
        restarted = Daemon(root, job_slots=1, job_timeout_seconds=1).start()
        try:
            assert impostor.poll() is None, "a process that is not the recorded job was killed"
            assert not restarted.events("leftover_job_killed")
            assert not alive(job["pid"]), "the job itself, its pid no longer recorded, still runs"
            restarted.wait_complete("shoot", 40)
        finally:
            restarted.stop()
    finally:
        impostor.kill()
        impostor.wait()
