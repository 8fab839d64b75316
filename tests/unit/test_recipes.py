"""Recipes: each shipped preset on composites of known geometry and on the shipped photos, decoded and measured.

A composite is a flat grey photo with a subject of known alpha (a rectangle
of colour, alpha 255 inside and 0 outside), so the fill and the alignment have
exact answers. The shipped photos are cut by their reference alphas
(tests/reference/*.alpha.png), the bundled model's masks.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageCms

from bgremover.recipes import Recipe, RecipeError, compliance, encoding, geometry, load_recipes, preset_names, render
from tests.conftest import REPO
from tests.support.profiles import adobe_rgb

PHOTOS = REPO / "daemon" / "bgremover" / "bench" / "photos"
REFERENCE = REPO / "tests" / "reference"
PRESETS = preset_names()
SHIPPED = ("amazon", "shopify-square", "shopify-4x5", "zalando", "ebay", "etsy", "thumbnail")
SUBJECT_COLOUR = (180, 40, 30)


def composite(size=(800, 600), box=(250, 150, 550, 450), colour=SUBJECT_COLOUR):
    """A grey photo with a rectangle of `colour` at `box`, and its exact alpha."""
    width, height = size
    rgb = np.full((height, width, 3), 120, np.uint8)
    alpha = np.zeros((height, width), np.uint8)
    left, top, right, bottom = box
    rgb[top:bottom, left:right] = colour
    alpha[top:bottom, left:right] = 255
    return rgb, alpha


def decoded(rendered) -> Image.Image:
    image = Image.open(io.BytesIO(rendered.data))
    image.load()
    return image


def canvas_box(image: Image.Image, background=(255, 255, 255)) -> tuple[int, int, int, int]:
    """The box of the pixels that differ clearly from the background, in the decoded file."""
    pixels = np.asarray(image.convert("RGB")).astype(int)
    differs = np.abs(pixels - np.array(background)).max(axis=2) > 110  # half the subject's contrast: its edge
    rows, columns = np.flatnonzero(differs.any(axis=1)), np.flatnonzero(differs.any(axis=0))
    return int(columns[0]), int(rows[0]), int(columns[-1]) + 1, int(rows[-1]) + 1


def canvas_of(recipe: Recipe) -> tuple[int, int]:
    return geometry.canvas_size(recipe)


def test_the_shipped_presets_are_all_there_each_with_its_source():
    assert PRESETS == list(SHIPPED)
    for recipe in load_recipes(PRESETS):
        assert len(recipe.source) > 40, recipe.name


def test_an_unknown_name_is_refused_naming_the_known_ones():
    with pytest.raises(RecipeError, match=r'there is no recipe "amazin"; the known ones are amazon, ebay, etsy'):
        load_recipes(["amazin"])


def test_a_bad_field_is_refused_naming_the_recipe_and_the_field(tmp_path):
    user = tmp_path / "recipes.toml"
    user.write_text('[catalog]\nformat = "jpeg"\nbackground = "white"\ncanvas = "1000x1000"\nfill = 120\n')
    with pytest.raises(RecipeError, match=r'recipe "catalog" has a bad fill: .*less than or equal to 100'):
        load_recipes(["catalog"], user)
    user.write_text('[catalog]\ncolor = "srgb"\n')
    with pytest.raises(RecipeError, match=r'recipe "catalog" has an unknown field "color"'):
        load_recipes(["catalog"], user)
    user.write_text('[catalog]\nformat = "jpeg"\n')
    with pytest.raises(RecipeError, match=r'recipe "catalog": format "jpeg" cannot keep transparency'):
        load_recipes(["catalog"], user)


def test_a_shadow_on_a_channel_that_forbids_shadows_is_refused(tmp_path):
    user = tmp_path / "recipes.toml"
    user.write_text('[ebay-shadow]\nbase = "ebay"\nshadow = "drop"\n')
    with pytest.raises(RecipeError, match="the channel forbids shadows, so shadow must be none, not drop"):
        load_recipes(["ebay-shadow"], user)


def test_a_user_recipe_starts_from_a_preset_and_changes_a_few_fields(tmp_path):
    user = tmp_path / "recipes.toml"
    user.write_text('[shoes]\nbase = "amazon"\nalign = "bottom"\nfile_name = "{recipe}/{stem}.{ext}"\n')
    shoes, amazon = load_recipes(["shoes", "amazon"], user)
    assert (shoes.align, shoes.canvas, shoes.fill, shoes.background) == ("bottom", "2000x2000", 85, "#ffffff")
    assert amazon.align == "center"
    rgb, alpha = composite()
    assert render(rgb, alpha, shoes, stem="red").name == "shoes/red.jpg"


def test_a_file_name_template_names_only_known_fields(tmp_path):
    user = tmp_path / "recipes.toml"
    user.write_text('[a]\nfile_name = "{sku}.{ext}"\n')
    with pytest.raises(RecipeError, match=r"bad file_name: names \{sku\}"):
        load_recipes(["a"], user)
    user.write_text('[a]\nfile_name = "{session}-{index:03d}-{recipe}.{ext}"\n')
    (recipe,) = load_recipes(["a"], user)
    rgb, alpha = composite()
    assert render(rgb, alpha, recipe, stem="x", session="spring", index=7).name == "spring-007-a.png"


@pytest.mark.parametrize("name", SHIPPED)
def test_each_preset_on_a_composite_has_its_exact_canvas_fill_centre_background_colour_and_bytes(name):
    (recipe,) = load_recipes([name])
    rgb, alpha = composite(box=(250, 150, 550, 390))  # 300 × 240: binds on the width of a square canvas
    rendered = render(rgb, alpha, recipe, stem="box")
    image = decoded(rendered)
    width, height = canvas_of(recipe)
    assert image.size == (width, height) and rendered.report["canvas"] == [width, height]
    left, top, right, bottom = canvas_box(image)
    fill = 100 * max((right - left) / width, (bottom - top) / height)
    assert abs(fill - recipe.fill) <= 1 and abs(rendered.report["fill"] - recipe.fill) <= 1
    assert abs((left + right) / 2 - width / 2) <= 1 and abs((top + bottom) / 2 - height / 2) <= 1
    assert rendered.report["compliant"] is True and rendered.report["reason"] is None
    assert_background_pure(image, recipe, rendered)
    assert_colour_space(image, recipe)
    assert_budget(rendered, recipe)
    assert image.format == {"jpeg": "JPEG", "webp": "WEBP", "png": "PNG"}[recipe.format]


def assert_background_pure(image: Image.Image, recipe: Recipe, rendered) -> None:
    """Every pixel outside the subject's alpha (widened to the JPEG blocks it touches) is exactly the background.

    The subject's alpha reaches past its half-opaque edge by the resampler's reach, two photo pixels.
    """
    if not recipe.pure_background:
        assert rendered.report["background_pure"] is None
        return
    assert rendered.report["background_pure"] is True
    pixels = np.asarray(image.convert("RGB"))
    reach = int(2 * rendered.report["scale"]) + 1
    left, top, right, bottom = (edge + sign * reach for edge, sign in zip(canvas_box(image), (-1, -1, 1, 1)))
    block = 8
    left, top = left // block * block, top // block * block
    right, bottom = -(-right // block) * block, -(-bottom // block) * block
    outside = np.ones(pixels.shape[:2], bool)
    outside[top:bottom, left:right] = False
    assert outside.sum() > 0.3 * outside.size
    assert np.all(pixels[outside] == 255)


def assert_colour_space(image: Image.Image, recipe: Recipe) -> None:
    icc = image.info.get("icc_profile")
    if recipe.colour == "srgb":
        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc)))
        assert description.startswith("sRGB")
    else:
        assert not icc


def assert_budget(rendered, recipe: Recipe) -> None:
    assert rendered.report["bytes"] == len(rendered.data)
    if recipe.byte_budget is not None:
        assert len(rendered.data) <= recipe.byte_budget


@pytest.mark.parametrize("photo", ["coffee", "chelsea", "astronaut"])
@pytest.mark.parametrize("name", SHIPPED)
def test_each_preset_on_each_shipped_photo_decodes_to_its_canvas_colour_and_budget(name, photo):
    (recipe,) = load_recipes([name])
    rgb = np.asarray(Image.open(PHOTOS / f"{photo}.jpg").convert("RGB"))
    alpha = np.asarray(Image.open(REFERENCE / f"{photo}.alpha.png").convert("L"))
    rendered = render(rgb, alpha, recipe, stem=photo)
    image = decoded(rendered)
    assert image.size == canvas_of(recipe)
    assert_colour_space(image, recipe)
    assert_budget(rendered, recipe)
    report = rendered.report
    if recipe.pure_background:
        assert report["background_pure"] is True
    # coffee's cup is whole; the cat and the astronaut are cut by the photo's frame
    if photo == "coffee":
        assert report["compliant"] is True and abs(report["fill"] - recipe.fill) <= 1
    else:
        assert report["compliant"] is False and report["reason"].startswith("the subject is cut by the ")


def test_a_subject_touching_the_photos_edge_at_85_is_reported_with_its_reason():
    (amazon,) = load_recipes(["amazon"])
    rgb, alpha = composite(box=(0, 150, 300, 450))
    report = render(rgb, alpha, amazon, stem="cut").report
    assert report["compliant"] is False
    assert report["reason"] == "the subject is cut by the left edge of the photo, so 85 % fill cannot be centred"
    assert report["snapped"] == ["left"]


def test_a_cut_side_is_snapped_flush_with_the_canvas_edge():
    recipe = Recipe(name="t", canvas="1000x1000", fill=80, background="white", format="png")
    rgb, alpha = composite(box=(200, 100, 500, 600))  # cut by the bottom edge of an 800 × 600 photo
    rendered = render(rgb, alpha, recipe, stem="cut")
    left, top, right, bottom = canvas_box(decoded(rendered))
    assert bottom == 1000 and abs(bottom - top - 800) <= 1 and abs((left + right) / 2 - 500) <= 1
    assert rendered.report["compliant"] is True  # the recipe does not ask for the whole subject
    assert render(rgb, alpha, recipe.model_copy(update={"whole_subject": True}), stem="cut").report["reason"] == (
        "the subject is cut by the bottom edge of the photo, so 80 % fill cannot be centred"
    )


@pytest.mark.parametrize(
    ("align", "expected"),
    [("bottom", (None, 1000 - 75)), ("top", (None, 75)), ("left", (75, None)), ("bottom-right", (925, 925))],
)
def test_an_anchored_edge_keeps_the_binding_sides_gap(align, expected):
    recipe = Recipe(name="t", canvas="1000x1000", fill=85, align=align, background="white", format="png")
    rgb, alpha = composite(box=(300, 200, 500, 400))  # a square subject: binds on both sides, gap 75 px
    left, top, right, bottom = canvas_box(decoded(render(rgb, alpha, recipe, stem="a")))
    assert (right - left, bottom - top) == (850, 850)
    x_expected, y_expected = expected
    if align in ("bottom", "top", "bottom-right"):
        y_measured = bottom if "bottom" in align else top
        assert abs(y_measured - y_expected) <= 1
    if align in ("left", "bottom-right"):
        x_measured = right if "right" in align else left
        assert abs(x_measured - x_expected) <= 1


def test_a_wide_subject_anchored_to_the_bottom_sits_as_far_from_it_as_from_the_sides():
    recipe = Recipe(name="shoe", canvas="1000x1000", fill=85, align="bottom", background="white", format="png")
    rgb, alpha = composite(box=(100, 250, 700, 400))  # 600 × 150: binds on the width, 75 px from each side
    left, top, right, bottom = canvas_box(decoded(render(rgb, alpha, recipe, stem="shoe")))
    assert abs(left - 75) <= 1 and abs(right - 925) <= 1 and abs(bottom - 925) <= 1


def test_margins_fit_the_subject_inside_the_canvas_less_its_margins():
    recipe = Recipe(name="t", canvas="4:5", long_side=1000, margins=(10, 5, 10, 5), background="white", format="png")
    assert canvas_of(recipe) == (800, 1000)
    rgb, alpha = composite(box=(250, 150, 550, 450))  # square: binds on the width, 720 px between the margins
    left, top, right, bottom = canvas_box(decoded(render(rgb, alpha, recipe, stem="m")))
    assert abs(left - 40) <= 1 and abs(right - 760) <= 1 and abs((top + bottom) / 2 - 500) <= 1


def test_a_subject_canvas_is_the_subject_plus_its_margins_at_long_side():
    recipe = Recipe(name="t", canvas="subject", margins=(10, 10, 10, 10), long_side=600, format="png")
    rgb, alpha = composite(box=(250, 150, 550, 390))  # 300 × 240, margins 30 px each side at scale 1
    rendered = render(rgb, alpha, recipe, stem="s")
    image = decoded(rendered)
    assert image.size == (600, 500)
    assert image.mode == "RGBA"
    solid = np.asarray(image)[..., 3] >= 128
    rows, columns = np.flatnonzero(solid.any(axis=1)), np.flatnonzero(solid.any(axis=0))
    assert abs(columns[0] - 50) <= 1 and abs(rows[0] - 50) <= 1 and abs(columns[-1] + 1 - 550) <= 1


def test_a_transparent_png_keeps_the_subjects_alpha_and_colour():
    recipe = Recipe(name="t", canvas="600x600", fill=50, format="png")
    rgb, alpha = composite(box=(250, 150, 550, 450))
    pixels = np.asarray(decoded(render(rgb, alpha, recipe, stem="t")))
    assert np.all(pixels[160:440, 160:440] == (*SUBJECT_COLOUR, 255))
    assert np.all(pixels[:140, :, 3] == 0) and np.all(pixels[:140, :, :3] == 0)


def test_an_adobe_rgb_photo_is_converted_to_srgb_and_tagged_as_the_recipe_says():
    profile = adobe_rgb()
    rgb, alpha = composite(box=(250, 150, 550, 450), colour=(50, 150, 50))
    expected = ImageCms.profileToProfile(
        Image.new("RGB", (1, 1), (50, 150, 50)),
        ImageCms.ImageCmsProfile(io.BytesIO(profile)),
        ImageCms.createProfile("sRGB"),
    ).getpixel((0, 0))
    assert expected != (50, 150, 50)
    for colour, tagged in (("srgb", "sRGB"), ("srgb-stripped", None), ("keep", "Adobe RGB")):
        recipe = Recipe(name="t", canvas="600x600", fill=50, format="png", background="white", colour=colour)
        rendered = render(rgb, alpha, recipe, icc_profile=profile, stem="green")
        image = decoded(rendered)
        centre = image.convert("RGB").getpixel((300, 300))
        assert centre == (expected if colour != "keep" else (50, 150, 50))
        assert image.getpixel((5, 5))[:3] == (255, 255, 255)
        icc = image.info.get("icc_profile")
        if tagged is None:
            assert not icc and rendered.report["profile"] is None
        else:
            assert ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).startswith(tagged)
            assert rendered.report["profile"].startswith(tagged)


def test_the_byte_budget_lowers_the_quality_until_the_file_fits_and_says_when_it_cannot():
    rgb = np.asarray(Image.open(PHOTOS / "coffee.jpg").convert("RGB"))
    alpha = np.asarray(Image.open(REFERENCE / "coffee.alpha.png").convert("L"))
    recipe = Recipe(name="t", canvas="1200x1200", fill=90, format="jpeg", background="white", quality=95)
    full = render(rgb, alpha, recipe, stem="c")
    budget = len(full.data) // 3
    fitted = render(rgb, alpha, recipe.model_copy(update={"byte_budget": budget}), stem="c")
    assert len(fitted.data) <= budget and fitted.report["quality"] < 95
    assert decoded(fitted).size == (1200, 1200)
    tight = render(rgb, alpha, recipe.model_copy(update={"byte_budget": 2000, "min_quality": 60}), stem="c")
    assert tight.report["compliant"] is False and tight.report["quality"] == 60
    assert tight.report["reason"].endswith("over its budget of 2,000 bytes")


def test_dpi_is_written_where_the_format_has_a_field_for_it():
    rgb, alpha = composite()
    for fmt in ("jpeg", "png"):
        recipe = Recipe(name="t", canvas="500x500", fill=80, format=fmt, background="white", dpi=300)
        rendered = render(rgb, alpha, recipe, stem="d")
        assert tuple(round(value) for value in decoded(rendered).info["dpi"]) == (300, 300)
        assert rendered.report["dpi"] == 300


def test_a_flat_white_jpeg_block_decodes_to_exactly_white_at_every_quality():
    for quality in range(1, 101):
        out = io.BytesIO()
        Image.new("RGB", (16, 16), (255, 255, 255)).save(
            out, "JPEG", qtables=encoding.white_exact_tables(quality), subsampling="4:4:4"
        )
        assert np.all(np.asarray(Image.open(out)) == 255), quality


def test_a_photo_without_a_subject_is_placed_whole_and_reported():
    rgb, _ = composite()
    report = render(rgb, np.zeros(rgb.shape[:2], np.uint8), load_recipes(["ebay"])[0], stem="empty").report
    assert report["compliant"] is False and report["reason"].startswith("no subject was found")


def test_bad_arrays_are_refused_in_one_sentence():
    rgb, alpha = composite()
    with pytest.raises(RecipeError, match="the alpha must be H×W of uint8 as the photo"):
        render(rgb, alpha[:10], load_recipes(["ebay"])[0], stem="x")


def test_the_measured_fill_is_the_binding_sides_share():
    alpha = np.zeros((100, 200), np.uint8)
    alpha[10:60, 50:130] = 255
    assert compliance.measured_fill(alpha) == 50.0
