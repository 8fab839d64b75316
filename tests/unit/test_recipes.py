"""Recipes: each shipped preset on composites of known geometry and on the shipped photos, decoded and measured.

A composite is a flat grey photo with a subject of known alpha (a rectangle
of colour, alpha 255 inside and 0 outside), so the fill and the alignment have
exact answers. The shipped photos are cut by their reference alphas
(tests/reference/*.alpha.png), the bundled model's masks.
"""

from __future__ import annotations

import io
import json

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
    assert json.loads(json.dumps(rendered.report)) == rendered.report
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
    width, height = image.size
    left, top, right, bottom = report["subject_box"]
    snapped = set(report["snapped"])
    spans = {"left", "right"} <= snapped or {"top", "bottom"} <= snapped
    if not spans:  # a subject cut on both sides of an axis spans it: the snap, not the fill, sets its size
        assert abs(report["fill"] - recipe.fill) <= 1
        assert abs(100 * max((right - left) / width, (bottom - top) / height) - recipe.fill) <= 1
    flush = {"left": left == 0, "top": top == 0, "right": right == width, "bottom": bottom == height}
    assert all(flush[side] for side in snapped), (snapped, report["subject_box"])
    if not {"left", "right"} & snapped:
        assert abs((left + right) / 2 - width / 2) <= 1
    if not {"top", "bottom"} & snapped:
        assert abs((top + bottom) / 2 - height / 2) <= 1
    # coffee's cup is whole; the astronaut is cut by the left, right and bottom edges of the photo, the cat by
    # the left, top and bottom: every preset but the thumbnail wants the whole product
    if photo == "coffee":
        assert report["compliant"] is True and not snapped
    elif recipe.whole_subject:
        assert report["compliant"] is False and report["reason"].startswith("the subject is cut by the ")
    if photo == "astronaut":  # spans the width where its height still fits: not on Etsy's landscape canvas
        assert snapped == ({"left", "right", "bottom"} if width <= height else {"bottom"})
        assert report["compliant"] is not recipe.whole_subject
    assert report["note"] is None or report["note"].startswith("the subject was enlarged")


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


def changed_pixels(recipe: Recipe, rgb, alpha):
    """The pixels a shadow changes: the render with it against the same render without, and the latter."""
    with_shadow = np.asarray(decoded(render(rgb, alpha, recipe, stem="s"))).astype(int)
    plain = np.asarray(decoded(render(rgb, alpha, recipe.model_copy(update={"shadow": "none"}), stem="s")))
    return np.abs(with_shadow - plain.astype(int)).max(axis=2) > 0, plain


def opaque_subject(recipe: Recipe, rgb, alpha) -> np.ndarray:
    """Where the subject lands fully opaque on the canvas: the alpha of the same recipe, transparent and shadowless."""
    bare = recipe.model_copy(update={"background": "transparent", "shadow": "none", "format": "png"})
    return np.asarray(decoded(render(rgb, alpha, bare, stem="s")))[..., 3] == 255


@pytest.mark.parametrize("background", ["white", "transparent"])
def test_a_contact_shadow_lies_under_the_subjects_base_and_never_touches_opaque_subject(background):
    recipe = Recipe(
        name="t", canvas="1000x1000", fill=80, format="png", background=background, shadow="contact", shadow_opacity=0.5
    )
    rgb, alpha = composite(box=(300, 200, 500, 400))  # 200 × 200 → 800 × 800 at (100, 100)
    changed, plain = changed_pixels(recipe, rgb, alpha)
    assert changed.sum() > 1000
    rows, columns = np.nonzero(changed)
    assert rows.min() >= 900 - 800 * 0.125 / 2 - 2 and rows.max() <= 900 + 800 * 0.125 / 2 + 2
    assert columns.min() >= 100 - 2 and columns.max() <= 900 + 2
    assert opaque_subject(recipe, rgb, alpha).sum() > 600_000
    assert not np.any(changed & opaque_subject(recipe, rgb, alpha))


@pytest.mark.parametrize("background", ["#ffffff", "transparent"])
def test_a_drop_shadow_lies_behind_the_subject_moved_by_its_offset_and_never_changes_opaque_subject(background):
    recipe = Recipe(
        name="t",
        canvas="1000x1000",
        fill=80,
        format="png",
        background=background,
        shadow="drop",
        shadow_offset=(3, 4),
        shadow_blur=1,
    )
    rgb, alpha = composite(box=(300, 200, 500, 400))
    changed, plain = changed_pixels(recipe, rgb, alpha)
    rows, columns = np.nonzero(changed)
    blur = 3 * 8 + 2  # three blur radii (1 % of 800 px) and rounding
    assert columns.min() >= 100 + 24 - blur and columns.max() < 900 + 24 + blur
    assert rows.min() >= 100 + 32 - blur and rows.max() < 900 + 32 + blur
    assert changed[905:915, 200:900].all() and changed[200:900, 905:915].all()  # below and right of the subject
    assert not np.any(changed & opaque_subject(recipe, rgb, alpha))


def test_presets_that_forbid_shadows_have_none():
    for recipe in load_recipes(PRESETS):
        if recipe.shadows_forbidden:
            assert recipe.shadow == "none"
    (ebay,) = load_recipes(["ebay"])
    assert ebay.shadows_forbidden
    rgb, alpha = composite()
    report = render(rgb, alpha, ebay, stem="e").report
    assert report["shadow"] == "none" and report["background_pure"] is True


@pytest.mark.parametrize(
    ("fields", "sentence"),
    [
        ('format = "webp"\nbackground = "white"\npure_background = true', "lossy WebP cannot keep every background"),
        ('format = "webp"\ndpi = 300', "a WebP file has no resolution field"),
        ('canvas = "4:5"', 'canvas "4:5" is an aspect ratio: set long_side too'),
        ('canvas = "2000x2000"\nfill = 85\nmargins = [5, 5, 5, 5]', "set fill or margins, not both"),
        ('canvas = "round"', 'bad canvas: must be "W×H"'),
        ('canvas = "90000x100"', "bad canvas: each side must be 1 to 20000 px"),
        ('align = "middle"', "bad align: must be one of center, top, bottom"),
        ('background = "blurry"', 'bad background: must be "transparent", "blur" or a colour'),
        ('file_name = "../{stem}.{ext}"', "must stay inside the session's folder"),
        ('base = "nothing"', 'has base "nothing", which is not a recipe it can start from'),
        ('base = "zalando"\nformat = "png"', "the channel takes only jpeg, so format cannot be png"),
    ],
)
def test_each_bad_recipe_is_refused_in_one_sentence(tmp_path, fields, sentence):
    user = tmp_path / "recipes.toml"
    user.write_text(f"[mine]\n{fields}\n")
    with pytest.raises(RecipeError, match=r'^recipe "mine"') as caught:
        load_recipes(["mine"], user)
    assert sentence in str(caught.value) and "\n" not in str(caught.value)


def test_a_recipes_file_that_is_not_toml_is_refused_in_one_sentence(tmp_path):
    user = tmp_path / "recipes.toml"
    user.write_text("[mine\n")
    with pytest.raises(RecipeError, match="is not valid TOML"):
        load_recipes(["mine"], user)
    with pytest.raises(RecipeError, match="cannot be read"):
        load_recipes(["mine"], tmp_path / "missing.toml")


def test_a_blurred_background_is_the_photo_out_of_focus_behind_the_subject():
    recipe = Recipe(name="t", canvas="600x600", fill=60, format="png", background="blur")
    rgb, alpha = composite(box=(250, 150, 550, 450))
    rgb[:, :400][alpha[:, :400] == 0] = (20, 120, 220)  # a blue left half and a grey right half behind the subject
    pixels = np.asarray(decoded(render(rgb, alpha, recipe, stem="b"))).astype(int)
    assert pixels[300, 10, 2] > 150 and abs(pixels[300, 590] - 120).max() < 20  # blue left, grey right
    assert tuple(pixels[300, 300]) == SUBJECT_COLOUR  # the subject itself, untouched


# ---------------------------------------------------------------- the Python API: remove(img, recipe=...)


@pytest.fixture(scope="module")
def session():
    from bgremover import Session

    return Session("u2netp", threads=1)


def test_remove_with_a_preset_gives_the_channels_file(session):
    from bgremover import remove

    data = remove((PHOTOS / "coffee.jpg").read_bytes(), recipe="amazon", session=session)
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("JPEG", (2000, 2000))
    assert_colour_space(image, load_recipes(["amazon"])[0])


def test_remove_with_several_recipes_gives_each_file_with_its_report(session, tmp_path):
    from bgremover import remove

    user = tmp_path / "recipes.toml"
    user.write_text('[shoes]\nbase = "ebay"\nalign = "bottom"\n')
    shoes = Recipe(name="square-png", canvas="300x300", fill=90, format="png")
    files = remove(
        Image.open(PHOTOS / "coffee.jpg"), recipe=["thumbnail", "shoes", shoes], recipes_file=user, session=session
    )
    assert [one.name for one in files] == ["image_thumbnail.webp", "image_shoes.jpg", "image_square-png.png"]
    assert [decoded(one).size for one in files] == [(400, 400), (1600, 1600), (300, 300)]
    assert all(one.report["compliant"] for one in files), [one.report["reason"] for one in files]


def test_remove_with_a_recipe_refuses_framing_of_its_own_and_unknown_names(session):
    from bgremover import remove

    picture = Image.open(PHOTOS / "coffee.jpg")
    with pytest.raises(ValueError, match="a recipe sets the format, background and framing itself: leave background"):
        remove(picture, recipe="amazon", background="white", session=session)
    with pytest.raises(RecipeError, match='there is no recipe "amazin"'):
        remove(picture, recipe="amazin", session=session)
    with pytest.raises(ValueError, match="recipes_file names where recipes come from: pass recipe too"):
        remove(picture, recipes_file="mine.toml", session=session)


def test_render_many_on_threads_gives_each_recipes_file_in_order_and_a_failure_in_its_place():
    from bgremover.recipes import render_many

    rgb, alpha = composite()
    recipes = load_recipes(["ebay", "thumbnail", "amazon"])
    one_by_one = [render(rgb, alpha, recipe, stem="x").data for recipe in recipes]
    on_threads = render_many(rgb, alpha, recipes, stem="x", threads=3)
    assert [rendered.data for rendered in on_threads] == one_by_one
    broken = render_many(rgb, alpha[:5], recipes[:2], stem="x", threads=2)
    assert all(isinstance(result, RecipeError) for result in broken)


def test_the_recipes_in_the_outputs_page_load_as_written(tmp_path):
    from tests.support import docs

    (example,) = [block for block in docs.code_blocks(docs.section("Your own recipes"), "toml")]
    user = tmp_path / "recipes.toml"
    user.write_text(example.text)
    shoes, catalog = load_recipes(["shoes", "catalog-png"], user)
    assert (shoes.align, shoes.background, catalog.canvas, catalog.shadow) == (
        "bottom",
        "#ffffff",
        "subject",
        "contact",
    )
    rgb, alpha = composite()
    assert render(rgb, alpha, catalog, stem="a", session="s", index=2).name == "s/002-a.png"


def test_a_recipe_made_in_python_is_checked_by_the_same_rules():
    with pytest.raises(RecipeError, match=r'^recipe "mine" has a bad quality: .*less than or equal to 100$'):
        Recipe(name="mine", quality=120)
    with pytest.raises(RecipeError, match=r'^recipe "mine": set fill or margins, not both$'):
        Recipe(name="mine", canvas="100x100", fill=80, margins=(1, 1, 1, 1))


def test_a_subject_cut_on_both_sides_spans_the_canvas_from_edge_to_edge_where_it_fits():
    recipe = Recipe(name="t", canvas="1000x1000", fill=80, background="white", format="png")
    rgb, alpha = composite(box=(0, 200, 800, 500))  # cut by the left and right edges: 800 × 300
    rendered = render(rgb, alpha, recipe, stem="wide")
    left, top, right, bottom = canvas_box(decoded(rendered))
    assert (left, right) == (0, 1000) and abs(bottom - top - 375) <= 1 and abs((top + bottom) / 2 - 500) <= 1
    assert rendered.report["snapped"] == ["left", "right"] and rendered.report["compliant"] is True
    low = Recipe(name="t", canvas="1000x300", fill=80, background="white", format="png")
    report = render(rgb, alpha, low, stem="wide").report  # 1000 wide would be 375 tall: more than the canvas
    assert report["snapped"] == [] and report["compliant"] is False
    assert (
        report["reason"]
        == "the subject is cut by the left and right edges of the photo, so 80 % fill cannot be centred"
    )
    narrow = Recipe(name="t", canvas="400x1000", fill=80, background="white", format="png")
    report = render(rgb, alpha, narrow, stem="wide").report
    assert report["snapped"] == ["left", "right"]


def test_a_users_table_named_as_a_preset_replaces_it(tmp_path):
    user = tmp_path / "recipes.toml"
    user.write_text('[thumbnail]\nformat = "png"\ncanvas = "200x200"\nfill = 90\nbackground = "white"\n')
    (mine,) = load_recipes(["thumbnail"], user)
    (shipped,) = load_recipes(["thumbnail"])
    assert (mine.format, mine.canvas) == ("png", "200x200") and (shipped.format, shipped.canvas) == ("webp", "400x400")
