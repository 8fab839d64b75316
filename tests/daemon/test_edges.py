"""The contract of imaging/edges.py, on small synthetic masks and photos built here."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bgremover.imaging import edges
from bgremover.intake.tickets import TICKET_NAME
from tests.support.harness import Daemon
from tests.support.images import encoded, iou, shape_on_texture
from tests.support.onnxgraphs import manifest_entry, redness_model, write_manifest

# ---------------------------------------------------------------- through the real daemon


def test_the_daemon_applies_the_edges_setting_of_each_folders_ticket(tmp_path):
    """A tiny model that finds red (tests/support/onnxgraphs.py) sees the planted speck and pinhole as the model would."""
    root = tmp_path / "root"
    size = (160, 120)
    model = redness_model(root / "models" / "redness.onnx", input_size=size)
    write_manifest(root / "models", {"redness": manifest_entry(model, input_size=list(size))})
    photo, subject = shape_on_texture(size, shape="disc")
    pixels = np.array(photo)
    pixels[10:16, 10:16] = (220, 30, 30)  # a red speck far from the disc: an island
    pixels[58:62, 78:82] = (128, 128, 128)  # a grey pinhole inside the disc
    image = encoded(Image.fromarray(pixels), "PNG")
    with Daemon(root, fake_jobs=False, model="redness", output="mask", session_idle_seconds=1) as daemon:
        for mode in ("raw", "clean", "refine"):
            staging = tmp_path / "staging" / mode
            staging.mkdir(parents=True)
            (staging / TICKET_NAME).write_text(f'edges = "{mode}"\n')
            (staging / "p.png").write_bytes(image)
            staging.rename(root / "inbox" / mode)
        masks = {}
        for mode in ("raw", "clean", "refine"):
            daemon.wait_complete(mode, timeout=120)
            masks[mode] = np.asarray(Image.open(io.BytesIO(daemon.zip_members(mode)["p.png"])))

    raw, cleaned, refined = masks["raw"], masks["clean"], masks["refine"]
    assert raw[10:16, 10:16].min() >= 128 and raw[59:61, 79:81].max() < 128, "the model saw the speck and the hole"
    assert cleaned[10:16, 10:16].max() == 0, "clean removed the island"
    assert cleaned[59:61, 79:81].min() == 255, "clean filled the pinhole"
    assert iou(cleaned >= 128, subject) >= 0.97
    outside = ~edges.band(raw, edges.band_width(raw.shape))
    np.testing.assert_array_equal(refined[outside], raw[outside])
    assert (refined != raw).any()


def test_a_folder_whose_ticket_asks_for_decontamination_gets_it_and_one_without_does_not(tmp_path):
    """The fur ball over a green wall (bench/composites.py), cut by the bundled model in two folders."""
    from bgremover.bench import composites

    alpha, colour = composites.subject("fur ball", (400, 300))
    image = encoded(
        Image.fromarray(composites.composite(alpha, colour, composites.background("green wall", (400, 300)))), "PNG"
    )
    root = tmp_path / "root"
    with Daemon(root, fake_jobs=False, session_idle_seconds=1) as daemon:
        for folder, ticket in (("plain", ""), ("decontaminated", "decontaminate = true\n")):
            staging = tmp_path / "staging" / folder
            staging.mkdir(parents=True)
            (staging / TICKET_NAME).write_text(ticket)
            (staging / "fur.png").write_bytes(image)
            staging.rename(root / "inbox" / folder)
        cutouts = {}
        for folder in ("plain", "decontaminated"):
            daemon.wait_complete(folder, timeout=120)
            cutouts[folder] = np.asarray(Image.open(io.BytesIO(daemon.zip_members(folder)["fur.png"])))
    plain, cleaned = cutouts["plain"], cutouts["decontaminated"]
    np.testing.assert_array_equal(plain[..., 3], cleaned[..., 3])
    partial = (plain[..., 3] > 0) & (plain[..., 3] < 255)
    changed = (plain[..., :3] != cleaned[..., :3]).any(axis=2)
    assert changed.any() and not (changed & ~partial).any(), "only partial pixels change colour"
    green = [
        (cutout[..., 1].astype(int) - cutout[..., 0] / 2 - cutout[..., 2] / 2)[partial].mean()
        for cutout in (plain, cleaned)
    ]
    assert green[1] < green[0] - 5, green
