"""`bgremover models import`: the models rembg users already have, recognised by checksum, copied, never altered.

The one real rembg file here is the bundled u2netp, which is byte for byte the
u2netp.onnx rembg downloads (its md5 is the one rembg lists). The others are
tiny graphs (tests/support/onnxgraphs.py) saved under rembg's file names with
rembg's input shapes: their checksums are not rembg's, so they are refused as
unknown unless the user passes --trust-name.
"""

from __future__ import annotations

import hashlib
import json

import pytest

from bgremover.models import rembg
from bgremover.models.manifest import models_dir, spec_from_entry

BUNDLED = models_dir() / "u2netp.onnx"


def manifest(tmp_path) -> dict:
    return json.loads((tmp_path / "root" / "models" / "manifest.json").read_text())


# ---------------------------------------------------------------- the scenario: a rembg user's ~/.u2net


def test_the_bundled_u2netp_is_the_file_rembg_lists():
    assert (
        hashlib.md5(BUNDLED.read_bytes()).hexdigest()
        == rembg.MODELS["u2netp"].md5
        == "8e83ca70e441ab06c318d82300c84806"
    )


# ---------------------------------------------------------------- recognition


def test_rembgs_folder_is_found_by_rembgs_own_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("U2NET_HOME", raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    assert rembg.home() == tmp_path / ".u2net"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert rembg.home() == tmp_path / "data" / ".u2net"
    monkeypatch.setenv("U2NET_HOME", str(tmp_path / "models"))
    assert rembg.home() == tmp_path / "models"


# ---------------------------------------------------------------- the table


@pytest.mark.parametrize(
    "model", [model for model in rembg.MODELS.values() if model.refusal is None], ids=lambda model: model.name
)
def test_every_importable_recipe_is_a_valid_manifest_entry(tmp_path, model):
    spec = spec_from_entry(model.name, {"file": model.file, "sha256": "0" * 64, **model.entry_fields()}, tmp_path)
    assert (spec.scale, spec.resize, spec.mask_range, spec.output_index) == ("max", "lanczos", "stretch", 0)
    assert spec.activation == ("sigmoid" if model.name.startswith("birefnet") else "none")
    assert len(model.md5) == 32
