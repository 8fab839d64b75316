"""The broker's password stays secret: a real redis-server with requirepass, a real supervisor and worker.

The supervisor reads the URL from a file (broker_url_file), the worker from its
environment (BGREMOVER_BROKER_URL), as the README and the systemd units give
them; the broker is then stopped under them, so that every side says it cannot
reach it, and started again. Nothing a person or a scraper can read shows the password.
"""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest

from tests.support.cluster import Redis, Worker, celery_daemon, descendants, run_bgremover, worker_events
from tests.support.harness import drop, wait_for

pytestmark = pytest.mark.timeout(240)

MASKED = "redis://:***@127.0.0.1:"  # how every line names the broker instead


def command_lines(*pids: int) -> dict[int, str]:
    """The command line of each process, and of everything below it, as `ps` shows them to any user."""
    found = {}
    for pid in {pid for top in pids for pid in (top, *descendants(top))}:
        try:
            found[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # ended meanwhile: it shows nothing any more
            pass
    return found


def test_the_broker_password_is_in_no_log_line_status_metric_or_command_line(tmp_path):
    password = f"pw-{secrets.token_hex(12)}"
    root = tmp_path / "root"
    textfile = tmp_path / "metrics" / "bgremover.prom"
    textfile.parent.mkdir()
    with Redis(tmp_path / "redis", password=password) as broker:
        url_file = tmp_path / "broker-url"
        url_file.write_text(broker.url + "\n")
        url_file.chmod(0o600)
        from_file = {"runner": "celery", "broker_url_file": url_file}
        daemon = celery_daemon(root, None, job_slots=2, metrics_textfile=textfile, broker_url_file=url_file)
        with daemon, Worker(root, broker.url, "w1", slots=2) as worker:
            for n in range(3):
                drop(root / "inbox", f"shoot/p{n}.jpg", "sleep 2")
            wait_for(lambda: worker_events(worker, "task_started"), what="a job running on w1")
            running = command_lines(daemon.process.pid, worker.process.pid)

            broker.stop()
            unreachable = wait_for(lambda: daemon.events("broker_unreachable"), what="the supervisor to notice")
            wait_for(lambda: "Cannot connect to" in worker.log(), what="the worker to notice")
            said = [
                run_bgremover(tmp_path, "status", **from_file),
                run_bgremover(tmp_path, "status", "--json", **from_file),
                run_bgremover(tmp_path / "elsewhere", "run", **from_file),  # refused at start, in one line
                run_bgremover(tmp_path, "worker", broker_url=broker.url),  # likewise
            ]
            broker.start()
            daemon.wait_complete("shoot", timeout=150)
        logs = {"supervisor": daemon.log(), "worker": worker.log()}
    outputs = [done.stdout + done.stderr for done in said]
    workers_error = json.loads(said[1].stdout)["workers_error"]

    # What is checked does speak of the broker, each time in the masked form.
    assert unreachable[0]["broker"].startswith(MASKED)
    assert said[0].stdout.splitlines()[1].startswith(f"workers: cannot reach the broker at {MASKED}")
    assert workers_error.startswith(f"cannot reach the broker at {MASKED}")
    assert [(done.returncode, done.stderr.count("\n")) for done in said[2:]] == [(2, 1), (2, 1)], outputs[2:]
    assert all(MASKED in output for output in outputs[2:]), outputs[2:]
    assert "bgremover_worker_jobs" in textfile.read_text()
    assert len(running) >= 4, running  # the supervisor, its fork server, the worker and its pool at least

    assert password not in logs["supervisor"]
    assert password not in logs["worker"]
    assert [output for output in outputs if password in output] == []
    assert password not in textfile.read_text()
    assert {pid: line for pid, line in running.items() if password in line} == {}
