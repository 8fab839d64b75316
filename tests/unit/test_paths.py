"""Inference paths as data: the gate, the records in the models folder's manifest, and what `auto` chooses.

Real manifests in real folders, the bundled model's real entry; no model is run
here (tests/model/test_paths.py runs them).
"""

from __future__ import annotations

import importlib.abc
import json
import sys

import pytest

from bgremover.models import fetch, paths
from bgremover.models.fetch import write_manifest
from bgremover.models.manifest import ModelError, find_model_spec, read_checks, read_manifest


@pytest.fixture
def spec():
    return find_model_spec("u2netp", None)


def record(mean: float, lowest: float, ms: float, setup_ms: float | None = None) -> dict:
    one = {"mean_iou": mean, "lowest_iou": lowest, "alpha_mae": 0.5, "ms": ms}
    if setup_ms is not None:
        one["setup_ms"] = setup_ms
    return {**one, "allowed": paths.passes(one)}


def checked(folder, spec, records: dict, **changed) -> None:
    check = {"sha256": spec.sha256, "cpu": paths.cpu_features(), "photos": 15, "threads": 1, "paths": records}
    write_manifest(folder, {}, {spec.name: {**check, **changed}})


@pytest.mark.parametrize(
    ("mean", "lowest", "allowed"),
    [(0.995, 0.98, True), (0.9999, 0.9999, True), (0.9949, 0.999, False), (0.999, 0.9799, False), (0.0, 0.0, False)],
)
def test_a_path_passes_only_with_mean_iou_at_least_0_995_and_lowest_at_least_0_98(mean, lowest, allowed):
    assert paths.passes({"mean_iou": mean, "lowest_iou": lowest}) is allowed


def test_auto_takes_the_fastest_passed_path_whatever_the_backend_setting(tmp_path, spec):
    checked(
        tmp_path,
        spec,
        {
            "onnxruntime/fp32": record(1.0, 1.0, 400),
            "openvino/fp32": record(1.0, 0.9999, 300),
            "openvino/bf16": record(0.999, 0.99, 150),
        },
    )
    for backend in paths.BACKENDS:
        assert paths.choose(spec, tmp_path, backend, "auto").name == "openvino/bf16"
    # A precision named runs on the backend named.
    assert paths.choose(spec, tmp_path, "onnxruntime", "fp32").name == "onnxruntime/fp32"


def test_auto_stays_with_fp32_onnxruntime_for_a_path_hardly_faster(tmp_path, spec):
    checked(tmp_path, spec, {"onnxruntime/fp32": record(1.0, 1.0, 400), "openvino/fp32": record(1.0, 1.0, 370)})
    assert paths.choose(spec, tmp_path, "onnxruntime", "auto").name == "onnxruntime/fp32"
    checked(tmp_path, spec, {"onnxruntime/fp32": record(1.0, 1.0, 400), "openvino/fp32": record(1.0, 1.0, 350)})
    assert paths.choose(spec, tmp_path, "onnxruntime", "auto").name == "openvino/fp32"


def test_auto_counts_what_each_job_spends_setting_its_path_up(tmp_path, spec):
    """A job runs the model once: a path faster per inference but slow to set up is slower per image."""
    checked(
        tmp_path,
        spec,
        {"onnxruntime/fp32": record(1.0, 1.0, 400, 10), "openvino/fp32": record(1.0, 1.0, 300, 600)},
    )
    assert paths.choose(spec, tmp_path, "onnxruntime", "auto").name == "onnxruntime/fp32"
    checked(
        tmp_path,
        spec,
        {"onnxruntime/fp32": record(1.0, 1.0, 1400, 10), "openvino/fp32": record(1.0, 1.0, 600, 600)},
    )
    assert paths.choose(spec, tmp_path, "onnxruntime", "auto").name == "openvino/fp32"


def test_auto_never_takes_a_path_that_failed_however_fast(tmp_path, spec):
    checked(tmp_path, spec, {"openvino/fp32": record(1.0, 1.0, 300), "openvino/bf16": record(0.99, 0.9, 10)})
    assert paths.choose(spec, tmp_path, "onnxruntime", "auto").name == "openvino/fp32"


def test_auto_is_fp32_where_nothing_was_checked_or_the_check_is_stale(tmp_path, spec):
    fast = {"openvino/bf16": record(1.0, 1.0, 10), "openvino/fp32": record(1.0, 1.0, 300)}
    assert paths.choose(spec, tmp_path, "openvino", "auto").name == "onnxruntime/fp32"  # no manifest at all
    checked(tmp_path, spec, fast, sha256="0" * 64)  # measured on another model file
    assert paths.choose(spec, tmp_path, "openvino", "auto").name == "onnxruntime/fp32"
    checked(tmp_path, spec, fast, cpu=["avx512_bf16"])  # measured on another CPU
    assert paths.choose(spec, tmp_path, "openvino", "auto").name == "onnxruntime/fp32"
    checked(tmp_path, spec, fast)
    assert paths.choose(spec, tmp_path, "onnxruntime", "auto").name == "openvino/bf16"


def test_auto_takes_int8_only_with_its_variant_in_place(tmp_path, spec):
    variant = tmp_path / "u2netp.int8.onnx"
    variant.write_bytes(b"a quantised graph")
    records = {"onnxruntime/fp32": record(1.0, 1.0, 400), "onnxruntime/int8": record(0.998, 0.99, 200)}
    int8 = {"file": variant.name, "sha256": "1" * 64, "of": spec.sha256, "fp32": ["Conv_3"]}
    checked(tmp_path, spec, records, int8=int8)
    chosen = paths.choose(spec, tmp_path, "onnxruntime", "auto")
    assert (chosen.name, chosen.file) == ("onnxruntime/int8", variant)
    variant.unlink()
    assert paths.choose(spec, tmp_path, "onnxruntime", "auto").name == "onnxruntime/fp32"


def test_bf16_runs_its_variant_made_for_this_model_file_and_plain_bf16_otherwise(tmp_path, spec):
    """`models verify` registers a variant with its last convolutions in fp32 where plain bf16 failed the gate."""
    variant = tmp_path / "u2netp.bf16-18.xml"
    variant.write_text("<net/>")
    records = {"onnxruntime/fp32": record(1.0, 1.0, 400), "openvino/bf16": record(0.997, 0.9804, 200)}
    checked(tmp_path, spec, records, bf16={"file": variant.name, "of": spec.sha256, "fp32_convolutions": 18})
    assert paths.path_for(spec, tmp_path, "openvino", "bf16").file == variant
    assert paths.choose(spec, tmp_path, "onnxruntime", "auto").file == variant
    checked(tmp_path, spec, records, bf16={"file": variant.name, "of": "0" * 64, "fp32_convolutions": 18})
    assert paths.path_for(spec, tmp_path, "openvino", "bf16").file == spec.path  # made for another model file
    checked(tmp_path, spec, records, bf16={"file": variant.name, "of": spec.sha256, "fp32_convolutions": 18})
    variant.unlink()
    assert paths.path_for(spec, tmp_path, "openvino", "bf16").file == spec.path


@pytest.mark.parametrize(
    ("backend", "precision", "sentence"),
    [
        ("onnxruntime", "bf16", "there is no onnxruntime/bf16 path: onnxruntime offers fp32, int8 on the CPU"),
        ("tensorrt", "fp32", "unknown backend 'tensorrt' (known: onnxruntime, openvino)"),
        (
            "openvino",
            "int8",
            "model u2netp has no INT8 variant that passed its check: run `bgremover models quantize u2netp`",
        ),
    ],
)
def test_a_path_that_cannot_be_taken_is_refused_in_one_sentence(tmp_path, spec, backend, precision, sentence):
    with pytest.raises(ModelError) as refused:
        paths.choose(spec, tmp_path, backend, precision)
    assert str(refused.value) == sentence


def test_the_checks_survive_a_model_written_into_the_manifest_and_go_with_a_model_removed(tmp_path, spec):
    entry = {"file": "x.onnx", "sha256": "2" * 64, "input_size": [8, 8], "mean": [0, 0, 0], "std": [1, 1, 1]}
    entry |= {"output_index": 0, "licence": "MIT", "source": "a test"}
    write_manifest(tmp_path, {"x": entry}, {"u2netp": {"paths": {}}, "x": {"paths": {}}})
    write_manifest(tmp_path, {"x": entry, "y": entry})  # as fetch and import write it
    assert set(read_checks(tmp_path)) == {"u2netp", "x"}
    assert set(read_manifest(tmp_path)) == {"x", "y"}  # the checks are no model
    write_manifest(tmp_path, {"y": entry})  # as remove writes it
    assert set(read_checks(tmp_path)) == {"u2netp"}
    assert "checks" in json.loads((tmp_path / "manifest.json").read_text())


def test_cpu_features_are_the_flags_that_change_kernels(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_bf16 sha_ni\n")
    assert paths.cpu_features(cpuinfo) == ["avx2", "fma", "avx512f", "avx512_bf16"]


class NoOpenVino(importlib.abc.MetaPathFinder):
    """Python as an install without the openvino extra finds it."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "openvino":
            raise ModuleNotFoundError("No module named 'openvino'")
        return None


def test_auto_passes_over_a_backend_that_is_not_installed(tmp_path, spec, monkeypatch):
    checked(tmp_path, spec, {"onnxruntime/fp32": record(1.0, 1.0, 400), "openvino/fp32": record(1.0, 1.0, 100)})
    assert paths.choose(spec, tmp_path, "onnxruntime", "auto").name == "openvino/fp32"
    monkeypatch.delitem(sys.modules, "openvino", raising=False)
    monkeypatch.setattr(sys, "meta_path", [NoOpenVino(), *sys.meta_path])
    assert paths.choose(spec, tmp_path, "onnxruntime", "auto").name == "onnxruntime/fp32"
    with pytest.raises(ModelError) as refused:  # named, it is never quietly another
        paths.choose(spec, tmp_path, "openvino", "auto")
    assert str(refused.value).endswith("pip install 'bgremover[openvino]'")


def test_the_bench_runs_fp32_onnxruntime_and_every_path_that_passed_fastest_first(tmp_path, spec):
    from bgremover.bench.catalog import allowed_paths

    records = {
        "onnxruntime/fp32": record(1.0, 1.0, 400),
        "openvino/fp32": record(1.0, 1.0, 300),
        "openvino/bf16": record(0.999, 0.99, 150),
        "onnxruntime/int8": record(0.97, 0.8, 100),  # failed: never benched as an allowed path
    }
    checked(tmp_path, spec, records)
    assert [path.name for path in allowed_paths(spec, tmp_path)] == [
        "onnxruntime/fp32",
        "openvino/bf16",
        "openvino/fp32",
    ]


def test_bench_models_takes_each_name_once_in_order_and_refuses_none():
    import argparse

    from bgremover.bench.arguments import models_argument

    assert models_argument("u2netp, u2net,u2netp,isnet-medium") == ["u2netp", "u2net", "isnet-medium"]
    with pytest.raises(argparse.ArgumentTypeError) as refused:
        models_argument(" , ")
    assert str(refused.value) == "expected model names such as u2netp,u2net, got ' , '"


def auto_line(folder) -> str:
    """The line `bgremover models list` shows under the bundled model about `precision = "auto"`."""
    listed = fetch.listing(folder).splitlines()
    start = next(index for index, line in enumerate(listed) if line.startswith("u2netp "))
    (line,) = [one.strip() for one in listed[start + 1 : start + 3] if "precision auto" in one]
    return line


def test_models_list_says_what_auto_runs_for_each_installed_model_and_why(tmp_path, spec):
    assert auto_line(tmp_path) == (
        "precision auto runs onnxruntime/fp32: not checked on this CPU (bgremover models verify u2netp)"
    )
    faster = {"onnxruntime/fp32": record(1.0, 1.0, 400, 10), "openvino/bf16": record(0.999, 0.99, 150, 200)}
    checked(tmp_path, spec, faster, cpu=["avx512_bf16", "amx_bf16", "amx_int8"])
    assert auto_line(tmp_path).endswith("not checked on this CPU (bgremover models verify u2netp)")
    checked(tmp_path, spec, faster)
    assert auto_line(tmp_path) == (
        "precision auto runs openvino/bf16: 350 ms of CPU per image against 410 for onnxruntime/fp32, "
        "as models verify measured on this CPU"
    )
    refused = {"onnxruntime/fp32": record(1.0, 1.0, 400, 10), "openvino/bf16": record(0.96, 0.67, 150, 200)}
    checked(tmp_path, spec, refused)
    assert (
        auto_line(tmp_path) == "precision auto runs onnxruntime/fp32: no faster path passed models verify on this CPU"
    )
