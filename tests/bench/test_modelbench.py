"""`bgremover bench --model NAME`: another model beside the bundled u2netp, from real runs of the CLI.

NAME here is a tiny real ONNX model built by the test (tests/support/onnxgraphs.py) in a
models folder named by BGREMOVER_MODELS_DIR, as `bgremover models fetch` would
install one. No test asserts how fast anything is: only that each number is
there, is positive, and says what it claims (a ratio is the ratio of the two
medians shown, an IoU is one per image and within 0..1).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.conftest import PHOTOS, REPO
from tests.support.cli import cli, one_error_line
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest

MODEL = "redness"
MODELS = ["u2netp", MODEL]


def install_model(folder: Path) -> dict[str, str]:
    """The redness model in a models folder of its own; the environment that points the CLI at it."""
    write_manifest(folder, {MODEL: manifest_entry(redness_model(folder / "redness.onnx"))})
    return {"BGREMOVER_MODELS_DIR": str(folder)}


def bench_model(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return cli("bench", "--root", folder / "root", *args, env=install_model(folder / "models"))


@pytest.fixture(scope="module")
def document(tmp_path_factory) -> dict:
    """One small real run, shared by the tests that read its JSON."""
    folder = tmp_path_factory.mktemp("modelbench")
    result = bench_model(folder, "--model", MODEL, "--count", "2", "--size", "320x240", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def durations(values: dict, where: str = ""):
    """Every (name, value) whose key says it is in ms (`session_ms`, `ms_per_image`), at any depth."""
    for key, value in values.items():
        if isinstance(value, dict):
            yield from durations(value, f"{where}{key}.")
        elif "ms" in key.split("_"):
            yield where + key, value


# ---------------------------------------------------------------- the numbers


def test_the_document_holds_both_models_baseline_first_and_their_agreement(document):
    assert list(document) == ["machine", "corpus", "models", "agreement"]
    assert list(document["models"]) == MODELS
    assert (document["corpus"]["count"], document["corpus"]["sizes"]) == (2, {"320x240": 2})


@pytest.mark.parametrize("name", MODELS)
def test_each_model_has_a_positive_time_for_every_measurement(document, name):
    model = document["models"][name]
    assert model["session_ms"] > 0
    assert model["model_alone"]["runs"] > 0 and model["model_alone"]["inference_ms"] > 0
    assert model["pipeline"]["images"] == 2 and model["pipeline"]["ms_per_image"] > 0
    stages = [f"{stage}_ms" for stage in ("decode", "preprocess", "inference", "postprocess", "encode")]
    assert all(stage in model["pipeline"] for stage in stages), model["pipeline"]
    found = list(durations(model))
    assert len(found) >= 8
    for key, value in found:
        assert isinstance(value, (int, float)) and value > 0, f"{name}.{key} = {value!r}"


def test_the_ratios_to_u2netp_are_those_of_the_medians_shown(document):
    baseline, other = document["models"]["u2netp"], document["models"][MODEL]
    assert "vs_u2netp" not in baseline
    ratios = other["vs_u2netp"]
    assert ratios["ms_per_image_ratio"] == pytest.approx(
        other["pipeline"]["ms_per_image"] / baseline["pipeline"]["ms_per_image"], rel=0.01
    )
    assert ratios["inference_ms_ratio"] == pytest.approx(
        other["model_alone"]["inference_ms"] / baseline["model_alone"]["inference_ms"], rel=0.01
    )


def test_each_job_reports_its_own_peak_memory_beside_the_limit(document):
    peaks = {name: document["models"][name]["one_job"] for name in MODELS}
    for job in peaks.values():
        assert job["peak_rss_mb"] > 0
        assert job["job_memory_limit_mb"] == 3072  # the setting's default: no BGREMOVER_* but the models folder
        assert job["image"] == "photo-000.jpg"
    # A one-node graph needs far less than U²-Net-p: had the jobs inherited the
    # bench's own high-water mark (see modelbench.LAUNCHER), the two would be equal.
    assert peaks[MODEL]["peak_rss_mb"] < peaks["u2netp"]["peak_rss_mb"]


def test_agreement_gives_one_iou_per_image_within_0_and_1(document):
    agreement = document["agreement"]
    assert (agreement["model"], agreement["against"], agreement["images"]) == (MODEL, "u2netp", 2)
    per_image = agreement["iou_per_image"]
    assert list(per_image) == ["photo-000.jpg", "photo-001.jpg"]
    assert all(0 <= iou <= 1 for iou in per_image.values())
    assert agreement["iou_min"] == min(per_image.values())
    assert agreement["iou_min"] <= agreement["iou_median"] <= max(per_image.values())
    assert 0 <= agreement["alpha_diff_levels_median"] <= agreement["alpha_diff_levels_max"] <= 255


# ---------------------------------------------------------------- the table


def test_the_table_names_both_models_and_gives_each_photo_its_iou(tmp_path):
    # Relative, as a user types it: the fresh job processes work in folders of their own.
    result = bench_model(tmp_path, "--model", MODEL, "--images", str(PHOTOS.relative_to(REPO)))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert "  u2netp" in lines and f"  {MODEL}" in lines, result.stdout
    assert any(line.startswith("mask agreement") for line in lines), result.stdout
    rows = lines[lines.index("  iou_per_image") + 1 :]
    ious = {name: float(value) for name, value in (row.split() for row in rows)}
    assert set(ious) == {"astronaut.jpg", "chelsea.jpg", "coffee.jpg"}, result.stdout
    assert all(0 <= iou <= 1 for iou in ious.values())


# ---------------------------------------------------------------- refusals


def test_naming_u2netp_itself_fails_with_one_line(tmp_path):
    result = bench_model(tmp_path, "--model", "u2netp", "--json")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "u2netp" in line and "name another model" in line, line
    assert result.stdout == ""


def test_an_unknown_model_fails_with_one_line_naming_it(tmp_path):
    result = bench_model(tmp_path, "--model", "no-such-model", "--json")
    assert result.returncode == 1
    line = one_error_line(result)
    assert "'no-such-model'" in line and MODEL in line, line  # the known models are listed
    assert result.stdout == ""
