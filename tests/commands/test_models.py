"""More models by manifest: a user's own ONNX file, described by an entry, chosen with `model`.

Every model here is a tiny graph the test builds (tests/support/onnxgraphs.py), loaded
by the real onnxruntime and run by the real daemon.

These start a process (a `bgremover` command, a job, a mount); the tests of the
same contract that run in the test process are in tests/unit/test_models.py.
"""

from __future__ import annotations

from tests.support.cli import cli, one_error_line

# ---------------------------------------------------------------- finding a model


def test_a_models_dir_setting_points_anywhere(folder, tmp_path):
    result = cli(
        "remove",
        tmp_path / "none.png",
        tmp_path / "out.png",
        env={"BGREMOVER_MODEL": "redness", "BGREMOVER_MODELS_DIR": str(folder)},
    )
    # The model was found and loaded: what fails is only the missing input.
    assert result.returncode == 1, result.stderr
    assert "none.png" in one_error_line(result)
