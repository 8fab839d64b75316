"""Files that do not decode whole fail with one sentence: a damaged file is called damaged, and a valid
variant Pillow cannot decode is named as such, so the user knows to convert it rather than look for damage.

The files are built in tests/support/odd_images.py.
"""

from __future__ import annotations

import pytest
from PIL import ImageFile

from bgremover.imaging import matting
from tests.support.images import encoded, shape_on_texture, write_jpeg_with_exif_orientation
from tests.support.odd_images import (
    bmp_with_2_bit_palette,
    bmp_with_4444_bitfields,
    png_with_cut_data_stream,
    tiff_with_webp_compression,
)


def test_a_png_whose_data_stream_is_cut_is_bad_input_not_half_a_picture():
    with pytest.raises(matting.BadInput, match="^the image is truncated or corrupt$"):
        matting.decode_bytes(png_with_cut_data_stream())
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_a_cut_png_is_bad_input_in_the_reduce_path_too():
    with pytest.raises(matting.BadInput, match="^the image is truncated or corrupt$"):
        matting.decode_bytes(png_with_cut_data_stream(), max_megapixels=0.01)


@pytest.mark.parametrize(
    "data, sentence",
    [
        (tiff_with_webp_compression(), "the image uses a variant this build cannot decode: TIFF compression (WebP)"),
        (bmp_with_4444_bitfields(), "the image uses a variant this build cannot decode: BMP bitfields layout"),
        (bmp_with_2_bit_palette(), "the image uses a variant this build cannot decode: BMP pixel depth (2)"),
    ],
    ids=["webp-tiff", "bmp-bitfields-4444", "bmp-2-bit-palette"],
)
def test_a_valid_variant_pillow_cannot_decode_is_named_not_called_corrupt(data, sentence):
    with pytest.raises(matting.BadInput) as refused:
        matting.decode_bytes(data)
    assert str(refused.value) == sentence


def test_a_broken_exif_block_still_costs_nothing(tmp_path):
    path = write_jpeg_with_exif_orientation(tmp_path / "in.jpg", shape_on_texture((40, 30))[0], 6)
    data = path.read_bytes().replace(b"Exif\x00\x00MM", b"Exif\x00\x00XX").replace(b"Exif\x00\x00II", b"Exif\x00\x00XX")
    decoded = matting.decode_bytes(data)
    assert decoded.image.size == (40, 30)  # the orientation could not be read, so none is applied
    assert encoded(decoded.image, "PNG")
