"""What framing tests read off a cutout.

Shared by tests/unit/test_framing.py and tests/model/test_option_trips.py.
"""

from __future__ import annotations

from PIL import Image

from bgremover.imaging import matting


def opaque_box(image: Image.Image) -> tuple[int, int, int, int]:
    return matting.subject_box(image)
