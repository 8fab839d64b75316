"""A real daemon in a real process on a temporary root, and ways to poke at it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

from tests.conftest import REPO

FAST = {
    "BGREMOVER_STABLE_SECONDS": "0.3",
    "BGREMOVER_SESSION_IDLE_SECONDS": "1.5",
    "BGREMOVER_JOB_TIMEOUT_SECONDS": "60",
    "BGREMOVER_KILL_GRACE_SECONDS": "1",
    "BGREMOVER_LOG_FORMAT": "json",
    "BGREMOVER_LOG_LEVEL": "debug",
}


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class Daemon:
    """`bgremover run` as a child process; `settings` become BGREMOVER_* variables."""

    def __init__(self, root: Path, fake_jobs: bool = True, **settings) -> None:
        self.root = root
        self.env = {**os.environ, **FAST, "PYTHONPATH": str(REPO)}
        for inherited in ("BGREMOVER_CONFIG", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
            self.env.pop(inherited, None)  # a suite run under systemd must not speak for its own service
        if fake_jobs:
            self.env["BGREMOVER_JOB_MODULE"] = "tests.support.fakejob"
        # One job at a time unless a test asks for more (its settings, or the variable set for
        # a whole module): a test of one mechanism reads plainly with one job in flight.
        self.env.setdefault("BGREMOVER_JOB_SLOTS", "1")
        self.env.update({f"BGREMOVER_{key.upper()}": str(value) for key, value in settings.items()})
        self.process: subprocess.Popen | None = None
        self.log_path = root.parent / f"{root.name}-daemon.log"
        for name in ("inbox", "outbox", "retry", "cancel"):
            (root / name).mkdir(parents=True, exist_ok=True)

    def start(self) -> Daemon:
        # Several lives of a daemon share one log; each start waits for its own daemon_ready.
        ready_before = len(self.events("daemon_ready"))
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process; closed when it is stopped
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bgremover", "run", "--root", str(self.root)],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=self.log_file,
        )
        wait_for(
            lambda: len(self.events("daemon_ready")) > ready_before or self.process.poll() is not None,
            what="daemon_ready",
        )
        assert self.process.poll() is None, self.log()
        return self

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(timeout)
        self.log_file.close()
        return code

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()
        self.log_file.close()

    def __enter__(self) -> Daemon:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.stop()

    # -- what a user sees ---------------------------------------------------------

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def events(self, name: str) -> list[dict]:
        found = []
        text = self.log()
        # Up to the last newline: a line the daemon is still writing is read whole at the next look.
        for line in text[: text.rfind("\n") + 1].splitlines():
            if line.startswith("{"):
                record = json.loads(line)
                if record.get("event") == name:
                    found.append(record)
        return found

    def status(self, session: str) -> dict | None:
        path = self.root / "outbox" / f"{session}.json"
        try:
            return json.loads(path.read_bytes().decode("utf-8"))
        except FileNotFoundError:
            return None

    def statuses(self) -> dict[str, dict]:
        return {p.stem: self.status(p.stem) for p in sorted((self.root / "outbox").glob("*.json"))}

    def wait_complete(self, session: str, timeout: float = 60) -> dict:
        return wait_for(
            lambda: (s := self.status(session)) and s["state"] == "complete" and s, timeout, what=f"{session} complete"
        )

    def zip_members(self, session: str) -> dict[str, bytes]:
        with zipfile.ZipFile(self.root / "outbox" / f"{session}.zip") as archive:
            return {info.filename: archive.read(info) for info in archive.infolist()}


def drop(inbox: Path, relative: str, content: bytes | str = b"ok") -> Path:
    """Write a file elsewhere, then rename it into the inbox, as a careful copy tool does."""
    data = content.encode() if isinstance(content, str) else content
    target = inbox / relative
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = inbox.parent / ".staging" / relative
    staging.parent.mkdir(parents=True, exist_ok=True)
    staging.write_bytes(data)
    os.rename(staging, target)
    return target
