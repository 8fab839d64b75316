"""The on_session_complete hook: a real shell command, run after the ZIP is written, that can never hurt a session."""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from tests.support.harness import Daemon, drop, wait_for


def test_the_hook_gets_the_zip_the_status_and_the_session_and_can_copy_the_zip(tmp_path):
    root, shipped = tmp_path / "root", tmp_path / "shipped"
    shipped.mkdir()
    # The one-line example of docs/hooks.md: copy each finished ZIP elsewhere.
    command = f'cp "$BGREMOVER_ZIP" {shlex.quote(str(shipped))}/ && echo "$BGREMOVER_SESSION $BGREMOVER_STATUS"'
    with Daemon(root, on_session_complete=command) as daemon:
        drop(root / "inbox", "catalog/a.jpg", "ok")
        daemon.wait_complete("catalog")
        [finished] = wait_for(lambda: daemon.events("hook_finished"), what="the hook")
    assert (shipped / "catalog.zip").read_bytes() == (root / "outbox" / "catalog.zip").read_bytes()
    assert finished["session"] == "catalog" and finished["exit_code"] == 0
    assert finished["output"] == f"catalog {root / 'outbox' / 'catalog.json'}"
    started = daemon.events("hook_started")[0]
    session_complete = daemon.events("session_complete")[0]
    assert session_complete["timestamp"] <= started["timestamp"]  # after the ZIP, never before


def test_a_failing_hook_is_logged_and_the_session_stays_complete(tmp_path):
    root = tmp_path / "root"
    with Daemon(root, on_session_complete="echo upload refused >&2; exit 3") as daemon:
        drop(root / "inbox", "catalog/a.jpg", "ok")
        status = daemon.wait_complete("catalog")
        [failed] = wait_for(lambda: daemon.events("hook_failed"), what="the hook")
        assert daemon.status("catalog") == status  # untouched by the hook
    assert (failed["exit_code"], failed["output"], failed["error"]) == (3, "upload refused", "the hook exited with 3")
    assert failed["level"] == "error"
    assert status["counts"]["done"] == 1


def test_a_hook_past_its_timeout_is_killed_with_what_it_started(tmp_path):
    root, pid_file = tmp_path / "root", tmp_path / "grandchild.pid"
    command = f"sleep 600 & echo $! > {shlex.quote(str(pid_file))}; wait"
    with Daemon(root, on_session_complete=command, hook_timeout_seconds=1) as daemon:
        drop(root / "inbox", "catalog/a.jpg", "ok")
        daemon.wait_complete("catalog")
        [failed] = wait_for(lambda: daemon.events("hook_failed"), what="the hook's timeout")
        grandchild = int(pid_file.read_text())
        wait_for(lambda: not Path(f"/proc/{grandchild}").exists(), what="the hook's own child to be gone")
    assert failed["error"] == "the hook ran longer than 1 s (hook_timeout_seconds) and was killed"
    assert daemon.status("catalog")["state"] == "complete"


def test_every_completion_runs_the_hook_and_a_hook_running_at_stop_is_killed(tmp_path):
    root, marker = tmp_path / "root", tmp_path / "ran"
    command = f"echo $BGREMOVER_SESSION >> {shlex.quote(str(marker))}; sleep 600"
    daemon = Daemon(root, on_session_complete=command).start()
    try:
        drop(root / "inbox", "one/a.jpg", "ok")
        drop(root / "inbox", "two/b.jpg", "ok")
        daemon.wait_complete("one")
        daemon.wait_complete("two")
        wait_for(lambda: marker.exists() and sorted(marker.read_text().split()) == ["one", "two"], what="both hooks")
    finally:
        assert daemon.stop() == 0
    interrupted = daemon.events("hook_interrupted")
    assert sorted(e["session"] for e in interrupted) == ["one", "two"]
    assert not [pid for pid in os.listdir("/proc") if pid.isdigit() and _runs(pid, "sleep 600")]


def _runs(pid: str, text: str) -> bool:
    try:
        return text.encode() in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return False


def zombie_children(pid: int) -> list[int]:
    """The children of `pid` that have exited and wait to be reaped."""
    zombies = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] == "Z" and int(fields[1]) == pid:
                zombies.append(int(entry.name))
    return zombies


def test_a_hook_that_daemonizes_leaves_no_zombie_behind_however_often_it_runs(tmp_path):
    root, ran = tmp_path / "root", tmp_path / "ran"
    # Each run leaves a process in a session of its own, outside the hook's group,
    # which outlives the hook and is re-parented to the daemon (a child subreaper).
    command = f"setsid sh -c 'sleep 0.5; echo gone >> {shlex.quote(str(ran))}' > /dev/null 2>&1 &"
    runs = 4
    with Daemon(root, on_session_complete=command) as daemon:
        for n in range(runs):
            drop(root / "inbox", f"catalog-{n}/a.jpg", "ok")
        for n in range(runs):
            daemon.wait_complete(f"catalog-{n}")
        wait_for(lambda: len(daemon.events("hook_finished")) == runs, what="every hook")
        wait_for(lambda: ran.exists() and len(ran.read_text().split()) == runs, what="every daemonized process's end")
        wait_for(lambda: not zombie_children(daemon.process.pid), 5, what="no zombie left under the daemon")
