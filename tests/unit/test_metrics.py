"""Prometheus metrics: the contract an operator's scraper relies on.

The first half drives service/metrics.py against a real SQLite store in tmp_path;
the second runs the real daemon (fake job bodies, and the real job once) and
scrapes http://127.0.0.1:PORT/metrics over HTTP, or reads the textfile,
parsing both with prometheus_client's own parser.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import pytest

from bgremover.queue.states import SessionState, Status
from bgremover.queue.store import Store
from bgremover.runners.api import JobHandle
from bgremover.service.metrics import FAILURE_REASONS, STAGES, Metrics, MetricsUnavailable
from bgremover.settings import SettingsError, load_settings
from bgremover.supervisor.dispatch import RunningJob, verdict
from tests.support.metrics import free_port, parse, scrape, value

# ---------------------------------------------------------------- helpers


def metrics_for(tmp_path: Path, **settings) -> Metrics:
    return Metrics(load_settings(root=tmp_path / "root", **settings))


def registry_value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


@pytest.fixture
def store(tmp_path):
    store = Store(tmp_path / "bgremover.sqlite3")
    yield store
    store.close()


def add_session(store: Store, name: str, statuses: list[Status], state: SessionState = SessionState.OPEN) -> None:
    """A session whose items end up in `statuses`, each moved along allowed transitions."""
    store.create_session(name, name, "png", 0.0)
    for n, status in enumerate(statuses):
        item = store.add_item(name, f"{n}.jpg", f"{n}.png", ".jpg", b"x", 0.0)
        if status is not Status.QUEUED:
            item = store.transition(item.id, Status.QUEUED, Status.PROCESSING, 0.0)
        if status not in (Status.QUEUED, Status.PROCESSING):
            store.transition(item.id, Status.PROCESSING, status, 0.0)
    if state is not SessionState.OPEN:
        store.set_session_state(name, {SessionState.OPEN}, state, 0.0)


def job(started: float = 100.0, stop_reason: str | None = None, returncode: int | None = 0, peak_rss_kb: int = 0):
    return RunningJob(
        None, None, started, started + 300, stop_reason=stop_reason, returncode=returncode, peak_rss_kb=peak_rss_kb
    )


# ---------------------------------------------------------------- the module, on a real store


def test_the_gauges_count_items_by_status_sessions_by_state_and_the_queue_from_the_database(tmp_path, store):
    add_session(store, "open-one", [Status.QUEUED, Status.QUEUED, Status.PROCESSING])
    add_session(store, "busy", [Status.DONE, Status.FAILED, Status.QUEUED], SessionState.PROCESSING)
    add_session(store, "finished", [Status.DONE, Status.DONE, Status.CANCELLED], SessionState.PROCESSING)
    store.set_session_state("finished", {SessionState.PROCESSING}, SessionState.COMPLETE, 0.0)
    metrics = metrics_for(tmp_path, metrics_textfile=tmp_path / "bgremover.prom")

    metrics.refresh(store, now=1000.0)

    items = {status.value: registry_value(metrics, "bgremover_items", status=status.value) for status in Status}
    assert items == {"queued": 3, "processing": 1, "done": 3, "failed": 1, "cancelled": 1}
    assert registry_value(metrics, "bgremover_queue_depth") == 3
    sessions = {state.value: registry_value(metrics, "bgremover_sessions", state=state.value) for state in SessionState}
    assert sessions == {"open": 1, "processing": 1, "complete": 1}


def test_the_database_is_read_at_most_once_a_second(tmp_path, store):
    metrics = metrics_for(tmp_path, metrics_port=free_port())  # enabled, but never started: nothing is served
    add_session(store, "catalog", [Status.QUEUED])
    metrics.refresh(store, now=1000.0)
    add_session(store, "later", [Status.QUEUED])

    metrics.refresh(store, now=1000.5)
    assert registry_value(metrics, "bgremover_queue_depth") == 1
    metrics.refresh(store, now=1001.0)
    assert registry_value(metrics, "bgremover_queue_depth") == 2


def test_a_done_job_is_timed_by_stage_and_what_isolation_added(tmp_path):
    metrics = metrics_for(tmp_path, metrics_port=free_port())
    timings_ms = {
        "decode": 20,
        "preprocess": 15,
        "inference": 200,
        "postprocess": 30,
        "review": 2,
        "encode": 60,
        "publish": 5,
        "a_stage_nobody_announced": 1,
    }

    metrics.job_concluded(job(started=100.0), Status.DONE, None, timings_ms, now=100.4)

    for stage in STAGES:
        assert registry_value(metrics, "bgremover_job_stage_seconds_count", stage=stage) == 1
        assert registry_value(metrics, "bgremover_job_stage_seconds_sum", stage=stage) == pytest.approx(
            timings_ms[stage] / 1000
        )
    # 400 ms of wall time, 332 ms of stages: 68 ms for the fresh process around them.
    assert registry_value(metrics, "bgremover_job_stage_seconds_sum", stage="isolation_overhead") == pytest.approx(
        0.068
    )
    assert registry_value(metrics, "bgremover_job_stage_seconds_count", stage="a_stage_nobody_announced") is None
    assert registry_value(metrics, "bgremover_job_duration_seconds_count") == 1
    assert registry_value(metrics, "bgremover_job_duration_seconds_sum") == pytest.approx(0.4)
    assert registry_value(metrics, "bgremover_jobs_total", status="done") == 1
    assert sum(registry_value(metrics, "bgremover_job_failures_total", reason=r) for r in FAILURE_REASONS) == 0
    metrics.signals_raised(["cut_by_frame", "several_subjects", "not_a_signal"])
    assert registry_value(metrics, "bgremover_review_signals_total", signal="cut_by_frame") == 1
    assert registry_value(metrics, "bgremover_review_signals_total", signal="no_subject") == 0
    assert registry_value(metrics, "bgremover_review_signals_total", signal="not_a_signal") is None


@pytest.mark.parametrize(("stop_reason", "exit_code", "over_memory", "reason"), [
    ("timeout", -9, False, "timeout"),
    ("memory", -9, True, "memory"),
    (None, -9, True, "memory"),  # past the limit between two polls: still memory
    (None, -9, False, "killed"),
    (None, -11, False, "killed"),
    (None, 3, False, "crashed"),
    (None, 1, False, "crashed"),
    (None, 2, False, "bad_input"),
    (None, 75, False, "temporary"),
    (None, 0, False, "no_result"),
    ("cancel", -15, False, "cancelled"),
])  # fmt: skip
def test_a_failure_reason_comes_from_how_the_job_ended(tmp_path, stop_reason, exit_code, over_memory, reason):
    limits = load_settings(None, root=tmp_path, job_memory_limit_mb=100)
    ended = job(stop_reason=stop_reason, returncode=exit_code, peak_rss_kb=200 * 1024 if over_memory else 0)
    judged = verdict(ended, tmp_path / "no-result.png", {}, limits)  # the supervisor's own verdict
    assert judged.reason == reason and judged.status in (Status.FAILED, Status.CANCELLED)
    assert reason in FAILURE_REASONS


def test_failures_are_counted_by_reason_never_by_their_error_text(tmp_path):
    metrics = metrics_for(tmp_path, metrics_port=free_port())

    metrics.job_concluded(job(returncode=2), Status.FAILED, "bad_input", None, now=101.0)
    metrics.job_concluded(job(stop_reason="timeout", returncode=-15), Status.FAILED, "timeout", None, now=400.0)
    metrics.job_concluded(job(stop_reason="cancel", returncode=-15), Status.CANCELLED, "cancelled", None, now=101.0)
    metrics.job_concluded(job(stop_reason="shutdown", returncode=-15), Status.QUEUED, None, None, now=101.0)

    failures = {r: registry_value(metrics, "bgremover_job_failures_total", reason=r) for r in FAILURE_REASONS}
    assert failures == {r: (1 if r in ("bad_input", "timeout", "cancelled") else 0) for r in FAILURE_REASONS}
    jobs = {
        s: registry_value(metrics, "bgremover_jobs_total", status=s) for s in ("done", "failed", "cancelled", "queued")
    }
    assert jobs == {"done": 0, "failed": 2, "cancelled": 1, "queued": 1}  # queued: stopped by a shutdown, runs again
    assert registry_value(metrics, "bgremover_job_duration_seconds_count") == 4
    assert registry_value(metrics, "bgremover_job_stage_seconds_count", stage="decode") == 0  # only done jobs


def test_jobs_ended_on_worker_hosts_are_counted_by_worker_and_status(tmp_path):
    metrics = metrics_for(tmp_path, metrics_port=free_port())

    def on(worker: str | None, returncode: int = 0):
        ran = job(returncode=returncode)
        ran.handle = JobHandle(None, None, {"task_id": "bgremover-1-1"})
        ran.worker = worker  # as the job's JobExit named it
        return ran

    metrics.job_concluded(on("w1@host"), Status.DONE, None, None, now=101.0)
    metrics.job_concluded(on("w1@host"), Status.DONE, None, None, now=101.0)
    metrics.job_concluded(on("w2@host", 2), Status.FAILED, "bad_input", None, now=101.0)
    metrics.job_concluded(on(None), Status.DONE, None, None, now=101.0)  # this machine's own jobs name no worker

    assert registry_value(metrics, "bgremover_worker_jobs_total", worker="w1@host", status="done") == 2
    assert registry_value(metrics, "bgremover_worker_jobs_total", worker="w2@host", status="failed") == 1
    assert registry_value(metrics, "bgremover_jobs_total", status="done") == 3


def test_nothing_is_served_written_or_read_unless_a_metrics_setting_is_set(tmp_path, store):
    metrics = metrics_for(tmp_path)
    threads = threading.active_count()

    metrics.start(store)
    add_session(store, "catalog", [Status.QUEUED])
    metrics.refresh(store, now=1000.0)
    metrics.job_concluded(job(), Status.DONE, None, {"decode": 1}, now=101.0)

    assert not metrics.enabled and metrics.server is None and threading.active_count() == threads
    assert registry_value(metrics, "bgremover_queue_depth") == 0
    assert registry_value(metrics, "bgremover_jobs_total", status="done") == 0
    metrics.close(store)


def test_the_endpoint_answers_on_localhost_only_and_close_leaves_no_thread(tmp_path, store):
    port = free_port()
    metrics = metrics_for(tmp_path, metrics_port=port)
    add_session(store, "catalog", [Status.QUEUED, Status.QUEUED])
    metrics.start(store)
    try:
        metrics.refresh(store, now=time.monotonic() + 5)
        samples = scrape(port)
        listening = metrics.server.socket.getsockname()
    finally:
        metrics.close(store)

    assert listening == ("127.0.0.1", port)
    assert value(samples, "bgremover_queue_depth") == 2
    assert all(name.startswith("bgremover_") for name, _ in samples)
    with pytest.raises(OSError):
        scrape(port)  # closed: the no_leaks fixture checks that its thread is gone too


def test_a_port_in_use_is_refused_with_one_line_naming_the_setting(tmp_path, store):
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        metrics = metrics_for(tmp_path, metrics_port=port)
        with pytest.raises(MetricsUnavailable) as refused:
            metrics.start(store)
        metrics.close(store)
    message = str(refused.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message and "metrics_port" in message and "in use" in message


def test_the_textfile_is_written_at_start_every_refresh_and_at_close(tmp_path, store):
    textfile = tmp_path / "textfile" / "bgremover.prom"
    textfile.parent.mkdir()
    metrics = metrics_for(tmp_path, metrics_textfile=textfile)
    add_session(store, "catalog", [Status.QUEUED])

    metrics.start(store)
    assert value(parse(textfile.read_text()), "bgremover_queue_depth") == 1
    add_session(store, "second", [Status.QUEUED])
    metrics.refresh(store, now=time.monotonic() + 5)
    assert value(parse(textfile.read_text()), "bgremover_queue_depth") == 2
    add_session(store, "third", [Status.QUEUED])
    metrics.close(store)

    assert value(parse(textfile.read_text()), "bgremover_queue_depth") == 3
    assert [p.name for p in textfile.parent.iterdir()] == ["bgremover.prom"]  # no temp file left beside it


def test_a_textfile_that_cannot_be_written_is_refused_at_start(tmp_path, store):
    metrics = metrics_for(tmp_path, metrics_textfile=tmp_path / "no-such-folder" / "bgremover.prom")
    with pytest.raises(MetricsUnavailable, match=r"no-such-folder/bgremover.prom \(metrics_textfile\): No such file"):
        metrics.start(store)
    metrics.close(store)


def test_a_textfile_that_cannot_be_replaced_is_said_once_and_never_stops_the_loop(tmp_path, store):
    textfile = tmp_path / "bgremover.prom"
    metrics = metrics_for(tmp_path, metrics_textfile=textfile)
    metrics.start(store)
    textfile.unlink()
    textfile.mkdir()  # the rename over it fails, as a full or read-only disk would make it, even for root

    metrics.refresh(store, now=time.monotonic() + 5)  # does not raise
    assert metrics.failing
    textfile.rmdir()
    metrics.refresh(store, now=time.monotonic() + 10)

    assert not metrics.failing and value(parse(textfile.read_text()), "bgremover_queue_depth") == 0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith("bgremover.prom")] == ["bgremover.prom"]
    metrics.close(store)


@pytest.mark.parametrize(("setting", "given", "complaint"), [
    ("metrics_port", 0, "bad setting 'metrics_port'"),
    ("metrics_port", 65536, "bad setting 'metrics_port'"),
    ("metrics_textfile", "/var/lib/node_exporter/bgremover.txt", "reads only files ending in .prom"),
])  # fmt: skip
def test_a_bad_metrics_setting_stops_start_up_with_one_line(tmp_path, setting, given, complaint):
    with pytest.raises(SettingsError) as bad:
        load_settings(root=tmp_path, **{setting: given})
    assert complaint in str(bad.value) and setting in str(bad.value) and "\n" not in str(bad.value)


def test_the_bench_daemon_neither_takes_the_metrics_port_nor_overwrites_the_textfile(tmp_path, monkeypatch):
    from bgremover.bench.daemon import daemon_environment

    monkeypatch.setenv("BGREMOVER_METRICS_PORT", "9101")
    settings = load_settings(root=tmp_path, metrics_textfile=tmp_path / "bgremover.prom")
    env = daemon_environment(settings, "png")
    assert not {"BGREMOVER_METRICS_PORT", "BGREMOVER_METRICS_TEXTFILE"} & set(env)
    assert "None" not in env.values()  # an unset setting is left unset, not spelled "None"


def test_a_metric_that_cannot_be_recorded_never_reaches_the_loop(tmp_path):
    metrics = metrics_for(tmp_path, metrics_port=free_port())
    broken = RunningJob(None, None, started=None, deadline=0.0)  # so that a bug's TypeError is raised inside
    metrics.job_concluded(broken, Status.DONE, None, None, now=101.0)  # logged, not raised
    assert registry_value(metrics, "bgremover_jobs_total", status="done") == 0
