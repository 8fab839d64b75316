"""HEIC files made by the tests, with an orientation and a profile.

Shared by tests/unit/test_heic.py and tests/model/test_heic.py.
"""

from __future__ import annotations

import io

import pillow_heif
from PIL import Image

pillow_heif.register_heif_opener()


def heic_bytes(image: Image.Image, orientation: int = 1, icc: bytes | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "HEIF", quality=95, exif=exif.tobytes(), **({"icc_profile": icc} if icc else {}))
    return buffer.getvalue()
