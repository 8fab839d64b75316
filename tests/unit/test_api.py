"""The Python API: `from bgremover import remove, Session`, as rembg's remove and new_session.

Each kind of input comes back as the same kind; the cutout is the one
`bgremover remove` makes; options, bad input and the light `import bgremover`
hold. Everything runs the real bundled u2netp on small images.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

import bgremover
from bgremover import Session, remove
from bgremover.api import BadInput
from tests.support.images import encoded, iou, photo, shape_on_texture


@pytest.fixture(scope="module")
def session():
    return Session("u2netp")


@pytest.fixture(scope="module")
def picture():
    image, _truth = shape_on_texture((160, 120))
    return image


# ---------------------------------------------------------------- each kind comes back as itself


def test_bytes_give_png_bytes_of_the_same_size(session):
    result = remove(photo().read_bytes(), session=session)
    assert isinstance(result, bytes)
    decoded = Image.open(io.BytesIO(result))
    assert (decoded.format, decoded.mode, decoded.size) == ("PNG", "RGBA", Image.open(photo()).size)


def test_a_pil_image_gives_an_rgba_image_of_the_same_size_and_is_left_as_it_was(session, picture):
    before = np.array(picture)
    result = remove(picture, session=session)
    assert isinstance(result, Image.Image)
    assert (result.mode, result.size) == ("RGBA", picture.size)
    assert np.array_equal(np.array(picture), before) and picture.mode == "RGB"


@pytest.mark.parametrize("channels", [3, 4])
def test_a_numpy_array_gives_an_h_w_4_uint8_array(session, picture, channels):
    pixels = np.array(picture.convert("RGBA" if channels == 4 else "RGB"))
    result = remove(pixels, session=session)
    assert isinstance(result, np.ndarray)
    assert (result.shape, result.dtype) == ((120, 160, 4), np.uint8)
    assert np.array_equal(result[..., :3], pixels[..., :3])  # straight alpha: the colours are untouched


def test_the_three_kinds_give_the_same_cutout(session, picture):
    from_image = np.array(remove(picture, session=session))
    from_array = remove(np.array(picture), session=session)
    from_bytes = np.array(Image.open(io.BytesIO(remove(encoded(picture, "PNG"), session=session))))
    assert np.array_equal(from_image, from_array) and np.array_equal(from_image, from_bytes)


def test_the_cutout_finds_the_subject(session):
    image, truth = shape_on_texture((320, 240))
    alpha = remove(np.array(image), session=session)[..., 3]
    assert iou(alpha >= 128, truth) > 0.9


# ---------------------------------------------------------------- the same pipeline as the command


# ---------------------------------------------------------------- options


def test_mask_gives_the_cutouts_alpha_as_a_grey_image(session, picture):
    cutout = remove(picture, session=session)
    mask = remove(picture, session=session, output="mask")
    assert (mask.mode, mask.size) == ("L", picture.size)
    assert np.array_equal(np.array(mask), np.array(cutout)[..., 3])
    assert remove(np.array(picture), session=session, output="mask").shape == (120, 160)
    assert Image.open(io.BytesIO(remove(encoded(picture, "PNG"), session=session, output="mask"))).mode == "L"


def test_both_gives_the_cutout_and_the_mask_as_a_pair(session, picture):
    cutout, mask = remove(picture, session=session, output="both")
    assert (cutout.mode, mask.mode) == ("RGBA", "L")
    cutout_png, mask_png = remove(encoded(picture, "PNG"), session=session, output="both")
    assert Image.open(io.BytesIO(cutout_png)).mode == "RGBA" and Image.open(io.BytesIO(mask_png)).mode == "L"


def test_a_background_colour_fills_what_the_cutout_made_transparent(session, picture):
    alpha = np.array(remove(picture, session=session))[..., 3]
    filled = np.array(remove(picture, session=session, background="#00ff00"))
    assert filled.shape == (120, 160, 4) and (filled[..., 3] == 255).all()
    assert (filled[alpha == 0][:, :3] == [0, 255, 0]).all()
    jpeg = remove(encoded(picture, "PNG"), session=session, background="white", format="jpeg")
    assert Image.open(io.BytesIO(jpeg)).format == "JPEG"


def test_crop_and_edges_are_the_settings_options(session, picture):
    cropped = remove(picture, session=session, crop="square", size=64)
    assert cropped.size == (64, 64)
    clean = remove(picture, session=session, edges="clean")
    assert clean.size == picture.size


def test_a_session_holds_a_model_from_a_models_folder(folder, picture):
    redness = Session("redness", models_dir=folder)
    assert remove(picture, session=redness).size == picture.size
    with pytest.raises(ValueError, match=r"^model='u2netp' was asked for, but the session holds 'redness'"):
        remove(picture, session=redness, model="u2netp")


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "error", "says"),
    [
        (lambda s: remove(b"not an image", session=s), BadInput, r"^the file is not an image Pillow can read$"),
        (lambda s: remove(b"", session=s), BadInput, r"^the file is empty$"),
        (
            lambda s: remove("photo.jpg", session=s),
            TypeError,
            r"^remove takes the bytes of an image file, a PIL.Image or a numpy array, not str$",
        ),
        (
            lambda s: remove(np.zeros((4, 4, 3)), session=s),
            TypeError,
            r"^a numpy image must be H×W×3 \(RGB\) or H×W×4 \(RGBA\) of uint8, not shape \(4, 4, 3\) of float64$",
        ),
        (
            lambda s: remove(b"x", session=s, edges="soft"),
            ValueError,
            r"^bad option 'edges': Input should be 'raw', 'clean' or 'refine' \(got 'soft'\)$",
        ),
        (
            lambda s: remove(b"x", session=s, background="nope"),
            ValueError,
            r"^bad option 'background': .*\"transparent\"",
        ),
        (lambda s: remove(b"x", session=s, format="jpeg"), ValueError, r"cannot keep transparency"),
        (
            lambda s: remove(Image.new("RGB", (8, 8)), session=s, format="webp"),
            ValueError,
            r"^format applies only to bytes input",
        ),
        (lambda s: remove(b"x", session=s, colour="red"), TypeError, r"^remove\(\) got unknown option colour"),
    ],
)
def test_bad_input_is_one_clear_exception(session, call, error, says):
    with pytest.raises(error, match=says):
        call(session)


def test_an_unknown_model_names_the_known_ones(tmp_path):
    with pytest.raises(bgremover.api.ModelError, match=r"model 'u2net' is in neither .*\(known: u2netp\)$"):
        Session("u2net", models_dir=tmp_path)


# ---------------------------------------------------------------- import bgremover stays light


# ---------------------------------------------------------------- a session is reused, not changed
# What reusing it saves is measured by `bgremover bench` (its "api" section), not here.


def test_a_reused_session_gives_what_one_shot_calls_give(session):
    pictures = [encoded(shape_on_texture((160, 120), seed=seed)[0], "PNG") for seed in range(3)]

    from_shared = [remove(data, session=session) for data in pictures]
    from_fresh = [remove(data) for data in pictures]

    assert from_shared == from_fresh  # a session carries nothing from one image to the next
