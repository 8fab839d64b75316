"""The Python API: `from bgremover import remove, Session`, as rembg's remove and new_session.

Each kind of input comes back as the same kind; the cutout is the one
`bgremover remove` makes; options, bad input and the light `import bgremover`
hold. Everything runs the real bundled u2netp on small images.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_api.py.
"""

from __future__ import annotations

import io
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import bgremover
from bgremover import Session, remove
from tests.conftest import REPO
from tests.support.cli import cli
from tests.support.images import iou, photo


@pytest.fixture(scope="module")
def session():
    return Session("u2netp")


@pytest.fixture(scope="module")
def test_the_alpha_is_the_one_bgremover_remove_writes(session, tmp_path):
    out = tmp_path / "cli.png"
    result = cli("remove", photo(), out, env={"BGREMOVER_ROOT": str(tmp_path / "root")})
    assert result.returncode == 0, result.stderr
    by_command = np.array(Image.open(out))[..., 3]
    by_api = np.array(Image.open(io.BytesIO(remove(photo().read_bytes(), session=session))))[..., 3]
    # Same steps; onnxruntime's thread count may differ between the two, which can move a level or so.
    assert iou(by_api >= 128, by_command >= 128) >= 0.99
    assert int(np.abs(by_api.astype(int) - by_command).max()) <= 2


def test_importing_bgremover_loads_no_numpy_until_the_api_is_asked_for():
    code = (
        "import sys, bgremover, bgremover.supervisor.loop; heavy = {'numpy', 'onnxruntime'}; "
        "print(sorted(heavy & set(sys.modules))); from bgremover import remove, Session; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    lines = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert lines == ["[]", "['numpy', 'onnxruntime']"]
    with pytest.raises(AttributeError, match="module 'bgremover' has no attribute 'nothing'"):
        bgremover.nothing  # noqa: B018
