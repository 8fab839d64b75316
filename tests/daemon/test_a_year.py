"""A year in a test: a daemon with a long past starts, answers and works as one with a short past does.

A root is prepared as a year of steady work leaves it (a million done items in
ten thousand complete sessions, their events, retry folders and the newest
status JSONs), and another with a tenth of that. What a start, a `bgremover
status` or the page's `/api/status` costs must follow the work under way, not
the history behind it: the year's start is as quick as the tenth's, a read is
small and quick, a new session still goes through, and the supervisor stays small.
"""

from __future__ import annotations

import json
import os
import resource
import time
from pathlib import Path

import pytest

from bgremover.settings import load_settings
from bgremover.status.view import PAGE_SIZE, frame
from bgremover.web.reading import REUSE_S
from tests.support.harness import Daemon, drop
from tests.support.history import History, prepare
from tests.support.status_view import status
from tests.support.web import WebPage

YEAR = History(sessions=10_000, items_per_session=100)
TENTH = History(sessions=1_000, items_per_session=100)
READY_WITHIN_S = 5.0
ANSWER_WITHIN_S = 1.0
ANSWER_AT_MOST_BYTES = 1_000_000
RSS_AT_MOST_KB = 100 * 1024
# The whole year stays in the database, as keep_sessions_days = 0 keeps it: the largest history a daemon reads.
# (With the default 30 days, retention would start forgetting it, and each test would see a different past.)
KEEP_ALL = {"keep_sessions_days": 0}


@pytest.fixture(scope="module")
def roots(tmp_path_factory) -> dict[str, Path]:
    """The year's root and the tenth's, each prepared once for the module."""
    made = {}
    for label, history in (("year", YEAR), ("tenth", TENTH)):
        root = tmp_path_factory.mktemp(label) / "root"
        started = time.monotonic()
        prepare(root, history, time.time())
        print(
            f"{label}: {history.items} items in {history.sessions} sessions prepared in "
            f"{time.monotonic() - started:.1f} s"
        )
        made[label] = root
    return made


def time_to_ready(root: Path) -> float:
    """The supervisor's CPU seconds from `bgremover run` to its daemon_ready, the daemon stopped again after; the
    better of two starts.

    CPU time, not wall time: what a start costs grows with history or not, a loaded machine's waits do not. Two
    starts, so that one slowed by other work on the machine does not decide; both read the whole history.
    """
    return min(one_start(root) for _ in range(2))


def one_start(root: Path) -> float:
    with Daemon(root, **KEEP_ALL) as daemon:
        return cpu_seconds_of(daemon.process.pid)


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_a_year_of_history_starts_within_seconds_and_no_slower_than_a_tenth_of_it(roots):
    tenth = time_to_ready(roots["tenth"])
    year = time_to_ready(roots["year"])
    print(f"ready after {tenth:.2f} s of CPU with {TENTH.items} items, {year:.2f} s with {YEAR.items}")
    assert year < READY_WITHIN_S, f"ready after {year:.1f} s with a year of history"
    assert year <= 1.5 * tenth + 1.0, f"ready after {year:.2f} s with a year, {tenth:.2f} s with a tenth of it"


def test_status_and_the_page_document_answer_quickly_and_small_beside_a_year(roots, tmp_path):
    root = roots["year"]
    settings = load_settings(root=root)
    with Daemon(root, **KEEP_ALL), WebPage(root) as web:
        for as_json in (False, True):
            # CPU time, not wall time: what the read costs grows with history or not, a loaded machine's waits do not.
            started = time.process_time()
            answer = frame(settings, None, as_json, None, time.time())
            took = time.process_time() - started
            print(f"status {'--json ' if as_json else ''}read: {len(answer.encode())} bytes in {took:.3f} s of CPU")
            assert took < ANSWER_WITHIN_S, f"the status {'document' if as_json else 'text'} took {took:.2f} s to read"
            assert len(answer.encode()) < ANSWER_AT_MOST_BYTES
            older = YEAR.sessions - PAGE_SIZE  # the newest page shown, the rest a page away
            if as_json:
                assert json.loads(answer)["older_sessions"] == older
            else:
                assert f"{older} older complete sessions not shown" in answer
        # The command as a user runs it: what it costs beyond starting Python, which no history changes.
        bare = command_seconds(tmp_path / "empty")
        whole = command_seconds(root)
        print(f"`bgremover status`: {whole:.2f} s of CPU beside a year, {bare:.2f} s on an empty root")
        assert whole < bare + ANSWER_WITHIN_S
        web.status()  # the web process's first look pays for its imports; the page polls every second after
        time.sleep(REUSE_S * 2)  # past the moment a look is handed out again: this one reads the database
        started = cpu_seconds_of(web.process.pid)
        code, _, body = web.get("/api/status")
        took = cpu_seconds_of(web.process.pid) - started
        print(f"/api/status: {len(body)} bytes in {took:.3f} s of the web process's CPU")
        assert code == 200, body[:500]
        assert took < ANSWER_WITHIN_S, f"/api/status took {took:.2f} s"
        assert len(body) < ANSWER_AT_MOST_BYTES
        newest = json.loads(body)["sessions"][-1]
        assert newest["name"] == "shoot-009999" and newest["total"] == 100, "the newest session is shown whole"


def cpu_seconds_of(pid: int) -> float:
    """A running process's CPU seconds so far, user and system, all its threads (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def command_seconds(root: Path) -> float:
    """The command's CPU seconds: work that grows with history counts, a loaded machine's waits do not."""
    root.mkdir(parents=True, exist_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    assert status(root).returncode == 0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def test_a_new_session_completes_beside_a_year_and_the_supervisor_stays_small(roots):
    root = roots["year"]
    with Daemon(root, **KEEP_ALL) as daemon:
        for n in range(5):
            drop(root / "inbox", f"new-shoot/photo-{n}.jpg")
        document = daemon.wait_complete("new-shoot")
        assert document["counts"]["done"] == 5
        kb = rss_kb(daemon.process.pid)
        print(f"supervisor RSS {kb / 1024:.1f} MB")
        assert kb < RSS_AT_MOST_KB, f"supervisor RSS {kb / 1024:.1f} MB"
        assert os.path.exists(root / "outbox" / "new-shoot.zip")
