"""Images above max_megapixels: reduced to fit with a note saying so (large_images = "reduce", the default), or
refused with one sentence (large_images = "refuse").

The limit is set far below the test images' size, so small images exercise it
fast: in matting.decode, in the job process, and in a real daemon with the real model.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from bgremover.imaging import matting
from tests.support.images import shape_on_texture, write_jpeg_with_exif_orientation
from tests.support.large_images import assert_fits, assert_note


def write_image(path: Path, size: tuple[int, int], fmt: str) -> Path:
    shape_on_texture(size)[0].save(path, fmt)
    return path


# ---------------------------------------------------------------- decode


def test_a_jpeg_above_the_limit_is_decoded_at_reduced_scale_then_fitted(tmp_path, monkeypatch):
    path = write_image(tmp_path / "big.jpg", (1200, 800), "JPEG")
    fitted = []  # the sizes handed to the final resize
    real_fit = matting._fit
    monkeypatch.setattr(matting, "_fit", lambda image, limit: fitted.append(image.size) or real_fit(image, limit))

    image, _, note = matting.decode(path, 0.1)

    assert_fits(image.size, (1200, 800), 0.1)
    assert_note(note, (1200, 800), image.size, 0.1)
    # JPEG's own 1/2-scale decoding (draft) did most of the work: the full 1200×800 never existed in memory.
    assert fitted == [(600, 400)]


def test_a_png_above_the_limit_is_reduced_to_fit(tmp_path):
    path = write_image(tmp_path / "big.png", (1200, 800), "PNG")

    image, _, note = matting.decode(path, 0.1)

    assert_fits(image.size, (1200, 800), 0.1)
    assert_note(note, (1200, 800), image.size, 0.1)


def test_the_note_names_the_sizes_of_a_rotated_jpeg_as_it_is_seen(tmp_path):
    stored, _ = shape_on_texture((1200, 800))
    path = write_jpeg_with_exif_orientation(tmp_path / "portrait.jpg", stored, 6)  # shown as 800×1200

    image, _, note = matting.decode(path, 0.1)

    assert_fits(image.size, (800, 1200), 0.1)
    assert "800×1200" in note, f"the note must name the size as shown, not as stored: {note!r}"


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_refuse_raises_bad_input_naming_the_megapixels_and_the_setting(tmp_path, fmt):
    path = write_image(tmp_path / f"big.{fmt.lower()}", (1000, 600), fmt)

    with pytest.raises(matting.BadInput) as refused:
        matting.decode(path, 0.1, "refuse")

    sentence = str(refused.value)
    assert "0.6 megapixels" in sentence and "1000×600" in sentence, sentence
    assert "max_megapixels = 0.1" in sentence and "large_images" in sentence, sentence
    assert "\n" not in sentence


@pytest.mark.parametrize("large_images", ["reduce", "refuse"])
@pytest.mark.parametrize("size", [(500, 200), (300, 200)], ids=["at-the-limit", "below-the-limit"])
@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_an_image_within_the_limit_is_untouched_and_has_no_note(tmp_path, fmt, size, large_images):
    path = write_image(tmp_path / f"small.{fmt.lower()}", size, fmt)

    image, _, note = matting.decode(path, 0.1, large_images)

    assert (image.size, note) == (size, None)
    if fmt == "PNG":  # lossless: the very same pixels
        assert image.tobytes() == shape_on_texture(size)[0].tobytes()


# ---------------------------------------------------------------- the job process
