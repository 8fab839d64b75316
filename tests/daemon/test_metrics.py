"""Prometheus metrics: the contract an operator's scraper relies on.

The first half drives service/metrics.py against a real SQLite store in tmp_path;
the second runs the real daemon (fake job bodies, and the real job once) and
scrapes http://127.0.0.1:PORT/metrics over HTTP, or reads the textfile,
parsing both with prometheus_client's own parser.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import pytest

from bgremover.service.metrics import FAILURE_REASONS, STAGES
from tests.conftest import REPO
from tests.support.harness import Daemon, drop, wait_for
from tests.support.images import photo
from tests.support.metrics import free_port, parse, scrape, value

ALL_STAGES = (*STAGES, "isolation_overhead")


def labels_of(samples: dict, name: str, label: str) -> set[str]:
    return {dict(key)[label] for sample_name, key in samples if sample_name == name}


# ---------------------------------------------------------------- the daemon, scraped over HTTP


def test_a_scrape_shows_items_failures_by_reason_job_durations_and_the_start_time(tmp_path):
    root, port = tmp_path / "root", free_port()
    drops = {"a.jpg": "ok", "b.jpg": "ok", "c.jpg": "bad-input", "d.jpg": "exit 3", "e.jpg": "sigkill"}
    before = time.time()
    with Daemon(root, metrics_port=port) as daemon:
        for name, body in drops.items():
            drop(root / "inbox", f"catalog/{name}", body)
        daemon.wait_complete("catalog")
        samples = wait_for(
            lambda: (s := scrape(port)) and value(s, "bgremover_sessions", state="complete") == 1 and s,
            what="the complete session in a scrape",
        )
        [started] = daemon.events("metrics_started")

    assert started["url"] == f"http://127.0.0.1:{port}/metrics"
    assert {
        status: value(samples, "bgremover_items", status=status)
        for status in labels_of(samples, "bgremover_items", "status")
    } == {"queued": 0, "processing": 0, "done": 2, "failed": 3, "cancelled": 0}
    assert value(samples, "bgremover_queue_depth") == 0
    assert value(samples, "bgremover_sessions", state="open") == 0
    assert value(samples, "bgremover_jobs_total", status="done") == 2
    assert value(samples, "bgremover_jobs_total", status="failed") == 3
    failures = {reason: value(samples, "bgremover_job_failures_total", reason=reason) for reason in FAILURE_REASONS}
    assert failures == {r: (1 if r in ("bad_input", "crashed", "killed") else 0) for r in FAILURE_REASONS}
    assert labels_of(samples, "bgremover_job_failures_total", "reason") == set(FAILURE_REASONS)  # never free text
    assert value(samples, "bgremover_job_duration_seconds_count") == 5
    assert value(samples, "bgremover_job_duration_seconds_bucket", le="+Inf") == 5
    assert 0 < value(samples, "bgremover_job_duration_seconds_sum") < 60
    assert labels_of(samples, "bgremover_job_stage_seconds_count", "stage") == set(ALL_STAGES)
    assert before - 1 <= value(samples, "bgremover_start_time_seconds") <= time.time()
    assert all(name.startswith("bgremover_") for name, _ in samples)


def test_the_real_job_reports_every_stage_and_what_isolation_added(tmp_path):
    root, port = tmp_path / "root", free_port()
    with Daemon(root, fake_jobs=False, metrics_port=port, threads=1) as daemon:
        drop(root / "inbox", "shoot/astronaut.jpg", photo("astronaut").read_bytes())
        daemon.wait_complete("shoot", timeout=120)
        samples = wait_for(
            lambda: (s := scrape(port)) and value(s, "bgremover_items", status="done") == 1 and s,
            what="the done item in a scrape",
        )

    for stage in ALL_STAGES:
        assert value(samples, "bgremover_job_stage_seconds_count", stage=stage) == 1, stage
    stages = sum(value(samples, "bgremover_job_stage_seconds_sum", stage=stage) for stage in ALL_STAGES)
    assert stages == pytest.approx(value(samples, "bgremover_job_duration_seconds_sum"), rel=1e-3)
    # The astronaut runs off the photo's bottom edge: one quality signal, counted by its name.
    assert value(samples, "bgremover_review_signals_total", signal="cut_by_frame") == 1
    assert value(samples, "bgremover_review_signals_total", signal="no_subject") == 0


def test_the_daemon_keeps_a_textfile_for_node_exporter_current_and_writes_it_last_at_stop(tmp_path):
    root, textfile = tmp_path / "root", tmp_path / "collector" / "bgremover.prom"
    textfile.parent.mkdir()
    with Daemon(root, metrics_textfile=textfile) as daemon:
        assert value(parse(textfile.read_text()), "bgremover_queue_depth") == 0  # written before daemon is ready
        drop(root / "inbox", "catalog/a.jpg", "ok")
        drop(root / "inbox", "catalog/b.jpg", "exit 3")
        daemon.wait_complete("catalog")
        wait_for(
            lambda: value(parse(textfile.read_text()), "bgremover_sessions", state="complete") == 1,
            what="the textfile to show the complete session",
        )
        assert daemon.stop() == 0

    samples = parse(textfile.read_text())
    assert value(samples, "bgremover_items", status="done") == 1
    assert value(samples, "bgremover_job_failures_total", reason="crashed") == 1
    assert [p.name for p in textfile.parent.iterdir()] == ["bgremover.prom"]


def test_a_metrics_port_in_use_stops_the_daemon_with_one_line_and_exit_code_2(tmp_path):
    root = tmp_path / "root"
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        env = Daemon(root, metrics_port=port).env
        result = subprocess.run(
            [sys.executable, "-m", "bgremover", "run", "--root", str(root)],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=120,
        )

    said = [line for line in result.stderr.splitlines() if not line.startswith("{")]  # the rest is the JSON log
    assert result.returncode == 2, result.stderr
    assert said == [
        f"bgremover: cannot serve metrics on 127.0.0.1:{port} (metrics_port): Address already in use; "
        "stop what uses it or choose another port"
    ]
