"""A real redis-server and real `bgremover worker` processes on a temporary root, for the celery runner's tests."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import redis

from tests.conftest import REPO
from tests.support.harness import FAST, Daemon, wait_for


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Redis:
    """Debian's redis-server on 127.0.0.1 and a free port, persistence off, as docs/several-machines.md runs it (noeviction)."""

    def __init__(self, folder: Path, password: str | None = None) -> None:
        self.folder, self.password = folder, password
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.url_of(0)

    def url_of(self, database: int) -> str:
        return f"redis://{f':{self.password}@' if self.password else ''}127.0.0.1:{self.port}/{database}"

    def start(self) -> Redis:
        self.folder.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server")
        assert binary, "redis-server is not installed (apt-get install redis-server; .ci/run does)"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                "noeviction",
                "--dir",
                str(self.folder),
                *(["--requirepass", self.password] if self.password else []),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            stdin=subprocess.DEVNULL,
        )
        client = self.client()
        wait_for(lambda: self.answers(client), what="redis-server to answer")
        return self

    def client(self, database: int = 0) -> redis.Redis:
        return redis.Redis.from_url(self.url_of(database), socket_connect_timeout=1)

    @staticmethod
    def answers(client: redis.Redis) -> bool:
        try:
            return client.ping()
        except redis.ConnectionError:
            return False

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)

    def __enter__(self) -> Redis:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class Worker:
    """`bgremover worker` as a child process, with the fake job bodies unless told otherwise.

    The broker's URL goes in its environment, as the README gives it, never on its command line; None
    leaves it to the settings (say broker_url_file).
    """

    def __init__(
        self,
        root: Path,
        broker: str | None,
        name: str,
        slots: int = 1,
        fake_jobs: bool = True,
        providers: str | None = None,
        **settings,
    ) -> None:
        self.root, self.broker, self.name, self.slots, self.providers = root, broker, name, slots, providers
        self.env = {**os.environ, **FAST, "PYTHONPATH": str(REPO)}
        self.env.pop("BGREMOVER_CONFIG", None)
        if broker is not None:
            self.env["BGREMOVER_BROKER_URL"] = broker
        if fake_jobs:
            self.env["BGREMOVER_JOB_MODULE"] = "tests.support.fakejob"
        self.env.update({f"BGREMOVER_{key.upper()}": str(value) for key, value in settings.items()})
        self.log_path = root.parent / f"{root.name}-worker-{name}.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "bgremover",
            "worker",
            "--root",
            str(self.root),
            "--slots",
            str(self.slots),
            "--name",
            self.name,
            *(["--providers", self.providers] if self.providers else []),
        ]

    def start(self) -> Worker:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process; closed when it is stopped
        self.process = subprocess.Popen(
            self.command(),
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=self.log_file,
            start_new_session=True,
        )
        wait_for(lambda: "ready." in self.log() or self.process.poll() is not None, what=f"worker {self.name} ready")
        assert self.process.poll() is None, self.log()
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self.log_file.close()
        end_group(self.process.pid)

    def __enter__(self) -> Worker:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def end_group(group: int) -> None:
    """Whatever the worker's process group left (its pool, fork servers, jobs) is ended, and waited for."""
    try:
        os.killpg(group, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)


def celery_daemon(root: Path, broker: str | None, **settings) -> Daemon:
    """The supervisor with the celery runner; broker None leaves the URL to the settings (say broker_url_file)."""
    return Daemon(root, runner="celery", **({"broker_url": broker} if broker else {}), **settings)


def descendants(pid: int) -> list[int]:
    """Every process below `pid`: a worker's pool, its fork servers and their jobs (re-parented to the pool)."""
    from tests.conftest import _children_of

    found, frontier = [], [pid]
    while frontier:
        children = _children_of(frontier.pop())
        found += children
        frontier += children
    return found


def freeze(worker: Worker) -> list[int]:
    """SIGSTOP the worker and everything below it, as a host that hangs; the pids, for `thaw`."""
    frozen = [worker.process.pid, *descendants(worker.process.pid)]
    signal_each(frozen, signal.SIGSTOP)
    return frozen


def thaw(pids: list[int]) -> None:
    """SIGCONT each, parents first as `freeze` listed them."""
    signal_each(pids, signal.SIGCONT)


def signal_each(pids: list[int], sig: int) -> None:
    """A pid may be gone: a child that had already exited when it was listed (a zombie, or one in its exit)
    is reaped by its parent as soon as that parent runs again, before the signal reaches the child."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)


def kill_host(worker: Worker) -> None:
    """kill -9 of everything the worker runs, as if its host lost power."""
    for pid in [worker.process.pid, *descendants(worker.process.pid)]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    worker.process.wait()


def worker_events(worker: Worker, name: str) -> list[dict]:
    return [
        record
        for line in worker.log().splitlines()
        if line.startswith("{")
        for record in [json.loads(line)]
        if record.get("event") == name
    ]


def run_bgremover(tmp_path: Path, *words: str, **settings) -> subprocess.CompletedProcess:
    """`bgremover WORDS --root tmp_path/root` to its end, `settings` as BGREMOVER_* variables."""
    env = {
        **FAST,
        "PYTHONPATH": str(REPO),
        "PATH": "/usr/bin:/bin",
        **{f"BGREMOVER_{key.upper()}": str(value) for key, value in settings.items()},
    }
    return subprocess.run(
        [sys.executable, "-m", "bgremover", *words, "--root", str(tmp_path / "root")],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
