"""The real daemon as the bench runs it: a child process on a root of its own, and what its log and outbox say.

The bench drops the corpus into the inbox as one folder, watches the log and
the status files until every session is complete, samples the memory of the
supervisor and of the jobs running at each moment, and reads the numbers back
from the daemon's own JSON log lines (job_started, job_finished).
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import zipfile
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from pydantic import SecretStr

import bgremover
from bgremover.bench.figures import BenchError, difference, median_of, ms, stage_medians
from bgremover.settings import Settings

POLL_SECONDS = 0.02  # the resolution of every latency measured by polling
RSS_SAMPLE_SECONDS = 1.0
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
# Generous on purpose: a bench that gives up on a slow machine measures nothing.
BATCH_TIMEOUT_BASE_SECONDS = 60.0
BATCH_TIMEOUT_PER_IMAGE_SECONDS = 30.0
BENCH_SESSION = "bench"
BENCH_STABLE_SECONDS = 0.5
# Short waits so the daemon's own latency shows rather than the defaults'; JSON so the log can be read.
BENCH_ENVIRONMENT = {
    "BGREMOVER_LOG_FORMAT": "json",
    "BGREMOVER_LOG_LEVEL": "info",  # job_finished and daemon_ready are info lines
    "BGREMOVER_STABLE_SECONDS": str(BENCH_STABLE_SECONDS),
    "BGREMOVER_SESSION_IDLE_SECONDS": "1",
}
# --root names the bench's own root; its daemon must run no hook, and neither take the running
# daemon's metrics port nor overwrite its metrics textfile.
# broker_url_file: the URL it names is passed on as broker_url, which the two together would refuse.
NOT_FOR_THE_BENCH_DAEMON = {"root", "metrics_port", "metrics_textfile", "on_session_complete", "broker_url_file"}
READY_FIELDS_SKIPPED = {"event", "level", "timestamp", "root", "inbox"}
DAEMON_LOG = "daemon.log"
PROBE_INTERVAL_SECONDS = 1.0
# Derived by the daemon itself unless the user gave them (threads follows job_slots).
DERIVED_UNLESS_GIVEN = {"threads": "threads_given"}


class RunningDaemon:
    """`bgremover run` on a root of our own, and what its JSON log says so far."""

    def __init__(self, root: Path, log_path: Path, env: dict[str, str]) -> None:
        self.root, self.log_path, self.env = root, log_path, env
        self.process: subprocess.Popen | None = None
        self.records: dict[str, list[dict]] = {}
        self._unread = b""
        self._offset = 0

    def start(self) -> dict:
        """Start it and wait for its daemon_ready line, which is returned."""
        # The child keeps its own copy of the descriptor; ours can close at once.
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bgremover", "run", "--root", str(self.root)],
                cwd=self.root.parent,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        started = time.monotonic()
        while not self.events("daemon_ready"):
            self.ensure_running("get ready", started, READY_TIMEOUT_SECONDS)
            time.sleep(POLL_SECONDS)
        return self.events("daemon_ready")[0]

    def events(self, name: str) -> list[dict]:
        self.read_log()
        return self.records.get(name, [])

    def read_log(self) -> None:
        """Parse the lines written since the last call; a half-written last line waits for the next."""
        with open(self.log_path, "rb") as log_file:
            log_file.seek(self._offset)
            data = log_file.read()
        self._offset += len(data)
        *lines, self._unread = (self._unread + data).split(b"\n")
        for line in lines:
            record = parse_log_line(line)
            if record is not None:
                self.records.setdefault(record.get("event", ""), []).append(record)

    def ensure_running(self, doing: str, started: float, limit_s: float) -> None:
        """Raise BenchError if it has exited, or has not managed `doing` within limit_s."""
        code = self.process.poll()
        if code is not None:
            raise BenchError(f"the daemon exited with code {code} before it could {doing}; its log is {self.log_path}")
        if time.monotonic() - started > limit_s:
            raise BenchError(f"the daemon did not {doing} within {limit_s:.0f} s; its log is {self.log_path}")

    def memory_mb(self, key: str) -> float | None:
        """VmRSS or VmHWM of the supervisor process, from /proc."""
        return proc_memory_mb(self.process.pid, key)

    def stop(self) -> None:
        """SIGTERM, as systemd would; SIGKILL if it has not stopped in 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def parse_log_line(line: bytes) -> dict | None:
    if not line.startswith(b"{"):
        return None  # the start-up banner and anything else that is not a structlog JSON line
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def proc_memory_mb(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def daemon_environment(settings: Settings, fmt: str) -> dict[str, str]:
    """The user's settings as BGREMOVER_* variables (a --config file's too), then the bench's own."""
    env = dict(os.environ)
    env.pop("BGREMOVER_CONFIG", None)  # what it said is already in `settings`
    for name, value in settings.model_dump().items():
        if name in NOT_FOR_THE_BENCH_DAEMON or (
            name in DERIVED_UNLESS_GIVEN and not getattr(settings, DERIVED_UNLESS_GIVEN[name])
        ):
            env.pop(f"BGREMOVER_{name.upper()}", None)
        elif value is not None:  # None is "not set", which no variable can say
            env[f"BGREMOVER_{name.upper()}"] = environment_value(value)
    env.update(BENCH_ENVIRONMENT, BGREMOVER_OUTPUT_FORMAT=fmt)
    # The user's models folder defaults to one under the root, and the bench daemon has its own root.
    env["BGREMOVER_MODELS_DIR"] = str(settings.models_folder)
    # A source checkout is not installed: let `python -m bgremover` find this very package.
    package_parent = str(Path(bgremover.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return env


def environment_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))  # the providers setting's form: A,B
    if isinstance(value, SecretStr):  # str() of it is asterisks
        return value.get_secret_value()
    return str(value)


def session_names(base: str, count: int, max_items: int) -> list[str]:
    """The sessions a folder of `count` files becomes: NAME, then NAME-2, NAME-3, ... when full."""
    sessions = max(1, math.ceil(count / max_items))
    return [base] + [f"{base}-{n}" for n in range(2, sessions + 1)]


def read_status(path: Path) -> dict | None:
    """A status JSON, or None before it exists (the daemon replaces it whole, never half)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def session_complete(outbox: Path, name: str) -> bool:
    status = read_status(outbox / f"{name}.json") or {}
    return status.get("state") == "complete" and (outbox / f"{name}.zip").is_file()


def batch_timeout(count: int) -> float:
    return BATCH_TIMEOUT_BASE_SECONDS + BATCH_TIMEOUT_PER_IMAGE_SECONDS * count


class Watch:
    """What the bench keeps an eye on whenever it waits: the batch's end, the daemon's memory and health."""

    def __init__(self, daemon: RunningDaemon, sessions: list[str], started: float, count: int) -> None:
        self.daemon, self.sessions, self.started = daemon, sessions, started
        self.count = count
        self.limit_s = batch_timeout(count)
        self.finished_at: float | None = None
        self.rss_mb: list[float] = []
        self.jobs_rss_mb_max = 0.0  # the most the running jobs held together, sampled every step
        self.next_sample = 0.0

    @property
    def complete(self) -> bool:
        return self.finished_at is not None

    def step(self) -> None:
        doing = f"finish the {self.count} images"
        self.daemon.ensure_running(doing, self.started, self.limit_s)
        now = time.monotonic()
        if not self.complete and self.sessions_complete():
            self.finished_at = now
        if now >= self.next_sample:
            self.next_sample = now + RSS_SAMPLE_SECONDS
            self.sample()
        self.jobs_rss_mb_max = max(self.jobs_rss_mb_max, self.running_jobs_rss_mb())
        time.sleep(POLL_SECONDS)

    def running_jobs_rss_mb(self) -> float:
        """VmRSS summed over the jobs started and not yet finished, by the pids the daemon logs."""
        started = {event.get("pid") for event in self.daemon.events("job_started")}
        finished = {event.get("pid") for event in self.daemon.events("job_finished")}
        return sum(proc_memory_mb(pid, "VmRSS") or 0.0 for pid in started - finished if isinstance(pid, int))

    def sessions_complete(self) -> bool:
        # The log says so first (cheap to follow); the status JSON and the ZIP confirm.
        logged = {e.get("session") for e in self.daemon.events("session_complete")}
        outbox = self.daemon.root / "outbox"
        return logged.issuperset(self.sessions) and all(session_complete(outbox, name) for name in self.sessions)

    def sample(self) -> None:
        rss = self.daemon.memory_mb("VmRSS")
        if rss is not None:
            self.rss_mb.append(rss)

    def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self.step()

    def pause_until(self, moment: float) -> None:
        self.until(lambda: time.monotonic() >= moment)


def stage(files: list[Path], folder: Path) -> Path:
    """Copy files into a folder outside the inbox, on its filesystem, ready to be renamed in whole."""
    folder.mkdir(parents=True)
    for path in files:
        shutil.copyfile(path, folder / path.name)
    return folder


def run_daemon(
    settings: Settings,
    fmt: str,
    corpus: list[Path],
    workdir: Path,
    probes: list[Path],
    environment: dict[str, str] | None = None,
    beside: Callable[[Path, dict[str, str]], contextlib.AbstractContextManager] | None = None,
) -> tuple[dict, dict]:
    """The corpus through the real daemon: throughput, per-job time, memory, and the enqueue latency of `probes`.

    `environment`: settings for this daemon only, as BGREMOVER_* variables over the user's.
    `beside(root, env)`: what must run beside the daemon (its workers), entered once it is ready.
    """
    sessions = session_names(BENCH_SESSION, len(corpus), settings.max_session_items)
    env = {**daemon_environment(settings, fmt), **(environment or {})}
    runner = RunningDaemon(workdir / "root", workdir / DAEMON_LOG, env)
    companions = contextlib.ExitStack()
    try:
        ready = runner.start()
        if beside is not None:
            companions.enter_context(beside(runner.root, env))
        staged = stage(corpus, workdir / "staging" / BENCH_SESSION)
        started = time.monotonic()
        # The drop: one rename, so the whole folder appears in the inbox at once.
        os.rename(staged, runner.root / "inbox" / BENCH_SESSION)
        watch = Watch(runner, sessions, started, len(corpus))
        latencies = []
        if probes:
            watch.until(lambda: bool(runner.events("job_finished")) or watch.complete)
            latencies = probe_latencies(probes, runner.root, workdir / "staging", watch)
        watch.until(lambda: watch.complete)
        watch.sample()
        # Before the stop: the process and its /proc entry go with it.
        hwm_mb = runner.memory_mb("VmHWM")
    finally:
        runner.stop()
        companions.close()
    return daemon_sections(runner, watch, fmt, latencies, hwm_mb), ready


def probe_latencies(probes: list[Path], root: Path, staging: Path, watch: Watch) -> list[tuple[float, bool]]:
    """(ms from rename to 'queued' in a status JSON, whether the batch was still running), per probe."""
    found = []
    for index, source in enumerate(probes):
        started = time.monotonic()
        during_batch = not watch.complete
        latency = enqueue_latency_ms(source, f"probe-{index + 1}.jpg", root, staging, watch)
        found.append((latency, during_batch))
        if index + 1 < len(probes):
            watch.pause_until(started + PROBE_INTERVAL_SECONDS)
    return found


def enqueue_latency_ms(source: Path, name: str, root: Path, staging: Path, watch: Watch) -> float:
    staged = staging / name
    shutil.copyfile(source, staged)
    start = time.monotonic()
    # Straight into the inbox root: it joins the loose session.
    os.rename(staged, root / "inbox" / name)
    watch.until(lambda: item_listed(root / "outbox", name))
    return ms(time.monotonic() - start)


def item_listed(outbox: Path, name: str) -> bool:
    """Whether any session's status JSON lists `name`: queued or any later status."""
    for path in outbox.glob("*.json"):
        status = read_status(path) or {}
        if any(item.get("name") == name for item in status.get("items", [])):
            return True
    return False


def daemon_sections(runner: RunningDaemon, watch: Watch, fmt: str, latencies: list, hwm_mb: float | None) -> dict:
    finished = [e for e in runner.events("job_finished") if e.get("session") in watch.sessions]
    started = [e for e in runner.events("job_started") if e.get("session") in watch.sessions]
    return {
        "daemon": daemon_section(runner, watch, fmt, finished),
        "isolation": isolation_section(started),
        "memory": memory_section(finished, watch, hwm_mb),
        "enqueue_latency": latency_section(latencies),
    }


def daemon_section(runner: RunningDaemon, watch: Watch, fmt: str, finished: list[dict]) -> dict:
    outbox = runner.root / "outbox"
    counts = session_counts(outbox, watch.sessions)
    elapsed = watch.finished_at - watch.started
    timings = [e["timings_ms"] for e in finished if isinstance(e.get("timings_ms"), dict) and e["timings_ms"]]
    return {
        "format": fmt,
        "images": watch.count,
        "sessions": len(watch.sessions),
        "done": counts.get("done", 0),
        "failed": counts.get("failed", 0),
        "zip_members": zip_member_count(outbox, watch.sessions),
        "elapsed_s": round(elapsed, 2),
        "images_per_s": round(watch.count / elapsed, 2),
        "ms_per_image": steady_ms_per_image(finished),
        "job_duration_ms": median_of(e.get("duration_ms") for e in finished),
        # None: this daemon does not log its jobs' stage timings.
        "job_stages": stage_medians(timings) if timings else None,
        "in_job_ms": median_of(sum(stages.values()) for stages in timings),
        "isolation_overhead_ms": median_of(isolation_overheads_ms(finished)),
    }


def isolation_overheads_ms(finished: list[dict]) -> list[float]:
    """Per job: its wall time, hand-over to reaping, less the time its stages account for.

    What a fresh process per image costs on top of the same work in one
    process, measured under the same load as the job itself.
    """
    found = []
    for event in finished:
        timings, duration = event.get("timings_ms"), event.get("duration_ms")
        if isinstance(timings, dict) and timings and isinstance(duration, (int, float)):
            found.append(
                max(0.0, duration - sum(value for value in timings.values() if isinstance(value, (int, float))))
            )
    return found


def isolation_section(started: list[dict]) -> dict:
    """What a fresh process per job costs, as each job process measured it, and how much of it was hidden.

    process_start_ms runs from the fork server's fork to the process being ready
    (session created); it is paid while the previous job runs whenever the
    process was ready before its job was handed over.
    """
    return {
        "jobs": len(started),
        "process_start_ms": median_of(e.get("start_ms") for e in started),
        "session_create_ms": median_of(e.get("session_ms") for e in started),
        "ready_before_its_job": sum(1 for e in started if e.get("ready_in_advance")),
    }


def steady_ms_per_image(finished: list[dict]) -> float | None:
    """The median gap between consecutive job_finished lines: the rate once the queue is full.

    It leaves out the drop, the stable-file wait and the ZIP, which the
    elapsed time includes. With one job there is no gap: its duration stands in.
    """
    moments = sorted(log_time(event) for event in finished)
    gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
    if gaps:
        return ms(statistics.median(gaps))
    return median_of(event.get("duration_ms") for event in finished)


def log_time(event: dict) -> float:
    # structlog's TimeStamper: ISO 8601 in UTC.
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def session_counts(outbox: Path, sessions: list[str]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for name in sessions:
        for status, count in ((read_status(outbox / f"{name}.json") or {}).get("counts") or {}).items():
            totals[status] = totals.get(status, 0) + count
    return totals


def zip_member_count(outbox: Path, sessions: list[str]) -> int:
    total = 0
    for name in sessions:
        with zipfile.ZipFile(outbox / f"{name}.zip") as archive:
            total += len(archive.namelist())
    return total


def memory_section(finished: list[dict], watch: Watch, hwm_mb: float | None) -> dict:
    rss_mb = watch.rss_mb
    return {
        "job_peak_rss_mb_max": largest_job_peak_mb(finished),
        "jobs_rss_mb_sum_max": round(watch.jobs_rss_mb_max, 1),  # the running jobs together, at their most
        "supervisor_hwm_mb": hwm_mb,
        "supervisor_rss_mb_median": median_of(rss_mb),
        "supervisor_rss_mb_max": max(rss_mb, default=None),
        "supervisor_rss_mb_samples": rss_mb,
    }


def largest_job_peak_mb(finished: list[dict]) -> float | None:
    peaks = [e["peak_rss_mb"] for e in finished if isinstance(e.get("peak_rss_mb"), (int, float))]
    return max(peaks, default=None)


def latency_section(latencies: list[tuple[float, bool]]) -> dict:
    values = [latency for latency, _ in latencies]
    median = median_of(values)
    stable_ms = BENCH_STABLE_SECONDS * 1000
    return {
        "probes": len(values),
        "probes_during_batch": sum(during for _, during in latencies),
        "median_ms": median,
        "max_ms": max(values, default=None),
        # A wait the daemon adds on purpose: a file is taken once it has held still.
        "stable_seconds": BENCH_STABLE_SECONDS,
        "median_beyond_stable_ms": difference(median, stable_ms),
    }


def ready_fields(ready: dict) -> dict:
    """What the daemon says about itself on its daemon_ready line (providers, threads, ...), prefixed."""
    return {f"daemon_{key}": value for key, value in ready.items() if key not in READY_FIELDS_SKIPPED}
