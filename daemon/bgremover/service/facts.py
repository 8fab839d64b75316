"""What the running daemon says about itself for its readers: state/daemon.json.

`bgremover status` and the web page read the queue from the database; how the
daemon runs it (its pid, how many job slots, how many threads each) is known
only to the daemon, which writes it here once at start-up, durably. A reader
trusts it only while that same pid holds the root's lock.

Under a runner of other hosts the daemon also writes the workers it last
heard of into state/workers.json, every few seconds, so `bgremover status`
lists them without the runner's settings or the broker's URL in the caller's
environment (and without the password anywhere a reader can see).
"""

from __future__ import annotations

import json
from pathlib import Path

from bgremover import durable

FACTS_NAME = "daemon.json"
WORKERS_NAME = "workers.json"


def write_facts(state_dir: Path, facts: dict) -> None:
    durable.atomic_write(state_dir / FACTS_NAME, json.dumps(facts, sort_keys=True).encode("utf-8"))


def read_facts(state_dir: Path, pid: int | None, name: str = FACTS_NAME) -> dict:
    """The facts of the daemon `pid` (the one holding the lock); {} if none, or if they are another life's."""
    if pid is None:
        return {}
    try:
        facts = json.loads((state_dir / name).read_bytes())
    except (OSError, ValueError):
        return {}
    return facts if isinstance(facts, dict) and facts.get("pid") == pid else {}


def write_workers(state_dir: Path, pid: int, broker: str, workers: dict[str, dict], problem: str | None) -> None:
    """The workers as the daemon last heard of them (name -> heartbeat facts and tally); `broker` as shown;
    `problem`: why the broker cannot be reached now, if it cannot."""
    document = {"pid": pid, "broker": broker, "workers": workers, "problem": problem}
    durable.atomic_write(state_dir / WORKERS_NAME, json.dumps(document, sort_keys=True).encode("utf-8"))


def read_workers(state_dir: Path, pid: int | None) -> dict | None:
    """What write_workers wrote, if the daemon `pid` wrote it; None otherwise."""
    return read_facts(state_dir, pid, WORKERS_NAME) or None
