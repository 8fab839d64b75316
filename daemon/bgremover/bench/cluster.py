"""`bgremover bench --workers N`: the same images through one local job slot, N local slots, then N workers.

All in one run, on the same images. N local slots are the most N workers can
reach on this one machine, where they share its cores; on hosts of their own
each would have its own.

The second daemon runs the celery runner against the broker given (a
redis-server of the user's), with N `bgremover worker` processes of one slot
each on this machine, started by the bench on the daemon's root once it is
ready. Its job_slots is fixed at the workers' slots plus the spare that `auto`
would add, so that the figure does not wait for the first heartbeats to be read.
Each worker gets its share of this machine's cores as its threads (unless the
threads setting is given), as a host of its own would have its own: left to
itself, each would take every core, and N workers would run N times the
threads there are cores.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from bgremover.bench.figures import BenchError, ratio
from bgremover.supervisor.slots import WORKERS_SPARE

WORKER_READY_SECONDS = 60.0
WORKER_STOP_SECONDS = 15.0
LOCAL_ENVIRONMENT = {"BGREMOVER_JOB_SLOTS": "1"}


def cluster_environment(broker: str, workers: int) -> dict[str, str]:
    """The supervisor's settings for the run through the workers."""
    return {
        "BGREMOVER_RUNNER": "celery",
        "BGREMOVER_BROKER_URL": broker,
        "BGREMOVER_JOB_SLOTS": str(workers + WORKERS_SPARE),
    }


def worker_environment(env: dict[str, str], workers: int, cores: int, threads_given: bool) -> dict[str, str]:
    """The workers' settings: the daemon's, and each worker its share of the cores unless threads was given."""
    return env if threads_given else {**env, "BGREMOVER_THREADS": str(max(1, cores // workers))}


@contextlib.contextmanager
def workers_on(root: Path, broker: str, count: int, env: dict[str, str], logs: Path) -> Iterator[None]:
    """`count` workers of one slot each on `root`, ready, for as long as the block runs; then stopped as systemd would."""
    started: list[tuple[subprocess.Popen, Path]] = []
    logs.mkdir(parents=True, exist_ok=True)
    try:
        for n in range(1, count + 1):
            log_path = logs / f"worker-{n}.log"
            with open(log_path, "ab") as log_file:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "bgremover",
                        "worker",
                        "--root",
                        str(root),
                        "--slots",
                        "1",
                        "--name",
                        f"bench{n}",
                    ],
                    # The URL in the environment, not the command line, where `ps` would show its password.
                    env={**env, "BGREMOVER_BROKER_URL": broker},
                    stdin=subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=log_file,
                    start_new_session=True,
                )
            started.append((process, log_path))
        for process, log_path in started:
            wait_ready(process, log_path)
        yield
    finally:
        for process, _ in started:
            stop(process)


def wait_ready(process: subprocess.Popen, log_path: Path) -> None:
    give_up = time.monotonic() + WORKER_READY_SECONDS
    while b"ready." not in log_path.read_bytes():
        if process.poll() is not None:
            raise BenchError(
                f"a worker exited with code {process.returncode} before it was ready; its log is {log_path}"
            )
        if time.monotonic() > give_up:
            raise BenchError(f"a worker was not ready within {WORKER_READY_SECONDS:.0f} s; its log is {log_path}")
        time.sleep(0.1)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(WORKER_STOP_SECONDS)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # its pool and fork servers, whatever is left
    process.wait()


def local_slots_environment(workers: int) -> dict[str, str]:
    """The same number of jobs at once on this machine alone: what the workers could reach here at best."""
    return {"BGREMOVER_JOB_SLOTS": str(workers)}


def compare(local: dict, local_n: dict, cluster: dict, workers: int, threads_per_worker: int | None) -> dict:
    """The runs, and the workers' throughput over one local slot's and over as many local slots'."""
    return {
        "local_1_slot": local,
        f"local_{workers}_slots": local_n,
        f"celery_{workers}_workers_of_1_slot": {**cluster, "threads_per_job": threads_per_worker},
        "workers_over_1_local_slot_ratio": ratio(cluster["images_per_s"], local["images_per_s"]),
        f"workers_over_{workers}_local_slots_ratio": ratio(cluster["images_per_s"], local_n["images_per_s"]),
    }
