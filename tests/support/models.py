"""A user's models folder holding one tiny model, and how close two masks are.

Shared by tests/unit/test_models.py and tests/daemon/test_models.py.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest


@pytest.fixture
def folder(tmp_path):
    """A user's models folder holding one good model, 'redness'."""
    folder = tmp_path / "models"
    model = redness_model(folder / "redness.onnx")
    write_manifest(folder, {"redness": manifest_entry(model)})
    return folder


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / (a | b).sum())
