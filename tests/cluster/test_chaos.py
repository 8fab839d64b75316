"""Chaos, bounded in time and count: a real redis-server, the real supervisor and three real workers on one root.

While 80 images in 4 sessions run (4 of them poison: the job kills itself every
time), workers are killed -9 and restarted, job processes are killed -9, the
supervisor is killed -9 twice and restarted, Redis restarts once (its data
gone), one session is cancelled mid-run and one failed item is retried.
Afterwards every item is terminal exactly once, and each ZIP holds its done
items, each once.
"""

from __future__ import annotations

import os
import random
import signal
import time
import zipfile
from pathlib import Path

import pytest

from bgremover.queue.states import TERMINAL, Status, allowed
from bgremover.queue.store import Store
from tests.support.cluster import Redis, Worker, celery_daemon, descendants, kill_host
from tests.support.harness import drop, wait_for

pytestmark = pytest.mark.timeout(600)

SESSIONS = ("alpha", "bravo", "charlie", "delta")
PER_SESSION = 20
POISON = {("alpha", 3), ("bravo", 7), ("charlie", 11), ("delta", 15)}
CANCELLED_SESSION = "delta"
FAILED_REASONS = ("the job was killed by SIGKILL", "worker lost:", "cancelled while processing")


def job_processes(workers: list[Worker]) -> list[int]:
    """The fork servers' processes under the workers: their standbys and running jobs."""
    found = []
    for worker in workers:
        for pid in descendants(worker.process.pid):
            try:
                if b"bgremover.runners.forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
    return found


def test_chaos_every_item_is_terminal_exactly_once(tmp_path):
    chance = random.Random(20261203)
    root = tmp_path / "root"
    broker = Redis(tmp_path / "redis").start()
    daemon = celery_daemon(root, broker.url, job_slots=4, session_idle_seconds=3)
    workers = [Worker(root, broker.url, f"w{n}") for n in range(3)]
    try:
        daemon.start()
        for worker in workers:
            worker.start()
        for session in SESSIONS:
            for n in range(PER_SESSION):
                drop(root / "inbox", f"{session}/img{n:02}.jpg", "sigkill" if (session, n) in POISON else "sleep 1.2")
        disturb(chance, daemon, broker, workers, root)
        statuses = wait_for(lambda: all_complete(daemon), timeout=400, interval=0.5, what="every session complete")
        retried = retry_one_failed(daemon, root, statuses)
        statuses = wait_for(lambda: all_complete(daemon) if item_of(daemon, *retried)["attempts"] > 1 else None,
                            timeout=200, interval=0.5, what="the retried item finished again")
        log = daemon.log()
        events = read_events(root)
        harm = {name: len(daemon.events(name)) for name in ("worker_lost", "broker_unreachable", "daemon_ready")}
    finally:
        for worker in workers:
            worker.stop()
        if daemon.process and daemon.process.poll() is None:
            daemon.stop()
        broker.stop()
    assert harm["worker_lost"] and harm["broker_unreachable"] and harm["daemon_ready"] == 3, harm
    dropped = {(session, f"img{n:02}.jpg") for session in SESSIONS for n in range(PER_SESSION)}
    items = {(session, item["name"]): item for session, status in statuses.items() for item in status["items"]}
    assert set(items) == dropped, "done + failed + cancelled = dropped"
    assert all(Status(item["status"]) in TERMINAL for item in items.values())
    for session, status in statuses.items():
        with zipfile.ZipFile(root / "outbox" / f"{session}.zip") as archive:
            members = [info.filename for info in archive.infolist()]
        done = sorted(item["output"] for item in status["items"] if item["status"] == "done")
        assert sorted(members) == done, f"{session}: the ZIP holds exactly its done items, each once"
    for key, item in items.items():
        if item["status"] == "failed":
            assert item["error"] and item["error"].startswith(FAILED_REASONS), (key, item["error"])
    for session, n in POISON - {(CANCELLED_SESSION, 15)}:
        assert items[(session, f"img{n:02}.jpg")]["status"] == "failed"
    assert any(item["status"] == "cancelled" for key, item in items.items() if key[0] == CANCELLED_SESSION)
    illegal = [(src, dst) for src, dst in events if src is not None and not allowed(Status(src), Status(dst))]
    assert illegal == [], "no illegal move in the events"
    assert "transition_refused" not in log and "upkeep_failed" not in log
    done_twice = [key for key, item in items.items() if item["status"] == "done" and
                  sum(1 for line in log.splitlines() if '"job_finished"' in line and '"status": "done"' in line
                      and f'"session": "{key[0]}", "item": "{key[1]}"' in line) != 1]
    assert done_twice == [], "each done item was recorded done exactly once"


def disturb(chance: random.Random, daemon, broker: Redis, workers: list[Worker], root: Path) -> None:
    """Ten rounds, a second or two apart, each doing one or two kinds of harm."""
    wait_for(lambda: daemon.events("job_started"), what="the first job")
    for round_ in range(10):
        time.sleep(chance.uniform(1.0, 2.0))
        victim = chance.choice(workers)
        kill_host(victim)  # kill -9 of a worker, and of everything it ran
        victim.stop()
        victim.start()
        for pid in chance.sample(jobs := job_processes(workers), k=min(2, len(jobs))):
            with_pid_gone(pid)
        if round_ in (3, 7):
            daemon.kill()
            daemon.start()
        if round_ == 5:
            broker.stop()
            time.sleep(1)
            broker.start()
        if round_ == 2:
            (root / "cancel" / CANCELLED_SESSION).touch()


def with_pid_gone(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def all_complete(daemon) -> dict | None:
    statuses = {session: daemon.status(session) for session in SESSIONS}
    if all(status and status["state"] == "complete" for status in statuses.values()):
        return statuses
    return None


def retry_one_failed(daemon, root: Path, statuses: dict) -> tuple[str, str]:
    session, name = next((session, item["name"]) for session, status in statuses.items() if session != CANCELLED_SESSION
                         for item in status["items"] if item["status"] == "failed")
    (root / "retry" / session / name).touch()
    return session, name


def item_of(daemon, session: str, name: str) -> dict:
    status = daemon.status(session) or {"items": []}
    return next((item for item in status["items"] if item["name"] == name), {"attempts": 0})


def read_events(root: Path) -> list[tuple[str | None, str]]:
    store = Store(root / "state" / "bgremover.sqlite3", readonly=True)
    try:
        return [(row["src"], row["dst"]) for row in store.events()]
    finally:
        store.close()
