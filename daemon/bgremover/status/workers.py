"""The worker hosts a supervisor with runner = "celery" has heard of recently, for `bgremover status`.

Each worker puts its name, slots, version and what keeps it from taking work
(if anything) in Redis every few seconds (runners/celery/marks.py); a worker
silent for half a minute is no longer listed. A worker that takes no work is
listed with why, and its slots are not counted. The running daemon writes what
it heard into state/workers.json (service/facts.py), which is read first: the
caller needs neither the runner's settings nor the broker's URL. With no
daemon running, Redis is asked only where the caller's runner is celery, so a
single machine's status never imports Redis.
"""

from __future__ import annotations

import time

from bgremover.brokerurl import shown
from bgremover.service.facts import read_workers
from bgremover.settings import Settings


def seen(settings: Settings, pid: int | None) -> tuple[list[dict], str | None] | None:
    """The workers heard of recently, by name, and why none could be read; None where no runner of other
    hosts is known (the daemon `pid` published none, and the caller's runner is not celery)."""
    published = read_workers(settings.state_dir, pid)
    if published is not None:
        heard = {name: facts for name, facts in published["workers"].items() if "slots" in facts}
        return listed(heard), published.get("problem")
    if settings.runner != "celery":
        return None
    try:
        from bgremover.runners.celery.marks import Marks

        found = Marks(settings.broker_url.get_secret_value()).workers()
    except Exception as exc:  # noqa: BLE001 - redis raises several kinds; status shows what it can
        return [], f"cannot reach the broker at {shown(settings.broker_url.get_secret_value())}: {exc}"
    return listed(found), None


def listed(found: dict[str, dict]) -> list[dict]:
    now = time.time()
    return [
        {
            "name": name,
            "slots": facts.get("slots"),
            "seen_s_ago": round(max(0.0, now - facts.get("seen", now)), 1),
            "version": facts.get("version"),
            "problem": facts.get("problem"),
            "models": facts.get("models", []),
        }
        for name, facts in sorted(found.items())
    ]


def lines(workers: list[dict], problem: str | None) -> list[str]:
    """`workers: 2, 5 slots: w1@host-a (4 slots, 3 s ago), w2@host-b (1 slot, 1 s ago)`, then a line for each
    worker that takes no work, saying why (its slots are not counted)."""
    if problem:
        return [f"workers: {problem}"]
    if not workers:
        return ["workers: none heard of in the last 30 s (start `bgremover worker` on the worker hosts)"]
    slots = sum(worker["slots"] or 0 for worker in workers if not worker.get("problem"))
    each = ", ".join(
        f"{worker['name']} ({worker['slots']} slot{'' if worker['slots'] == 1 else 's'}, "
        f"{worker['seen_s_ago']:g} s ago{', takes no work' if worker.get('problem') else ''})"
        for worker in workers
    )
    unfit = [f"  {worker['name']} takes no work: {worker['problem']}" for worker in workers if worker.get("problem")]
    return [f"workers: {len(workers)}, {slots} slot{'' if slots == 1 else 's'}: {each}", *unfit]
