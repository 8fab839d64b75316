"""The project's own photo set: the bench's three photos, and subjects of known alpha drawn over backgrounds.

What `bgremover models verify` runs every inference path on, and what
`bgremover bench --edges` measures edges against. The subjects are drawn in
code, at four times their size and then box-averaged, so their partial alpha is
the true coverage of each pixel: a furry ball with strands of hair all round,
and a head and shoulders with loose hair on top and a defocused shoulder. The
backgrounds are the bench's three CC0 photos, a dark and a light flat colour,
and a green wall.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

# A folder of data beside the bench, not an import of it.
PHOTOS = Path(__file__).resolve().parent.parent / "bench" / "photos"
SIZE = (800, 600)
SUPERSAMPLE = 4
BACKGROUNDS = ("astronaut", "chelsea", "coffee", "flat dark", "flat light", "green wall")
SUBJECTS = ("fur ball", "portrait")
FLAT = {"flat dark": (38, 34, 40), "flat light": (214, 218, 222)}
GREEN = (40, 170, 60)


# ---------------------------------------------------------------- the truth


def subject(name: str, size: tuple[int, int] = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """A drawn subject: its alpha (H×W uint8, the exact coverage) and its colour F (H×W×3 uint8)."""
    if name not in SUBJECTS:
        raise ValueError(f"unknown subject {name!r} (known: {', '.join(SUBJECTS)})")
    width, height = size
    big = (width * SUPERSAMPLE, height * SUPERSAMPLE)
    rng = np.random.default_rng(SUBJECTS.index(name))
    cover = Image.new("L", big, 0)
    draw = ImageDraw.Draw(cover)
    if name == "fur ball":
        centre, radius = (big[0] / 2, big[1] * 0.52), big[1] * 0.3
        draw.ellipse([centre[0] - radius, centre[1] - radius, centre[0] + radius, centre[1] + radius], fill=255)
        _strands(draw, rng, centre, radius, 0.0, 2 * math.pi, 900, big[1] * 0.09)
        colour = _textured(size, rng, (150, 96, 52), (232, 196, 140))
    else:
        head = (big[0] / 2, big[1] * 0.42)
        radius = big[1] * 0.2
        draw.ellipse([head[0] - radius * 0.85, head[1] - radius, head[0] + radius * 0.85, head[1] + radius], fill=255)
        draw.rectangle([head[0] - radius * 0.4, head[1], head[0] + radius * 0.4, big[1] * 0.8], fill=255)  # the neck
        _strands(draw, rng, head, radius * 0.9, math.pi * 1.05, math.pi * 1.95, 700, big[1] * 0.08)
        shoulders = Image.new("L", big, 0)
        ImageDraw.Draw(shoulders).ellipse([big[0] * 0.15, big[1] * 0.7, big[0] * 0.85, big[1] * 1.4], fill=255)
        # A shoulder out of focus: its edge a soft ramp some pixels wide, as a shallow depth of field gives.
        shoulders = shoulders.filter(ImageFilter.GaussianBlur(3 * SUPERSAMPLE))
        cover = Image.fromarray(np.maximum(np.asarray(cover), np.asarray(shoulders)))
        colour = _textured(size, rng, (70, 44, 30), (196, 150, 110))
    alpha = np.asarray(cover.reduce(SUPERSAMPLE))
    return alpha, colour


def _strands(draw, rng, centre, radius, start, stop, count, length) -> None:
    """`count` thin curved hairs rooted on the circle around `centre`, between the angles start and stop."""
    for _ in range(count):
        angle = rng.uniform(start, stop)
        bend = rng.normal(0, 0.6)
        reach = length * rng.uniform(0.4, 1.0)
        x, y = centre[0] + radius * 0.95 * math.cos(angle), centre[1] + radius * 0.95 * math.sin(angle)
        points = [(x, y)]
        for step in range(1, 9):
            heading = angle + bend * step / 8
            x += reach / 8 * math.cos(heading)
            y += reach / 8 * math.sin(heading)
            points.append((x, y))
        draw.line(points, fill=255, width=int(rng.integers(1, 4)))  # 1 to 3 px at 4×: a quarter to 3/4 of a pixel


def _textured(size: tuple[int, int], rng, dark: tuple[int, ...], light: tuple[int, ...]) -> np.ndarray:
    """A smooth random mix of two colours with some fine grain: fur or hair, lit from one side."""
    width, height = size
    coarse = rng.random((height // 40 + 2, width // 40 + 2)).astype(np.float32)
    mix = np.asarray(Image.fromarray(coarse, "F").resize((width, height), Image.Resampling.BICUBIC))
    ramp = np.linspace(0.2, 0.8, width, dtype=np.float32)[None, :]
    mix = np.clip(0.5 * mix + 0.5 * ramp + rng.normal(0, 0.04, (height, width)).astype(np.float32), 0, 1)
    low, high = np.asarray(dark, np.float32), np.asarray(light, np.float32)
    return np.rint(low + mix[..., None] * (high - low)).astype(np.uint8)


def background(name: str, size: tuple[int, int] = SIZE) -> np.ndarray:
    """A background (H×W×3 uint8): a shipped photo scaled to cover `size`, a flat colour, or a green wall."""
    if name not in BACKGROUNDS:
        raise ValueError(f"unknown background {name!r} (known: {', '.join(BACKGROUNDS)})")
    width, height = size
    if name in FLAT:
        return np.broadcast_to(np.asarray(FLAT[name], np.uint8), (height, width, 3)).copy()
    if name == "green wall":
        rng = np.random.default_rng(7)
        shade = np.linspace(0.85, 1.1, height, dtype=np.float32)[:, None, None]
        grain = rng.normal(1, 0.03, (height, width, 1)).astype(np.float32)
        return np.clip(np.asarray(GREEN, np.float32) * shade * grain, 0, 255).astype(np.uint8)
    photo = Image.open(PHOTOS / f"{name}.jpg").convert("RGB")
    scale = max(width / photo.width, height / photo.height)
    scaled = photo.resize((math.ceil(photo.width * scale), math.ceil(photo.height * scale)), Image.Resampling.LANCZOS)
    left, top = (scaled.width - width) // 2, (scaled.height - height) // 2
    return np.asarray(scaled.crop((left, top, left + width, top + height)))


def composite(alpha: np.ndarray, colour: np.ndarray, back: np.ndarray) -> np.ndarray:
    """I = αF + (1 − α)B, rounded to 8 bits."""
    a = alpha.astype(np.float32)[..., None] / 255
    return np.rint(a * colour + (1 - a) * back).astype(np.uint8)


def composites(size: tuple[int, int] = SIZE):
    """(name, true alpha, true F, I) for every subject over every background."""
    for subject_name in SUBJECTS:
        alpha, colour = subject(subject_name, size)
        for back_name in BACKGROUNDS:
            yield (
                f"{subject_name} over {back_name}",
                alpha,
                colour,
                composite(alpha, colour, background(back_name, size)),
            )


def photos(size: tuple[int, int] | None = None) -> list[tuple[str, Image.Image]]:
    """(name, RGB image) for each of the bench's photos (at their own size, or scaled to cover `size`), then
    each drawn subject over each background."""
    shipped = sorted(PHOTOS.glob("*.jpg"))
    found = [
        (path.stem, Image.fromarray(background(path.stem, size)) if size else Image.open(path).convert("RGB"))
        for path in shipped
    ]
    return found + [(name, Image.fromarray(image)) for name, _, _, image in composites(size or SIZE)]
