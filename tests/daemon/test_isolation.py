"""Process isolation: every image in a fresh process, and nothing of a job, the fork server or a standby outlives its use.

Real daemons with fake job bodies (tests/support/fakejob.py). The daemon starts one
fork server (`python -m bgremover.runners.forkserver`, a child of the daemon, with the
root on its command line) and keeps one standby job process waiting: forked
from the server, re-parented to the daemon, alone in its own process group.
These tests find both through /proc, kill them for real, and check what the
daemon's process tree looks like afterwards.
"""

from __future__ import annotations

import json
import os
import signal
from datetime import datetime
from pathlib import Path

import pytest

from tests.support.harness import Daemon, drop, wait_for


@pytest.fixture
def root(tmp_path) -> Path:
    return tmp_path / "root"


# ---------------------------------------------------------------- the process tree, from /proc


def stat_of(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None once it is gone (reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name may contain spaces or parentheses; the state follows the last ')'.
    state, ppid, pgrp = stat.rsplit(")", 1)[1].split()[:3]
    return state, int(ppid), int(pgrp)


def children_of(pid: int) -> list[int]:
    """Every child of `pid`, zombies included: the kernel's list for each of its threads."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            found += [int(child) for child in children.read_text().split()]
        except OSError:  # the thread ended meanwhile
            pass
    return sorted(set(found))


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def zombies_of(pid: int) -> list[int]:
    return [child for child in children_of(pid) if (stat_of(child) or ("",))[0] == "Z"]


def forkserver_of(daemon: Daemon) -> int:
    """The daemon's fork server: its child running bgremover.runners.forkserver, in the daemon's own process group."""
    found = [
        child for child in children_of(daemon.process.pid)
        if b"bgremover.runners.forkserver" in cmdline(child) and (s := stat_of(child)) and s[0] != "Z" and s[2] != child
    ]  # fmt: skip
    assert len(found) == 1, f"expected one fork server among the daemon's children, found {found}"
    return found[0]


def standbys_of(daemon: Daemon) -> list[int]:
    """Live children of the daemon that lead their own process group: the standby and the running job."""
    return [
        child for child in children_of(daemon.process.pid) if (s := stat_of(child)) and s[0] != "Z" and s[2] == child
    ]


def the_standby(daemon: Daemon) -> int:
    found = wait_for(lambda: standbys_of(daemon), what="the waiting job process")
    assert len(found) == 1, f"expected one waiting job process while idle, found {found}"
    return found[0]


def processes_mentioning(text: str) -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit() and text.encode() in cmdline(int(p.name))]


# ---------------------------------------------------------------- one fresh process per job


def warming_daemon(root: Path, warmed: Path) -> Daemon:
    """A daemon whose waiting processes each mark their warm-up in `warmed` (tests/support/fakejob.py `warm`)."""
    warmed.mkdir()
    daemon = Daemon(root)
    daemon.env["BGREMOVER_TEST_WARM_DIR"] = str(warmed)
    return daemon


def the_standby_warmed(daemon: Daemon, warmed: Path) -> int:
    first = the_standby(daemon)
    wait_for(lambda: (warmed / str(first)).exists(), what="the idle daemon's standby to warm up")
    return first


def the_next_standby_warmed(daemon: Daemon, warmed: Path, started: list[int]) -> int:
    """The standby made after the jobs `started`, once it has warmed up."""
    second = wait_for(lambda: [pid for pid in standbys_of(daemon) if pid not in started], what="a new standby")
    wait_for(lambda: (warmed / str(second[0])).exists(), what="the next idle standby to warm up")
    return second[0]


def test_an_idle_daemon_lets_its_waiting_process_warm_up_and_a_busy_one_does_not(root, tmp_path):
    warmed = tmp_path / "warmed"
    with warming_daemon(root, warmed) as daemon:
        first = the_standby_warmed(daemon, warmed)

        for name in ("a.jpg", "b.jpg", "c.jpg"):
            drop(root / "inbox", f"busy/{name}", "ok")
        daemon.wait_complete("busy")
        started = [event["pid"] for event in daemon.events("job_started")]

        # The jobs of the batch ran in processes that were handed their job without
        # a warm-up, except the first, which had waited while the daemon was idle.
        assert started[0] == first
        assert all(not (warmed / str(pid)).exists() for pid in started[1:]), "a process warmed while items waited"
        the_next_standby_warmed(daemon, warmed, started)
    # Dismissed at the stop after its warm-up, the waiting process leaves quietly.
    assert "Traceback" not in daemon.log(), daemon.log()


def test_a_standby_waits_to_warm_up_until_the_zip_is_written(root, tmp_path):
    warmed, gate = tmp_path / "warmed", tmp_path / "gate"
    with warming_daemon(root, warmed) as daemon:
        the_standby_warmed(daemon, warmed)
        drop(root / "inbox", "big/a.jpg", f"bytes 300 {gate}")  # a 300 MiB result: its ZIP takes a while to write
        # The session closes while its one job waits: the job's end leaves the daemon nothing but the ZIP.
        wait_for(lambda: daemon.events("session_closed"), what="the session to close")
        gate.write_text("open")
        daemon.wait_complete("big")
        started = [event["pid"] for event in daemon.events("job_started")]
        second = the_next_standby_warmed(daemon, warmed, started)
        (written,) = daemon.events("zip_written")
    # No image waited and no job ran once the job ended, but the warm-up waited for the ZIP the user waits for.
    warmed_at = (warmed / str(second)).stat().st_mtime
    assert warmed_at > datetime.fromisoformat(written["timestamp"]).timestamp()


def test_every_job_runs_in_a_fresh_process_of_its_own_group_adopted_by_the_daemon(root, tmp_path):
    reports = {name: tmp_path / f"{name}.whoami.json" for name in ("a", "b", "c")}
    with Daemon(root) as daemon:
        for name, report in reports.items():
            drop(root / "inbox", f"fresh/{name}.jpg", f"whoami {report}")
        status = daemon.wait_complete("fresh")
        assert status["counts"]["done"] == 3

        jobs = {name: json.loads(report.read_text()) for name, report in reports.items()}
        pids = [job["pid"] for job in jobs.values()]
        assert len(set(pids)) == 3, f"three images must run in three processes: {jobs}"
        for job in jobs.values():
            assert job["jobs_in_this_process"] == 1, f"a process ran more than one job: {job}"
            assert job["ppid"] == daemon.process.pid, f"the job process was not re-parented to the daemon: {job}"
            assert job["pgid"] == job["pid"], f"the job process does not lead its own process group: {job}"
        # Forked from the one preloaded fork server, not started as fresh interpreters.
        assert len({job["preloaded_id"] for job in jobs.values()}) == 1
        # The session is complete only after its last job was reaped.
        assert [pid for pid in pids if stat_of(pid) is not None] == []
        assert {e["pid"] for e in daemon.events("job_started")} == set(pids)


# ---------------------------------------------------------------- faults in the job processes' machinery


def test_a_fork_server_killed_while_idle_is_restarted_and_the_next_files_are_done(root):
    with Daemon(root) as daemon:
        server = forkserver_of(daemon)
        assert str(root).encode() in cmdline(server)
        os.kill(server, signal.SIGKILL)
        wait_for(lambda: (stat_of(server) or ("Z",))[0] == "Z", what="the fork server to die")

        drop(root / "inbox", "after-kill/a.jpg", "ok")
        drop(root / "inbox", "after-kill/b.jpg", "ok")
        status = daemon.wait_complete("after-kill")

        assert {i["name"]: i["status"] for i in status["items"]} == {"a.jpg": "done", "b.jpg": "done"}
        assert len(daemon.events("forkserver_restarting")) == 1
        assert forkserver_of(daemon) != server
        assert stat_of(server) is None, "the killed fork server was left a zombie of the daemon"
        assert daemon.stop() == 0


def kill_the_standby_then_drop_a_file(daemon: Daemon, root: Path) -> tuple[int, dict]:
    """kill -9 the job process waiting for the next item, drop one file; the killed pid and the item at the end."""
    standby = the_standby(daemon)
    assert standby != forkserver_of(daemon)
    os.kill(standby, signal.SIGKILL)
    wait_for(lambda: (stat_of(standby) or ("Z",))[0] == "Z", what="the standby to die")
    drop(root / "inbox", "lost/a.jpg", "ok")
    return standby, daemon.wait_complete("lost")["items"][0]


def test_a_standby_killed_while_waiting_is_replaced_and_its_item_is_done(root):
    with Daemon(root) as daemon:
        standby, item = kill_the_standby_then_drop_a_file(daemon, root)

        assert (item["status"], item["error"]) == ("done", None)
        assert [e["pid"] for e in daemon.events("job_process_lost")] == [standby]
        started = [e["pid"] for e in daemon.events("job_started") if e["item"] == "a.jpg"]
        assert len(started) == 1 and standby not in started, started
        wait_for(lambda: stat_of(standby) is None, 5, what="the dead standby to be reaped")
        assert daemon.zip_members("lost") == {"a.png": b"cutout of ok"}


def test_a_standby_lost_before_its_job_does_not_count_as_an_attempt(root):
    with Daemon(root) as daemon:
        _, item = kill_the_standby_then_drop_a_file(daemon, root)

        assert item["status"] == "done"
        assert item["attempts"] == 1, f"the image ran once, but attempts = {item['attempts']}"


# ---------------------------------------------------------------- what a job leaves behind


@pytest.mark.parametrize("stop", ["timeout", "cancel"])
def test_a_stopped_jobs_grandchild_is_killed_and_reaped(root, tmp_path, stop):
    pidfile = tmp_path / "grandchild.pid"
    with Daemon(root, job_timeout_seconds=2 if stop == "timeout" else 60) as daemon:
        drop(root / "inbox", "spawner/a.jpg", f"grandchild {pidfile}")
        grandchild = int(wait_for(lambda: pidfile.is_file() and pidfile.read_text(), what="the grandchild's pid"))
        if stop == "cancel":
            (root / "cancel" / "spawner").touch()
        status = daemon.wait_complete("spawner")

        assert status["items"][0]["status"] == ("failed" if stop == "timeout" else "cancelled")
        wait_for(lambda: stat_of(grandchild) is None, 5, what="the grandchild to be killed and reaped")
        wait_for(lambda: not zombies_of(daemon.process.pid), 5, what="the daemon to reap every zombie child")
        assert grandchild not in children_of(daemon.process.pid)


def test_a_grandchild_left_behind_by_a_successful_job_is_killed_and_reaped(root, tmp_path):
    pidfile = tmp_path / "orphan.pid"
    with Daemon(root) as daemon:
        drop(root / "inbox", "leaver/a.jpg", f"orphan {pidfile}")
        status = daemon.wait_complete("leaver")

        assert status["items"][0]["status"] == "done"
        grandchild = int(pidfile.read_text())
        wait_for(lambda: stat_of(grandchild) is None, 5, what="the orphaned grandchild to be killed and reaped")
        wait_for(lambda: not zombies_of(daemon.process.pid), 5, what="the daemon to reap every zombie child")


# ---------------------------------------------------------------- stopping


@pytest.mark.parametrize("busy", [False, True], ids=["idle", "job-in-flight"])
def test_after_sigterm_nothing_of_the_daemons_tree_remains(root, busy):
    daemon = Daemon(root).start()
    drop(root / "inbox", "first/done.jpg", "ok")
    daemon.wait_complete("first")
    if busy:
        drop(root / "inbox", "second/slow.jpg", "sleep")
        wait_for(lambda: [e for e in daemon.events("job_started") if e["item"] == "slow.jpg"], what="the slow job")
    # The fork server, the standby waiting for the next item, and the job in flight if there is one.
    groups = wait_for(
        lambda: len(found := standbys_of(daemon)) == (2 if busy else 1) and found,
        what="the standby and the job in flight",
    )
    tree = [forkserver_of(daemon), *groups]

    assert daemon.stop(signal.SIGTERM) == 0

    assert [pid for pid in tree if stat_of(pid) is not None] == []
    assert processes_mentioning(str(root)) == []


def test_the_fork_server_forks_from_one_thread_and_a_job_holds_only_its_own_descriptors(root, tmp_path):
    record = tmp_path / "fds.json"
    with Daemon(root) as daemon:
        server = forkserver_of(daemon)
        the_standby(daemon)  # forked already: what the server holds now, it held at that fork
        threads = sorted(os.listdir(f"/proc/{server}/task"))
        drop(root / "inbox", "a.jpg", f"fds {record}")
        wait_for(lambda: daemon.events("job_finished"), what="the job")
    assert len(threads) == 1, f"the fork server runs {len(threads)} threads"
    held = json.loads(record.read_text())
    # stdin from /dev/null, stdout and stderr to its own log, and nothing else.
    assert sorted(held, key=int) == ["0", "1", "2"], held
    assert held["0"] == "/dev/null" and held["1"] == held["2"] and held["1"].endswith(".log"), held
