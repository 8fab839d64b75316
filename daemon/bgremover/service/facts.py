"""What the running daemon says about itself for its readers: state/daemon.json.

`bgremover status` and the web page read the queue from the database; how the
daemon runs it (its pid, how many job slots, how many threads each) is known
only to the daemon, which writes it here once at start-up, durably. A reader
trusts it only while that same pid holds the root's lock.
"""

from __future__ import annotations

import json
from pathlib import Path

from bgremover import durable

FACTS_NAME = "daemon.json"


def write_facts(state_dir: Path, facts: dict) -> None:
    durable.atomic_write(state_dir / FACTS_NAME, json.dumps(facts, sort_keys=True).encode("utf-8"))


def read_facts(state_dir: Path, pid: int | None) -> dict:
    """The facts of the daemon `pid` (the one holding the lock); {} if none, or if they are another life's."""
    if pid is None:
        return {}
    try:
        facts = json.loads((state_dir / FACTS_NAME).read_bytes())
    except (OSError, ValueError):
        return {}
    return facts if isinstance(facts, dict) and facts.get("pid") == pid else {}
