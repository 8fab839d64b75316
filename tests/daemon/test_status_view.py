"""`bgremover status`, the live view: bars, counts, rate, ETA and failures, once, as JSON, or followed.

The arithmetic is pinned with fixed clocks; the command runs as a real process
beside a real daemon (fake jobs: `sleep 1` takes a second, `bad-input` fails),
after that daemon stopped, and on a root with no database at all.
"""

from __future__ import annotations

import re
import subprocess
from contextlib import closing
from pathlib import Path

from bgremover.queue.states import Status
from bgremover.queue.store import Store
from tests.support.harness import Daemon, drop, wait_for
from tests.support.status_view import BAD_INPUT_ERROR, follow_until, interrupt, start_following, status, status_json

SESSION_LINE = re.compile(
    r"^(?P<name>\S+) +(?P<state>open|processing|complete) +\[(?P<bar>[#.]{20})\]  (?P<finished>\d+)/(?P<total>\d+)"
    r"  (?P<counts>\d+ done(?:, \d+ \w+)*)(?:  rate (?P<rate>\S+)  ETA (?P<eta>\S+))?  (?P<zip>.+)$"
)


# ---------------------------------------------------------------- the command, as a real process


def session_line(output: str, name: str) -> re.Match:
    for line in output.splitlines():
        match = SESSION_LINE.match(line)
        if match and match["name"] == name:
            return match
    raise AssertionError(f"no line for session {name!r} in:\n{output}")


def finished_in(frame: str, name: str) -> int:
    return int(session_line(frame, name)["finished"])


def assert_text_shows_progress(text: subprocess.CompletedProcess, root: Path, pid: int) -> None:
    """Part way through `live` (7 items: 1 failed, at least 2 done, some left), as `status` prints it."""
    assert text.returncode == 0, text.stderr
    lines = text.stdout.splitlines()
    assert re.fullmatch(
        rf"daemon: running \(pid {pid}, 1 job slot\); \d+ queued, [01] processing;"
        r" rate [\d.]+/(s|min), ETA \d+(m\d\d)?s",
        lines[0],
    ), lines[0]
    live = session_line(text.stdout, "live")
    finished = int(live["finished"])
    assert live["total"] == "7" and 3 <= finished < 7
    assert live["bar"] == "#" * (finished * 20 // 7) + "." * (20 - finished * 20 // 7)
    assert re.fullmatch(r"\d+ done, 1 failed(, 1 processing)?(, \d+ queued)?", live["counts"]), live["counts"]
    assert re.fullmatch(r"[\d.]+/(s|min)", live["rate"]), live.group(0)
    assert re.fullmatch(r"\d+(m\d\d)?s", live["eta"]), live.group(0)
    assert live["zip"] == "no ZIP yet"
    retry = root / "retry" / "live" / "broken.jpg"
    assert f"  failed     broken.jpg: {BAD_INPUT_ERROR} (retry: touch {retry})" in lines


def assert_json_shows_progress(doc: dict, pid: int) -> None:
    """The same moment as `status --json` gives it to a script."""
    assert doc["daemon"] == {"running": True, "pid": pid, "job_slots": 1, "spare_slots": 0}
    (session,) = doc["sessions"]
    assert session["name"] == "live" and session["total"] == 7 and sum(session["counts"].values()) == 7
    assert session["finished"] == 7 - session["counts"]["queued"] - session["counts"]["processing"]
    assert session["failed"] == [
        {"name": "broken.jpg", "error": BAD_INPUT_ERROR, "retry_marker": "retry/live/broken.jpg"}
    ]
    assert session["rate_per_s"] > 0 and session["eta_s"] > 0 and doc["rate_per_s"] > 0


def gate_opened_after_first(frames: list[str], gate: Path) -> bool:
    """Once the follower has shown its first frame, the gated items may finish."""
    if frames:
        gate.touch()
    return bool(frames)


def moved_on(frames: list[str]) -> bool:
    return len(frames) >= 2 and finished_in(frames[-1], "live") > finished_in(frames[0], "live")


def test_beside_a_running_daemon_status_shows_progress_and_following_never_holds_it_up(tmp_path):
    root = tmp_path / "root"
    with Daemon(root) as daemon:
        gate = tmp_path / "gate"  # the last four wait for it: the follower below must see them finish
        drop(root / "inbox", "live/broken.jpg", "bad-input")
        for n in range(6):
            drop(root / "inbox", f"live/photo{n}.jpg", "sleep 1" if n < 2 else f"gate {gate}")
        wait_for(
            lambda: (s := daemon.status("live")) and s["counts"]["failed"] == 1 and s["counts"]["done"] >= 2,
            what="one failure and two done",
        )

        # Once, as text and as JSON: bars, counts, rate, ETA, and the failure with its retry marker.
        assert_text_shows_progress(status(root), root, daemon.process.pid)
        assert_json_shows_progress(status_json(root), daemon.process.pid)

        # Followed: frame after frame while the daemon goes on finishing items; Ctrl-C ends it, exit 0.
        follower = start_following(root, "--interval", "0.2")
        try:
            frames = follow_until(follower, lambda f: gate_opened_after_first(f, gate) and moved_on(f))
        finally:
            code, stderr = interrupt(follower)
        assert code == 0 and stderr == ""
        assert all(frame.splitlines()[1].startswith("daemon: running") for frame in frames)

        final = daemon.wait_complete("live")
        assert final["counts"] == {"queued": 0, "processing": 0, "done": 6, "failed": 1, "cancelled": 0}
        assert as_the_database_fixes(status_json(root)) == sessions_in_database(root)


def test_after_the_daemon_stopped_status_reads_the_same_database_and_promises_no_eta(tmp_path):
    root = tmp_path / "root"
    with Daemon(root) as daemon:
        drop(root / "inbox", "halted/broken.jpg", "bad-input")
        for n in range(5):
            drop(root / "inbox", f"halted/photo{n}.jpg", "sleep 1")
        wait_for(
            lambda: (s := daemon.status("halted")) and s["counts"]["failed"] == 1 and s["counts"]["done"] >= 1,
            what="one failure and one done",
        )
        assert daemon.stop() == 0  # the image in flight goes back to the queue
    database = root / "state" / "bgremover.sqlite3"
    before = database_and_log(database)

    text = status(root)
    assert text.returncode == 0, text.stderr
    assert re.fullmatch(r"daemon: not running; \d+ queued, 0 processing; rate \S+, ETA —", text.stdout.splitlines()[0])
    halted = session_line(text.stdout, "halted")
    assert halted["eta"] == "—" and int(halted["finished"]) < 6
    assert (
        f"  failed     broken.jpg: {BAD_INPUT_ERROR} (retry: touch {root / 'retry' / 'halted' / 'broken.jpg'})"
        in text.stdout.splitlines()
    )

    doc = status_json(root)
    assert (
        doc["daemon"] == {"running": False, "pid": None, "job_slots": None, "spare_slots": 0}
        and doc["processing"] == 0
        and doc["eta_s"] is None
    )
    assert as_the_database_fixes(doc) == sessions_in_database(root)
    assert doc["queued"] == doc["sessions"][0]["counts"]["queued"] > 0

    one = status_json(root, "halted")["sessions"][0]
    with closing_store(database) as store:
        assert [(i["name"], i["status"]) for i in one["items"]] == [
            (i.name, i.status.value) for i in store.items("halted")
        ]
    assert database_and_log(database) == before, "status only reads"


# ---------------------------------------------------------------- what the database says, read directly


def closing_store(database: Path) -> closing[Store]:
    return closing(Store(database, readonly=True))


def database_and_log(database: Path) -> tuple[bytes, bytes]:
    """The database's bytes and its write-ahead log's: what a writer changes. (Any SQLite reader,
    read-only too, may create an empty log and the shared-memory index beside them.)"""
    log = database.with_name(database.name + "-wal")
    return database.read_bytes(), log.read_bytes() if log.exists() else b""


def as_the_database_fixes(doc: dict) -> list[dict]:
    keys = ("name", "state", "total", "counts", "failed")
    return [{key: session[key] for key in keys} for session in doc["sessions"]]


def sessions_in_database(root: Path) -> list[dict]:
    """The fields of `status --json` that the database fixes: name, state, total, counts and failures."""
    with closing_store(root / "state" / "bgremover.sqlite3") as store:
        return [
            {
                "name": s.name,
                "state": s.state.value,
                "total": store.count(s.name),
                "counts": store.counts(s.name),
                "failed": [
                    {"name": i.name, "error": i.error, "retry_marker": f"retry/{s.name}/{i.name}"}
                    for i in store.items(s.name, Status.FAILED)
                ],
            }
            for s in store.sessions()
        ]
