"""More models by manifest: a user's own ONNX file, described by an entry, chosen with `model`.

Every model here is a tiny graph the test builds (tests/support/onnxgraphs.py), loaded
by the real onnxruntime and run by the real daemon.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bgremover.imaging import matting
from bgremover.imaging.matting import ModelError
from bgremover.models import manifest as models
from tests.support.images import shape_on_texture
from tests.support.models import (
    iou,
)
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest

# ---------------------------------------------------------------- finding a model


def test_a_name_is_found_in_the_users_folder_first_then_among_the_bundled(folder):
    assert models.find_model_spec("redness", folder).path == folder / "redness.onnx"
    assert models.find_model_spec("u2netp", folder).path == models.models_dir() / "u2netp.onnx"
    # A folder that does not exist yet is simply empty.
    assert models.find_model_spec("u2netp", folder / "none").name == "u2netp"


def test_a_users_entry_may_stand_in_for_a_bundled_name(folder):
    write_manifest(folder, {"u2netp": manifest_entry(folder / "redness.onnx")})
    assert models.find_model_spec("u2netp", folder).path == folder / "redness.onnx"


def test_an_unknown_name_lists_the_models_of_both_folders(folder):
    with pytest.raises(ModelError, match=r"model 'birefnet' is in neither .*manifest.json \(known: redness, u2netp\)$"):
        models.find_model_spec("birefnet", folder)


def test_an_entry_gives_its_preprocessing_and_defaults_to_dividing_by_255(folder):
    spec = models.find_model_spec("redness", folder)
    assert (spec.input_size, spec.mean, spec.std, spec.output_index) == ((64, 48), (0.5,) * 3, (1.0,) * 3, 1)
    assert (spec.scale, spec.activation, spec.licence) == ("unit", "none", "CC0-1.0")


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"sha256": "0" * 64},
            r"has sha256 .*, the manifest expects 000000000000…: the file is damaged or was replaced",
        ),
        ({"input_size": [64]}, r"input_size must be \[width, height\] in pixels \(got \[64\]\)"),
        ({"std": [1, 0, 1]}, r"std must be three positive numbers, one per channel R, G, B"),
        ({"file": "../elsewhere.onnx"}, r"file must be the name of a file beside the manifest"),
        ({"output_index": -1}, r"output_index must be a whole number from 0"),
        ({"scale": "percent"}, r"scale must be one of unit, max \(got 'percent'\)"),
        ({"sha256": "abc"}, r"sha256 must be 64 hex digits"),
        ({"resize": "bicubic"}, r"resize must be one of lanczos, bilinear \(got 'bicubic'\)"),
        ({"mask_range": "auto"}, r"mask_range must be one of stretch, unit \(got 'auto'\)"),
        ({"crop": "centre"}, r"has unknown field crop"),
    ],
)
def test_a_bad_entry_is_refused_naming_the_model_and_the_field(folder, change, says):
    write_manifest(folder, {"redness": manifest_entry(folder / "redness.onnx", **change)})
    with pytest.raises(ModelError, match=says) as caught:
        models.find_model_spec("redness", folder)
    assert "\n" not in str(caught.value)


def test_an_entry_without_its_licence_is_refused(folder):
    entry = manifest_entry(folder / "redness.onnx")
    del entry["licence"]
    write_manifest(folder, {"redness": entry})
    with pytest.raises(ModelError, match=r"the manifest entry for model 'redness' in .* lacks licence$"):
        models.find_model_spec("redness", folder)


# ---------------------------------------------------------------- the shapes onnxruntime reports


@pytest.mark.parametrize(
    ("model", "entry", "says"),
    [
        (dict(input_size=(32, 32)), {}, r"takes input \[1, 3, 32, 32\], but the manifest says one RGB image of 64×48"),
        (dict(input_size=(48, 64)), {}, r"takes input \[1, 3, 64, 48\], but the manifest says one RGB image of 64×48"),
        (dict(channels=1), {}, r"takes input \[1, 1, 48, 64\]"),
        (dict(decoy_first=False), {}, r"has 1 output\(s\), so the manifest's output_index 1 does not exist"),
    ],
)
def test_a_model_whose_shape_differs_from_its_entry_is_refused(folder, model, entry, says):
    path = redness_model(folder / "other.onnx", **model)
    write_manifest(folder, {"other": manifest_entry(path, **entry)})
    spec = models.find_model_spec("other", folder)
    with pytest.raises(ModelError, match=says):
        matting.create_session(spec)


# ---------------------------------------------------------------- feeding and reading a model


def test_preprocess_follows_the_entrys_scale_mean_and_std(folder):
    spec = models.find_model_spec("redness", folder)
    image = Image.new("RGB", (64, 48), (51, 102, 204))
    tensor = matting.preprocess(image, spec)
    assert tensor.shape == (1, 3, 48, 64)
    np.testing.assert_allclose(tensor[0, :, 0, 0], [0.2 - 0.5, 0.4 - 0.5, 0.8 - 0.5], atol=1e-6)
    # scale "max" (U²-Net's loader) divides by the brightest value instead of 255.
    by_max = matting.preprocess(image, models.ModelSpec(**{**spec.__dict__, "scale": "max"}))
    np.testing.assert_allclose(by_max[0, :, 0, 0], [0.25 - 0.5, 0.5 - 0.5, 1.0 - 0.5], atol=1e-6)


def test_infer_reads_the_named_output_and_applies_its_activation(folder):
    spec = models.find_model_spec("redness", folder)
    session = matting.create_session(spec)
    tensor = np.zeros((1, 3, 48, 64), dtype=np.float32)
    tensor[0, 0] = 2.0  # redness 2 everywhere; the decoy (output 0) would say -2
    np.testing.assert_allclose(matting.infer(session, tensor, spec), np.full((48, 64), 2.0))
    logits = models.ModelSpec(**{**spec.__dict__, "activation": "sigmoid"})
    np.testing.assert_allclose(
        matting.infer(session, tensor, logits), np.full((48, 64), 1 / (1 + np.exp(-2.0))), rtol=1e-6
    )


def test_a_users_model_cuts_out_the_shape_and_the_mask_is_stretched_back(folder, tmp_path):
    image, truth = shape_on_texture((200, 150), shape="square")
    source = tmp_path / "in.png"
    image.save(source)
    spec = models.find_model_spec("redness", folder)
    matting.remove_background(source, tmp_path / "out.png", matting.create_session(spec), spec)
    alpha = np.asarray(Image.open(tmp_path / "out.png").getchannel("A"))
    assert alpha.shape == (150, 200)
    assert iou(alpha >= 128, truth) >= 0.9
