"""A job turns transparent huge pages off for itself when its model's working memory is too big for them.

The fork server asks malloc for huge pages; IS-Net at 1024×1024 then made the
kernel compact memory and its jobs slower, while U²-Net at 320×320 gained.
Each case runs in a child process: the setting is for the whole process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = """
import sys
from pathlib import Path
from bgremover.job.process import fit_huge_pages
from bgremover.models.manifest import ModelSpec
size = int(sys.argv[1])
spec = ModelSpec("m", Path("m.onnx"), "", (size, size), (0, 0, 0), (1, 1, 1), 0, "CC0-1.0", "a test")
fit_huge_pages(spec)
print(next(line.split()[1] for line in open("/proc/self/status") if line.startswith("THP_enabled")))
"""


@pytest.mark.parametrize(("size", "enabled"), [(320, "1"), (512, "1"), (1024, "0")])
def test_huge_pages_stay_on_only_for_a_model_of_at_most_512_by_512(size, enabled):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(size)], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert result.stdout.strip() == enabled
