"""Prometheus metrics: the contract an operator's scraper relies on.

The first half drives service/metrics.py against a real SQLite store in tmp_path;
the second runs the real daemon (fake job bodies, and the real job once) and
scrapes http://127.0.0.1:PORT/metrics over HTTP, or reads the textfile,
parsing both with prometheus_client's own parser.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_metrics.py.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

# ---------------------------------------------------------------- helpers


def test_metrics_keep_the_supervisor_free_of_numpy_and_onnxruntime():
    code = "import sys, bgremover.supervisor.loop, bgremover.service.metrics; print(sorted({'numpy', 'onnxruntime'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stderr
