"""The contract of imaging/edges.py, on small synthetic masks and photos built here.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_edges.py.
"""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO


def test_importing_edges_does_not_import_scipy():
    code = "import sys, bgremover.imaging.edges; print('scipy' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
