"""Bounded history, for real: a daemon with retention set short stays flat under a stream of sessions, survives a
kill -9 while it prunes, and never deletes a file a user dropped on the way.

A real daemon with fake job bodies. Retention is set in fractions of a day
that come to seconds. The stream's length is `--retention-sessions` (the
issue's 2,000 by hand; the default keeps this file near a minute and a half).
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import time
from pathlib import Path

from tests.support.harness import Daemon, drop, wait_for

RETAIN_DAYS = 0.00005  # 4.3 s
WAVE = 10  # folders dropped at once, each a one-file session
FAILING = 7  # every FAILING-th session's file fails, and keeps its original for a retry
QUICK = {"session_idle_seconds": 0.5, "stable_seconds": 0.1, "log_level": "info", "keep_originals": "false"}


def footprint(root: Path) -> dict[str, int]:
    """What history costs the root now: rows, the database file after a checkpoint, and each folder's entries."""
    db = sqlite3.connect(root / "state" / "bgremover.sqlite3", timeout=10)
    try:
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        rows = {table: db.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0] for table in ("sessions", "events")}
    finally:
        db.close()
    return {
        **rows,
        "database_bytes": (root / "state" / "bgremover.sqlite3").stat().st_size,
        "state_files": count(root / "state" / "originals") + count(root / "state" / "results"),
        "retry": count(root / "retry"),
        "archive": count(root / "archive"),
        "outbox": count(root / "outbox"),
    }


def count(folder: Path) -> int:
    """Entries below `folder`, but retention's own empty .pruning folder.

    Read beside a running daemon, which may remove a folder while it is walked: os.walk passes it by.
    """
    return sum(len([d for d in dirs if d != ".pruning"]) + len(files) for _, dirs, files in os.walk(folder))


def history_left(footprint: dict[str, int]) -> dict[str, int]:
    """What is left of history, the database file's size aside (a file SQLite never shrinks, but uses again)."""
    return {key: value for key, value in footprint.items() if value and key != "database_bytes"}


def session_name(n: int) -> str:
    return f"s{n:05}"


def content(n: int) -> str:
    return f"exit 3\nthe user's photo {n}" if n % FAILING == 0 else f"ok {n}"


def drop_wave(root: Path, first: int, last: int) -> None:
    for n in range(first, last):
        drop(root / "inbox", f"{session_name(n)}/photo.jpg", content(n))
    wait_for(
        lambda: not any((root / "inbox" / session_name(n) / "photo.jpg").exists() for n in range(first, last)),
        what="the wave taken",
    )
    # At the daemon's pace: one wave in flight at most, so what grows is history, never a backlog.
    wait_for(lambda: unfinished(root) <= WAVE, 60, what="the wave before it complete")


def unfinished(root: Path) -> int:
    db = sqlite3.connect(f"file:{root / 'state' / 'bgremover.sqlite3'}?mode=ro", uri=True, timeout=10)
    try:
        return db.execute("SELECT COUNT(*) FROM sessions WHERE state != 'complete'").fetchone()[0]
    finally:
        db.close()


def settled(root: Path) -> bool:
    return unfinished(root) == 0


def test_a_stream_of_sessions_leaves_the_database_and_every_folder_flat(tmp_path, request):
    sessions = request.config.getoption("--retention-sessions")
    root = tmp_path / "root"
    samples: list[dict[str, int]] = []
    started = time.monotonic()
    with Daemon(root, keep_sessions_days=RETAIN_DAYS, keep_outbox_days=RETAIN_DAYS, **QUICK) as daemon:
        for first in range(0, sessions, WAVE):
            drop_wave(root, first, min(first + WAVE, sessions))
            samples.append(footprint(root))
        streamed = time.monotonic() - started
        wait_for(lambda: settled(root), 60, what="every session complete")
        wait_for(lambda: not history_left(footprint(root)), 60, interval=0.5, what="all of it pruned")
        end = footprint(root)
        finished = len(daemon.events("job_finished"))
        archived = daemon.events("original_archived")
    quarter = len(samples) // 4
    early, late = samples[quarter : 2 * quarter], samples[3 * quarter :]
    peaks = {key: (max(s[key] for s in early), max(s[key] for s in late)) for key in samples[0]}
    print(f"\n{sessions} sessions streamed in {streamed:.1f} s; peaks (second quarter, last quarter): {peaks}")
    print(f"after the last one's retention: {end}")
    for key, (before, after) in peaks.items():
        assert after <= before * 1.5 + 2, f"{key} grows with history: {before} then {after}"
    assert end["database_bytes"] <= peaks["database_bytes"][0] * 1.5, "freed pages are used again"
    assert finished == sessions, "every dropped file ran once"
    assert sorted(record["session"] for record in archived) == [
        session_name(n) for n in range(sessions) if n % FAILING == 0
    ], "each failed original went to the archive before its session was forgotten"


def as_forgotten(items: list[dict]) -> list[dict]:
    """The items of a status JSON once their session is forgotten: no marker, the archived original named."""
    moved = {"shoes/broken.jpg": {"original": "archive/shoot/shoes/broken.jpg"}}
    return [{**item, "retry_marker": None, **moved.get(item["name"], {})} for item in items]


def test_a_failed_items_original_is_in_the_archive_once_its_session_is_forgotten(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, keep_sessions_days=RETAIN_DAYS, **QUICK) as daemon:
        drop(root / "inbox", "shoot/good.jpg", "ok")
        drop(root / "inbox", "shoot/shoes/broken.jpg", "exit 3\nthe only copy of it")
        status = daemon.wait_complete("shoot")
        assert (root / "retry" / "shoot" / "shoes").is_dir()
        wait_for(lambda: daemon.events("session_forgotten"), 30, what="the session forgotten")
        assert (root / "archive" / "shoot" / "shoes" / "broken.jpg").read_text() == "exit 3\nthe only copy of it"
        assert not list((root / "state" / "originals").iterdir())
        assert not (root / "retry" / "shoot").exists(), "nothing in it can be retried any more"
        # keep_outbox_days 0: the delivered files stay, the JSON told that its retry marker means nothing now.
        assert daemon.status("shoot") == {**status, "forgotten": True, "items": as_forgotten(status["items"])}
        assert (root / "outbox" / "shoot.zip").is_file()

        drop(root / "inbox", "shoot/later.jpg", "ok")  # the same folder again: its old files are not mixed in
        daemon.wait_complete("shoot-2")


def test_a_retry_folder_goes_once_its_item_was_retried_and_done(tmp_path):
    root = tmp_path / "root"
    flag = tmp_path / "flaky-flag"
    with Daemon(root) as daemon:
        drop(root / "inbox", "again/flaky.jpg", f"flaky {flag}")
        marker = root / daemon.wait_complete("again")["items"][0]["retry_marker"]
        assert marker.parent.is_dir()
        marker.touch()
        wait_for(lambda: daemon.status("again")["items"][0]["status"] == "done", 20, what="the retry done")
        wait_for(lambda: not marker.parent.exists(), 10, what="the retry folder removed")


def test_a_daemon_killed_at_random_while_it_prunes_leaves_nothing_half_pruned_and_loses_no_file(tmp_path):
    root = tmp_path / "root"
    sessions, rng = 100, random.Random(26)
    history = Daemon(root, keep_sessions_days=0, **QUICK)  # a history made first, kept whole
    with history:
        for first in range(0, sessions, WAVE):
            drop_wave(root, first, first + WAVE)
        wait_for(lambda: settled(root), 60, what="the history complete")
    failing = [n for n in range(sessions) if n % FAILING == 0]
    for phase in (
        {"keep_sessions_days": RETAIN_DAYS},
        {"keep_sessions_days": RETAIN_DAYS, "keep_outbox_days": RETAIN_DAYS},
    ):
        daemon = Daemon(root, **QUICK, **phase)
        for _ in range(6):
            daemon.start()
            time.sleep(rng.uniform(0, 1.5))
            daemon.process.send_signal(signal.SIGKILL)
            daemon.process.wait()
            daemon.log_file.close()
        with daemon:
            wait_for(lambda: footprint(root)["sessions"] == 0, 60, what="every session forgotten")
            if "keep_outbox_days" in phase:
                wait_for(lambda: footprint(root)["outbox"] + footprint(root)["archive"] == 0, 60, what="all deleted")
        end = footprint(root)
        assert (end["events"], end["state_files"], end["retry"]) == (0, 0, 0)
        if "keep_outbox_days" not in phase:
            assert end["outbox"] == 2 * sessions, "keep_outbox_days 0: every ZIP and JSON stays"
            for n in failing:
                original = root / "archive" / session_name(n) / "photo.jpg"
                assert original.read_text() == content(n), "a failed original is moved, never lost"
            assert end["archive"] == 2 * len(failing), "only the failed originals, each once, in its folder"
        else:
            assert not list((root / "archive" / ".pruning").iterdir()), "no archive folder left half deleted"
