"""Phone photos in: HEIC/HEIF through pillow-heif, turned upright, with their colour profile kept.

The test makes its own HEIC files: the shape-on-texture image with a known
mask, saved with an EXIF orientation and an ICC profile. pillow-heif stores the
orientation as the HEIF rotation and libheif applies it on reading, so the
daemon must hand back the picture as a phone shows it.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from tests.support.harness import Daemon, drop
from tests.support.heic import heic_bytes
from tests.support.images import iou, shape_on_texture, srgb_icc_profile


def test_a_dropped_heic_or_canon_hif_comes_back_as_an_upright_cutout_with_its_profile(tmp_path):
    root = tmp_path / "root"
    image, truth = shape_on_texture((160, 120))
    icc = srgb_icc_profile()
    # Both in the inbox before the start, so both are taken into one session.
    drop(root / "inbox", "phone/IMG_0001.HEIC", heic_bytes(image, orientation=6, icc=icc))
    drop(root / "inbox", "phone/IMG_0002.HIF", heic_bytes(image, orientation=6, icc=icc))  # Canon's name
    with Daemon(root, fake_jobs=False) as daemon:
        status = daemon.wait_complete("phone", timeout=120)
        members = daemon.zip_members("phone")

    assert sorted((i["name"], i["status"], i["output"]) for i in status["items"]) == [
        ("IMG_0001.HEIC", "done", "IMG_0001.png"),
        ("IMG_0002.HIF", "done", "IMG_0002.png"),
    ]
    for member in ("IMG_0001.png", "IMG_0002.png"):
        cutout = Image.open(io.BytesIO(members[member]))
        assert (cutout.mode, cutout.size) == ("RGBA", (120, 160))
        assert cutout.info.get("icc_profile") == icc
        assert iou(np.asarray(cutout)[..., 3] >= 128, np.rot90(truth, k=-1)) >= 0.9
