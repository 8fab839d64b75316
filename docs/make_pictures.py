"""Draw the pictures of docs/outputs.md and docs/models.md from photos the project ships.

    .venv/bin/python docs/make_pictures.py [--models-dir DIR]      (or: make pictures)

Every picture is made by the real pipeline (bgremover.imaging.matting with the bundled
model), one per option, from daemon/bgremover/bench/photos/coffee.jpg (CC0, see
daemon/bgremover/bench/photos/LICENSE.md); the edges pictures zoom into chelsea.jpg (CC0), whose
fur shows what each mode does. The decontamination picture cuts the drawn fur ball over a
green wall that `bgremover bench --edges` measures (daemon/bgremover/bench/composites.py). Transparent pixels are drawn on a grey
checkerboard so that they can be told from white.

The recipes pictures render each shipped preset (bgremover/recipes/presets.toml) from the
three shipped photos as u2netp cuts them, one picture a preset, each file scaled down to be
shown with its compliance under it; recipe-shadows shows the shadows and the bottom anchor.

The models picture cuts astronaut.jpg (public domain) and chelsea.jpg with
u2netp and with isnet-small, which bgremover does not ship: it is drawn only
when the models folder given holds isnet-small (`bgremover models fetch
isnet-small` puts it there).
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemon"))

from bgremover import recipes  # noqa: E402 - likewise
from bgremover.bench import composites  # noqa: E402 - likewise
from bgremover.imaging import matting  # noqa: E402 - after the path is set, so a source checkout needs no install

PHOTOS = REPO / "daemon" / "bgremover" / "bench" / "photos"
TARGET = REPO / "docs" / "outputs"
THUMB_HEIGHT = 180
EDGE_BOX = (270, 10, 390, 100)  # a crop of chelsea.jpg: the cat's right ear and cheek against the background
EDGE_ZOOM = 2
CHECKER = 10
DECONTAMINATION_SIZE = (400, 300)
DECONTAMINATION_BOX = (112, 52, 192, 112)  # the fur ball's upper left rim, hair against the green wall
DECONTAMINATION_ZOOM = 4
LABEL_HEIGHT = 18

OPTIONS = {
    "original": None,
    "cutout": {},
    "background-white": {"background": "#ffffff"},
    "crop-subject": {"crop": "subject"},
    "crop-square": {"crop": "square", "background": "#ffffff", "size": 400},
    "mask": {"output": "mask"},
}


MODELS_PHOTOS = ("astronaut.jpg", "chelsea.jpg")
COMPARED = "isnet-small"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models-dir",
        type=Path,
        default=REPO / "data" / "models",
        help=f"the models folder holding {COMPARED} (default: ./data/models, what `make run` uses)",
    )
    args = parser.parse_args()
    TARGET.mkdir(parents=True, exist_ok=True)
    draw_outputs()
    draw_recipes()
    draw_models(args.models_dir)


def draw_outputs() -> None:
    spec = matting.load_model_spec("u2netp")
    session = matting.create_session(spec, threads=1)
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name, change in OPTIONS.items():
            picture = (
                Image.open(PHOTOS / "coffee.jpg")
                if change is None
                else run(PHOTOS / "coffee.jpg", work, session, spec, change)
            )
            save(thumbnail(picture), name)
        save(
            side_by_side(
                [
                    thumbnail(run(PHOTOS / "coffee.jpg", work, session, spec, {})),
                    thumbnail(run(PHOTOS / "coffee.jpg", work, session, spec, {"output": "mask"})),
                ]
            ),
            "both",
        )
        tiles = []
        for mode in ("raw", "clean", "refine"):
            cut = run(PHOTOS / "chelsea.jpg", work, session, spec, {"edges": mode})
            mask = run(PHOTOS / "chelsea.jpg", work, session, spec, {"edges": mode, "output": "mask"})
            tiles.append(labelled(stacked([zoomed(cut), zoomed(mask)]), f"edges = {mode}"))
        save(side_by_side(tiles), "edges")
        draw_decontamination(work, session, spec)


def draw_decontamination(work: Path, session, spec) -> None:
    """The drawn fur ball over a green wall (bench/composites.py), cut out and laid over white, without and with."""
    alpha, colour = composites.subject("fur ball", DECONTAMINATION_SIZE)
    source = work / "fur-over-green.png"
    Image.fromarray(
        composites.composite(alpha, colour, composites.background("green wall", DECONTAMINATION_SIZE))
    ).save(source)
    tiles = []
    for value in (False, True):
        cut = run(source, work, session, spec, {"decontaminate": value, "background": "#ffffff"}).crop(
            DECONTAMINATION_BOX
        )
        zoom = cut.resize(
            (cut.width * DECONTAMINATION_ZOOM, cut.height * DECONTAMINATION_ZOOM), Image.Resampling.NEAREST
        )
        tiles.append(labelled(zoom, f"decontaminate = {'true' if value else 'false'}, over white"))
    save(side_by_side(tiles), "decontaminate")


RECIPE_PHOTOS = ("coffee.jpg", "astronaut.jpg", "chelsea.jpg")
RECIPE_TILE_HEIGHT = 200
SHADOWED = {
    "contact shadow": {"shadow": "contact", "shadow_opacity": 0.45},
    "drop shadow": {"shadow": "drop", "shadow_offset": (3.0, 3.0), "shadow_blur": 2.5, "shadow_opacity": 0.4},
    "align = bottom": {"align": "bottom", "fill": 70},
    "background = blur": {"background": "blur", "fill": 70},
}


def draw_recipes() -> None:
    """One picture a shipped preset: its file from each photo, scaled down, with what the report says under it."""
    spec = matting.load_model_spec("u2netp")
    session = matting.create_session(spec, threads=1)
    cut = {photo: cutout_arrays(PHOTOS / photo, session, spec) for photo in RECIPE_PHOTOS}
    for recipe in recipes.load_recipes(recipes.preset_names()):
        tiles = []
        for photo, (rgb, alpha, icc) in cut.items():
            rendered = recipes.render(rgb, alpha, recipe, icc_profile=icc, stem=Path(photo).stem)
            tiles.append(labelled_below(framed_tile(rendered.data), verdict(rendered.report)))
        save(side_by_side(tiles, gap=12), f"recipe-{recipe.name}")
    (base,) = recipes.load_recipes(["shopify-square"])
    rgb, alpha, icc = cut["coffee.jpg"]
    tiles = []
    for label, change in SHADOWED.items():
        recipe = base.model_copy(update={"name": "shadowed", **change})
        rendered = recipes.render(rgb, alpha, recipe, icc_profile=icc, stem="coffee")
        tiles.append(labelled_below(framed_tile(rendered.data), label))
    save(side_by_side(tiles, gap=12), "recipe-shadows")


def cutout_arrays(source: Path, session, spec):
    """The photo as decoded (RGB), the alpha u2netp gives it, and its colour profile: what a job renders from."""
    decoded = matting.decode(source)
    rgba = matting.matte(decoded.image, session, spec, matting.Options(threads=1))
    pixels = np.asarray(rgba.convert("RGBA"))
    return np.ascontiguousarray(pixels[..., :3]), np.ascontiguousarray(pixels[..., 3]), decoded.icc


def framed_tile(data: bytes) -> Image.Image:
    """A rendered file scaled to the tile height, with a thin grey frame so that white shows against the page."""
    with Image.open(io.BytesIO(data)) as image:
        shown = on_checkerboard(image.convert("RGBA") if image.mode in ("RGBA", "LA", "P") else image)
    width = round(shown.width * RECIPE_TILE_HEIGHT / shown.height)
    tile = shown.resize((width, RECIPE_TILE_HEIGHT), Image.Resampling.LANCZOS)
    ImageDraw.Draw(tile).rectangle((0, 0, tile.width - 1, tile.height - 1), outline=(160, 160, 160))
    return tile


def verdict(report: dict) -> str:
    size = f"{report['canvas'][0]}x{report['canvas'][1]}, {report['bytes'] // 1000} KB"
    if report["compliant"]:
        return f"{size}: compliant"
    reason = report["reason"] or ""
    return f"{size}: not compliant ({'cut by the frame' if 'is cut by' in reason else reason})"


def labelled_below(image: Image.Image, text: str) -> Image.Image:
    width = max(image.width, round(ImageDraw.Draw(image).textlength(text)) + 4)
    canvas = Image.new("RGB", (width, image.height + LABEL_HEIGHT), (255, 255, 255))
    canvas.paste(image, (0, 0))
    ImageDraw.Draw(canvas).text((2, image.height + 3), text, fill=(0, 0, 0))
    return canvas


def draw_models(folder: Path) -> None:
    """Each photo as u2netp and as isnet-small cut it: the cutout, and the mask under it."""
    try:
        specs = [matting.find_model_spec(name, folder) for name in ("u2netp", COMPARED)]
    except matting.ModelError as exc:
        print(f"models picture not drawn: {exc}")
        return
    sessions = [matting.create_session(spec, threads=1) for spec in specs]
    tiles = []
    with tempfile.TemporaryDirectory() as work:
        for photo in MODELS_PHOTOS:
            for spec, session in zip(specs, sessions):
                cut = run(PHOTOS / photo, Path(work), session, spec, {})
                mask = run(PHOTOS / photo, Path(work), session, spec, {"output": "mask"})
                tiles.append(labelled(stacked([thumbnail(cut), thumbnail(mask)]), f"model = {spec.name}"))
    save(side_by_side(tiles), "models")


def run(source: Path, work: Path, session, spec, change: dict) -> Image.Image:
    """The real pipeline's output for `source` with the default options changed as asked."""
    options = dataclasses.replace(matting.Options(threads=1), **change)
    target = work / "out.png"
    matting.remove_background(source, target, session, spec, options)
    with Image.open(target) as image:
        return image.copy()


def on_checkerboard(image: Image.Image) -> Image.Image:
    if image.mode != "RGBA":
        return image.convert("RGB")
    board = Image.new("RGB", image.size, (204, 204, 204))
    draw = ImageDraw.Draw(board)
    for top in range(0, image.height, CHECKER):
        for left in range((top // CHECKER) % 2 * CHECKER, image.width, 2 * CHECKER):
            draw.rectangle((left, top, left + CHECKER - 1, top + CHECKER - 1), fill=(255, 255, 255))
    board.paste(image, (0, 0), image)
    return board


def thumbnail(image: Image.Image) -> Image.Image:
    shown = on_checkerboard(image)
    width = round(shown.width * THUMB_HEIGHT / shown.height)
    return shown.resize((width, THUMB_HEIGHT), Image.Resampling.LANCZOS)


def zoomed(image: Image.Image) -> Image.Image:
    crop = on_checkerboard(image.crop(EDGE_BOX))
    return crop.resize((crop.width * EDGE_ZOOM, crop.height * EDGE_ZOOM), Image.Resampling.NEAREST)


def side_by_side(images: list[Image.Image], gap: int = 6) -> Image.Image:
    canvas = Image.new(
        "RGB", (sum(i.width for i in images) + gap * (len(images) - 1), max(i.height for i in images)), (255, 255, 255)
    )
    left = 0
    for image in images:
        canvas.paste(image, (left, 0))
        left += image.width + gap
    return canvas


def stacked(images: list[Image.Image], gap: int = 6) -> Image.Image:
    canvas = Image.new(
        "RGB", (max(i.width for i in images), sum(i.height for i in images) + gap * (len(images) - 1)), (255, 255, 255)
    )
    top = 0
    for image in images:
        canvas.paste(image, (0, top))
        top += image.height + gap
    return canvas


def labelled(image: Image.Image, text: str) -> Image.Image:
    canvas = Image.new("RGB", (image.width, image.height + LABEL_HEIGHT), (255, 255, 255))
    ImageDraw.Draw(canvas).text((4, 3), text, fill=(0, 0, 0))
    canvas.paste(image, (0, LABEL_HEIGHT))
    return canvas


def save(image: Image.Image, name: str) -> None:
    """Photographic pictures as JPEG (a fifth of the bytes); the edges zoom as PNG, where every pixel counts."""
    lossless = name in ("edges", "decontaminate")
    path = TARGET / (f"{name}.png" if lossless else f"{name}.jpg")
    image.save(path, optimize=True, **({} if lossless else {"quality": 85}))
    print(f"wrote {path.relative_to(REPO)} ({path.stat().st_size // 1024} KB)")


if __name__ == "__main__":
    main()
