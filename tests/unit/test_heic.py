"""Phone photos in: HEIC/HEIF through pillow-heif, turned upright, with their colour profile kept.

The test makes its own HEIC files: the shape-on-texture image with a known
mask, saved with an EXIF orientation and an ICC profile. pillow-heif stores the
orientation as the HEIF rotation and libheif applies it on reading, so the
daemon must hand back the picture as a phone shows it.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from bgremover.imaging import matting
from bgremover.intake.watcher import is_image_name
from tests.support.heic import heic_bytes
from tests.support.images import shape_on_texture, srgb_icc_profile


def test_heic_heif_and_canon_hif_names_are_images():
    assert is_image_name("IMG_0001.HEIC") and is_image_name("shot.heif") and is_image_name("IMG_0001.HIF")


def test_a_canon_hif_file_decodes_like_heic(tmp_path):
    image, _ = shape_on_texture((160, 120))
    path = tmp_path / "IMG_0001.HIF"
    path.write_bytes(heic_bytes(image, orientation=6))

    assert matting.decode(path).image.size == (120, 160)


def test_a_heic_photo_decodes_upright_with_its_profile(tmp_path):
    image, _ = shape_on_texture((160, 120))
    path = tmp_path / "phone.heic"
    path.write_bytes(heic_bytes(image, orientation=6, icc=srgb_icc_profile()))

    decoded = matting.decode(path)

    assert decoded.image.size == (120, 160)  # orientation 6: a quarter turn clockwise
    assert decoded.icc == srgb_icc_profile()
    # The same pixels a viewer shows: the original turned clockwise (lossy, so close, not equal).
    expected = np.asarray(image.transpose(Image.Transpose.ROTATE_270), dtype=float)
    assert np.abs(np.asarray(decoded.image.convert("RGB"), dtype=float) - expected).mean() < 6


def test_a_truncated_heic_fails_alone_with_a_sentence(tmp_path):
    path = tmp_path / "cut.heic"
    path.write_bytes(heic_bytes(shape_on_texture((160, 120))[0])[:300])
    with pytest.raises(matting.BadInput) as refused:
        matting.decode(path)
    assert str(refused.value) in ("the image is truncated or corrupt", "the file is not an image Pillow can read")
