"""Every recipe of one image, from its one cutout: each file written whole, each failure its own.

The job renders an image's recipes right after its one inference; `bgremover
rerender` renders a done session's again from the mattes kept beside it, with
no model at all. Both go through `render_each`, so a file is named and placed
the same way whichever made it: `RECIPE/FOLDER/NAME`, where FOLDER is the
item's folder in the session and NAME is what the recipe's template makes of
the item's stem (the stem of its ZIP member, distinct within the session).

A recipe that cannot be rendered gives its entry an error sentence and costs
neither the other recipes nor the image: its entry says so, and the rest are
written.

The matte is the whole photo as decoded (upright, in its own profile) with the
cutout's alpha: an RGBA PNG, lossless, the profile embedded. It is all a
rerender needs.
"""

from __future__ import annotations

import posixpath
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from bgremover import durable
from bgremover.imaging import png
from bgremover.intake.names import fitted
from bgremover.options import recipe_names
from bgremover.outbox.zips import windows_part


@dataclass(frozen=True)
class Naming:
    """What names an item's files: its ZIP member, its session and its place in the session (from 1)."""

    member: str
    session: str = ""
    index: int = 1

    @property
    def folder(self) -> str:
        return posixpath.dirname(self.member)

    @property
    def stem(self) -> str:
        return posixpath.splitext(posixpath.basename(self.member))[0]


class Unusable(Exception):
    """The recipes asked for cannot be used (a name no preset or user recipe has, a bad user file)."""


def load(names: str, user_file: str | Path | None) -> list:
    """The recipes `names` (an option's comma-separated value) names; raises Unusable with one sentence."""
    from bgremover.recipes import RecipeError, load_recipes  # only where recipes are asked for

    try:
        return load_recipes(recipe_names(names), Path(user_file) if user_file else None)
    except (RecipeError, OSError) as exc:
        raise Unusable(f"the recipes {names} cannot be used: {exc}") from None


def preload(names: str, user_file: str | Path | None) -> None:
    """In the fork server: the renderer imported once for every job, and the settings' recipes checked."""
    import bgremover.recipes  # noqa: F401 - imported here so that no job pays for it

    if names:
        load(names, user_file)


def recipe_member(recipe: str, naming: Naming, name: str) -> str:
    """Where a recipe's file goes in the ZIP and in the loose tree: RECIPE/FOLDER/NAME, each part one Windows takes."""
    parts = [recipe, *naming.folder.split("/"), name]
    return "/".join(fitted(windows_part(part)) for part in parts if part not in ("", ".", ".."))


# Called with a recipe's number, its member name and its bytes; raises OSError if they cannot be kept.
Write = Callable[[int, str, bytes], None]


def render_each(
    rgba: Image.Image, icc: bytes | None, recipes: list, naming: Naming, write: Write, threads: int = 1
) -> list[dict]:
    """Each recipe rendered from `rgba` and handed to `write`; one entry per recipe, in order.

    The recipes share what they can (the renderer works out the subject's box
    and the premultiplied photo once) and run on up to `threads` threads. An
    entry: the recipe's name, its file (the member name) or its error sentence,
    its compliance report. A recipe that fails to render is its own entry's
    error; `write` failing (the disk) raises.
    """
    from bgremover.recipes import render_many  # as in load

    pixels = np.asarray(rgba.convert("RGBA"))
    rgb, alpha = np.ascontiguousarray(pixels[..., :3]), np.ascontiguousarray(pixels[..., 3])
    results = render_many(
        rgb,
        alpha,
        recipes,
        icc_profile=icc,
        stem=naming.stem,
        session=naming.session,
        index=naming.index,
        threads=threads,
    )
    entries = []
    for number, (recipe, rendered) in enumerate(zip(recipes, results, strict=True)):
        if isinstance(rendered, Exception):
            entries.append(failed(recipe.name, rendered))
            continue
        member = recipe_member(recipe.name, naming, rendered.name)
        write(number, member, rendered.data)
        entries.append({"recipe": recipe.name, "file": member, "error": None, "report": rendered.report})
    return entries


def failed(name: str, exc: Exception) -> dict:
    """A recipe's entry when it could not be rendered: one sentence; the traceback on stderr unless expected."""
    from bgremover.recipes import RecipeError

    if isinstance(exc, RecipeError):
        sentence = f"the recipe {name} cannot be rendered: {exc}"
    else:
        traceback.print_exception(exc, file=sys.stderr)
        sentence = f"the recipe {name} could not be rendered: {type(exc).__name__}: {exc}"
    return {"recipe": name, "file": None, "error": sentence, "report": None}


def render_path(prefix: Path, number: int) -> Path:
    """Where a job keeps recipe `number`'s file until the ZIP takes it: PREFIX + number."""
    return prefix.with_name(f"{prefix.name}{number}")


def write_matte(rgba: Image.Image, icc: bytes | None, target: Path, threads: int = 1) -> None:
    """The photo and its mask, as one RGBA PNG (level 1: written once, read at most a few times), published whole."""
    temp = durable.temp_path(target)
    try:
        png.write_png(temp, np.asarray(rgba.convert("RGBA")), icc_profile=icc, level=1, threads=threads)
        durable.publish(temp, target)
    finally:
        temp.unlink(missing_ok=True)


def read_matte(path: Path) -> tuple[Image.Image, bytes | None]:
    """A kept matte: the RGBA image and the photo's ICC profile (None if it had none)."""
    with Image.open(path) as image:
        image.load()
        return image.convert("RGBA"), image.info.get("icc_profile") or None


def deliver(tree: Path, member: str, data: bytes | Path) -> None:
    """One loose file into the session's tree, written beside its place and renamed in: never seen half-written."""
    target = tree.joinpath(*member.split("/"))
    target.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, Path):
        with open(data, "rb") as source, durable.replacing(target) as out:
            while chunk := source.read(1 << 20):
                out.write(chunk)
    else:
        durable.atomic_write(target, data)
