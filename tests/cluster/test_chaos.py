"""Chaos, bounded in time and count: a real redis-server, the real supervisor and three real workers on one root.

While 300 images in 4 sessions run (8 of them poison: the job kills itself every
time), workers are killed -9 and restarted, job processes are killed -9, one
worker is stopped (SIGSTOP) past the visibility timeout and its lease, then
continued, the supervisor is killed -9 twice and restarted, Redis restarts once
(its data gone), one session is cancelled mid-run and one failed item is
retried. Afterwards every item is terminal exactly once, each ZIP holds its
done items, each once, and the logs show the fences at work: duplicate
deliveries refused by the lease, and an item whose first attempt ran to its
end after it had been given up, its late answer refused.
"""

from __future__ import annotations

import json
import os
import random
import signal
import time
import zipfile
from pathlib import Path

import pytest

from bgremover.queue.states import TERMINAL, Status, allowed
from bgremover.queue.store import Store
from tests.support.cluster import Redis, Worker, celery_daemon, descendants, freeze, kill_host, thaw
from tests.support.harness import drop, wait_for

pytestmark = pytest.mark.timeout(600)

SESSIONS = ("alpha", "bravo", "charlie", "delta")
PER_SESSION = 75
POISON = {
    ("alpha", 3),
    ("alpha", 40),
    ("bravo", 7),
    ("bravo", 52),
    ("charlie", 11),
    ("charlie", 64),
    ("delta", 15),
    ("delta", 70),
}
CANCELLED_SESSION = "delta"
QUICK = {"broker_visibility_timeout_seconds": 4}  # test-sized, so that a stopped worker's task is delivered again
STOPPED_FOR = 24  # seconds: past the visibility timeout, the lease (15 s) and the supervisor's look at it (5 s)
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
    daemon = celery_daemon(root, broker.url, job_slots="auto", session_idle_seconds=3, **QUICK)
    workers = [Worker(root, broker.url, f"w{n}", **QUICK) for n in range(3)]
    try:
        daemon.start()
        workers[-1].start()  # the one that will hang takes the first jobs
        for session in SESSIONS:
            for n in range(PER_SESSION):
                drop(root / "inbox", f"{session}/img{n:02}.jpg", job_body(session, n))
        hung = hang(workers[-1])
        for worker in workers[:-1]:
            worker.start()
        disturb(chance, daemon, broker, workers, root, hung)
        statuses = wait_for(lambda: all_complete(daemon), timeout=400, interval=0.5, what="every session complete")
        retried = retry_one_failed(daemon, root, statuses)
        before = item_of(daemon, *retried)["attempts"]
        statuses = wait_for(
            lambda: all_complete(daemon) if item_of(daemon, *retried)["attempts"] > before else None,
            timeout=200,
            interval=0.5,
            what="the retried item finished again",
        )
        log = daemon.log()
        events = read_events(root)
        harm = {name: len(daemon.events(name)) for name in ("worker_lost", "broker_unreachable", "daemon_ready")}
        late = daemon.events("late_answer_refused")
        said = [record for worker in workers for record in worker_records(worker)]
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
    for session, n in {poison for poison in POISON if poison[0] != CANCELLED_SESSION}:
        assert items[(session, f"img{n:02}.jpg")]["status"] == "failed"
    assert any(item["status"] == "cancelled" for key, item in items.items() if key[0] == CANCELLED_SESSION)
    illegal = [(src, dst) for src, dst in events if src is not None and not allowed(Status(src), Status(dst))]
    assert illegal == [], "no illegal move in the events"
    assert "transition_refused" not in log and "upkeep_failed" not in log
    done_twice = [
        key
        for key, item in items.items()
        if item["status"] == "done"
        and sum(
            1
            for line in log.splitlines()
            if '"job_finished"' in line
            and '"status": "done"' in line
            and f'"session": "{key[0]}", "item": "{key[1]}"' in line
        )
        != 1
    ]
    assert done_twice == [], "each done item was recorded done exactly once"
    duplicates = [r for r in said if r["event"] == "task_refused" and r["reason"].startswith("a duplicate delivery")]
    assert duplicates, "no duplicate delivery was refused: the lease was never put to the test"
    finished = {}
    for record in said:
        if record["event"] == "task_finished":
            finished.setdefault(record["item"], []).append(record["task"])
    ran_twice = [r["task"] for r in late if len(finished.get(int(r["task"].split("-")[1]), [])) >= 2]
    assert ran_twice, f"no item ran twice with one answer refused: late answers {late}"


def worker_records(worker: Worker) -> list[dict]:
    return [json.loads(line) for line in worker.log().splitlines() if line.startswith("{")]


def job_body(session: str, n: int) -> str:
    if (session, n) in POISON:
        return "sigkill"
    return "sleep 4" if n < 3 else "sleep 0.3"  # the first few long enough to be caught running


def hang(worker: Worker) -> list[int]:
    """SIGSTOP the worker and all it runs while one of its jobs is under way (a host that hangs mid-job)."""
    for _ in range(20):
        seen = len(
            wait_for(
                lambda: [r for r in worker_records(worker) if r["event"] == "task_started"],
                what="a job on the worker to hang",
            )
        )
        hung = freeze(worker)
        events = [r["event"] for r in worker_records(worker)]
        if events.count("task_started") > events.count("task_finished"):
            return hung
        thaw(hung)  # it was between jobs: let it take the next one
        wait_for(
            lambda seen=seen: len([r for r in worker_records(worker) if r["event"] == "task_started"]) > seen,
            what="the worker's next job",
        )
    raise AssertionError("the worker was never caught with a job under way")


def disturb(chance: random.Random, daemon, broker: Redis, workers: list[Worker], root: Path, hung: list[int]) -> None:
    """Harm a second or two apart: first while the last worker hangs, then, once its late answer was refused,
    with the supervisor killed twice and Redis restarted (so that neither wipes the fence being proven)."""
    stopped_at, round_ = time.monotonic(), 0
    while hung:
        harm_workers(chance, workers[:-1])
        if round_ == 2:
            (root / "cancel" / CANCELLED_SESSION).touch()
        if time.monotonic() - stopped_at > STOPPED_FOR:
            thaw(hung)
            hung = []
        round_ += 1
    wait_for(lambda: daemon.events("late_answer_refused"), timeout=60, what="the hung worker's late answer refused")
    for round_ in range(8):
        harm_workers(chance, workers)
        if round_ in (1, 5):
            daemon.kill()
            daemon.start()
        if round_ == 3:
            broker.stop()
            time.sleep(1)
            broker.start()


def harm_workers(chance: random.Random, workers: list[Worker]) -> None:
    """After a pause, kill -9 one worker host (all it ran) and restart it, and kill -9 two job processes."""
    time.sleep(chance.uniform(1.5, 2.5))
    victim = chance.choice(workers)
    kill_host(victim)
    victim.stop()
    victim.start()
    for pid in chance.sample(jobs := job_processes(workers), k=min(2, len(jobs))):
        with_pid_gone(pid)


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
    session, name = next(
        (session, item["name"])
        for session, status in statuses.items()
        if session != CANCELLED_SESSION
        for item in status["items"]
        if item["status"] == "failed"
    )
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
