"""What a recipe is, and where recipes come from: the shipped presets and the user's TOML.

A recipe names one output file made from one cutout: its format and quality,
its background, its canvas, how the subject is fitted and aligned on it, its
colour space, byte budget and DPI, its shadow and its file name. Every field is
declared once, on `Recipe`; the presets (presets.toml, beside this module) and a
user's file are read by the same rules, so a preset is only a recipe someone
else wrote. A user's table may start from a preset (`base = "amazon"`) and
change a few fields.

Bad input is refused with one sentence naming the recipe and the field.
"""

from __future__ import annotations

import re
import string
import tomllib
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

PRESETS_FILE = Path(__file__).with_name("presets.toml")
FORMATS = ("jpeg", "png", "webp")
EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp"}
ALIGNS = ("center", "top", "bottom", "left", "right", "top-left", "top-right", "bottom-left", "bottom-right")
TEMPLATE_FIELDS = ("stem", "recipe", "ext", "session", "index")
MAX_SIDE = 20000  # px: a canvas of 20000² is already 1.2 GB of RGB
SIZE = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*$")
ASPECT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*:\s*(\d+(?:\.\d+)?)\s*$")


class RecipeError(ValueError):
    """A recipe that cannot be used; the message is one sentence for the user."""


class Recipe(BaseModel):
    """One output: every field a channel's rule can ask for, checked once when the recipe is read."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    source: str = ""  # where the rule comes from: the channel's published guidance, or the user's own
    format: Literal["jpeg", "png", "webp"] = "png"
    formats_allowed: tuple[Literal["jpeg", "png", "webp"], ...] | None = None  # what the channel takes, if it says
    quality: int = Field(90, ge=1, le=100)
    background: str = "transparent"  # "transparent", "blur" (the photo blurred), or a colour
    canvas: str = "subject"  # "W×H", "A:B" with long_side, or "subject" (the subject's box plus margins)
    long_side: int | None = Field(None, ge=16, le=MAX_SIDE)
    min_long_side: int | None = Field(None, ge=1, le=MAX_SIDE)  # the channel's minimum, checked in the report
    fill: float | None = Field(None, gt=0, le=100)  # percent of the canvas side the subject binds on
    margins: tuple[float, float, float, float] | None = None  # top, right, bottom, left, percent
    align: str = "center"
    snap: bool = True  # a side cut by the photo's frame is put flush with the canvas's edge
    whole_subject: bool = False  # the channel wants the whole product in frame: a cut subject is not compliant
    pure_background: bool = False  # the channel checks that every background pixel is exactly the colour
    colour: Literal["srgb", "srgb-stripped", "keep"] = "srgb"
    byte_budget: int | None = Field(None, ge=1000)
    min_quality: int = Field(40, ge=1, le=100)  # the byte budget's search stops here
    dpi: int | None = Field(None, ge=1, le=10000)
    shadow: Literal["none", "drop", "contact"] = "none"
    shadow_offset: tuple[float, float] = (2.0, 2.0)  # drop: x, y in percent of the subject's longer side
    shadow_blur: float = Field(2.0, ge=0, le=50)  # drop: percent of the subject's longer side
    shadow_opacity: float = Field(0.35, ge=0, le=1)
    shadow_softness: float = Field(0.6, ge=0, le=1)  # contact: 0 a hard ellipse, 1 a fade from its centre
    shadows_forbidden: bool = False  # the channel's rule forbids shadows: a shadow is refused
    file_name: str = "{stem}_{recipe}.{ext}"

    def __init__(self, **fields) -> None:
        """A recipe from its fields; a bad one raises RecipeError, one sentence naming the recipe and the field."""
        try:
            super().__init__(**fields)
        except ValidationError as exc:
            raise RecipeError(_sentence(str(fields.get("name", "?")), exc)) from None

    @property
    def extension(self) -> str:
        return EXTENSIONS[self.format]

    @property
    def colour_rgb(self) -> tuple[int, int, int] | None:
        """The background colour as RGB, or None for transparent and blur."""
        if self.background in ("transparent", "blur"):
            return None
        from PIL import ImageColor

        return ImageColor.getrgb(self.background)[:3]

    @field_validator("name")
    @classmethod
    def _a_name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError("must be letters, digits, '-', '_' or '.', starting with a letter or digit")
        return value

    @field_validator("background")
    @classmethod
    def _a_background(cls, value: str) -> str:
        value = value.strip().lower()
        if value in ("transparent", "blur"):
            return value
        from PIL import ImageColor

        try:
            red, green, blue = ImageColor.getrgb(value)[:3]
        except ValueError:
            raise ValueError('must be "transparent", "blur" or a colour such as "white" or "#ffffff"') from None
        return f"#{red:02x}{green:02x}{blue:02x}"

    @field_validator("canvas")
    @classmethod
    def _a_canvas(cls, value: str) -> str:
        value = value.strip().lower()
        if size := SIZE.match(value):
            if not all(1 <= int(side) <= MAX_SIDE for side in size.groups()):
                raise ValueError(f"each side must be 1 to {MAX_SIDE} px")
            return f"{int(size[1])}x{int(size[2])}"
        if value == "subject" or ASPECT.match(value):
            return value.replace(" ", "")
        raise ValueError('must be "W×H" (e.g. "2000x2000"), an aspect "A:B" (e.g. "4:5") with long_side, or "subject"')

    @field_validator("align")
    @classmethod
    def _an_align(cls, value: str) -> str:
        value = value.strip().lower().replace("centre", "center")
        if value not in ALIGNS:
            raise ValueError(f"must be one of {', '.join(ALIGNS)}")
        return value

    @field_validator("margins")
    @classmethod
    def _margins(cls, value):
        if value is not None and any(side < 0 or side >= 50 for side in value):
            raise ValueError("each margin must be at least 0 and under 50 percent")
        return value

    @field_validator("file_name")
    @classmethod
    def _a_template(cls, value: str) -> str:
        fields = [name for _, name, _, _ in string.Formatter().parse(value) if name is not None]
        unknown = [name for name in fields if name not in TEMPLATE_FIELDS]
        if unknown:
            raise ValueError(f"names {{{unknown[0]}}}; a file name may use {{{'}, {'.join(TEMPLATE_FIELDS)}}}")
        if "stem" not in fields and "index" not in fields:
            raise ValueError("must use {stem} or {index}, or every image would get the same name")
        sample = value.format(stem="a", recipe="r", ext="jpg", session="s", index=1)
        if sample.startswith("/") or ".." in sample.split("/") or "\\" in sample:
            raise ValueError("must stay inside the session's folder (no leading '/', no '..')")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Recipe:
        if self.formats_allowed is not None and self.format not in self.formats_allowed:
            taken = " or ".join(self.formats_allowed)
            raise ValueError(f"the channel takes only {taken}, so format cannot be {self.format}")
        if self.format == "jpeg" and self.background == "transparent":
            raise ValueError('format "jpeg" cannot keep transparency: set background to a colour, e.g. "white"')
        if self.fill is not None and self.margins is not None:
            raise ValueError("set fill or margins, not both")
        if ASPECT.match(self.canvas) and self.long_side is None:
            raise ValueError(f'canvas "{self.canvas}" is an aspect ratio: set long_side too')
        if SIZE.match(self.canvas) and self.long_side is not None:
            raise ValueError(f'canvas "{self.canvas}" is already a size: leave long_side out')
        if self.canvas == "subject" and self.fill is not None:
            raise ValueError('a "subject" canvas is fitted by margins, not fill')
        if self.shadow != "none" and self.shadows_forbidden:
            raise ValueError(f"the channel forbids shadows, so shadow must be none, not {self.shadow}")
        if self.pure_background and self.colour_rgb is None:
            raise ValueError("pure_background needs a background colour")
        if self.pure_background and self.format == "webp":
            raise ValueError("pure_background needs jpeg or png: lossy WebP cannot keep every background pixel exact")
        if self.dpi is not None and self.format == "webp":
            raise ValueError("dpi needs jpeg or png: a WebP file has no resolution field")
        if self.min_quality > self.quality:
            raise ValueError(f"min_quality {self.min_quality} is above quality {self.quality}")
        return self

    def file_name_for(self, stem: str, session: str = "", index: int = 1) -> str:
        return self.file_name.format(stem=stem, recipe=self.name, ext=self.extension, session=session, index=index)


def preset_names() -> list[str]:
    """The shipped presets, in the order presets.toml gives them."""
    return list(_presets())


def load_recipes(names: Sequence[str], user_file: Path | None = None) -> list[Recipe]:
    """The recipes `names` asks for, from the user's file first, then the shipped presets.

    Raises RecipeError for an unknown name (naming the known ones), for a
    user's file that cannot be read, and for a bad field (naming the recipe and field).
    """
    tables = {**_presets(), **(_read_tables(user_file) if user_file is not None else {})}
    recipes = []
    for name in names:
        if name not in tables:
            known = ", ".join(sorted(tables))
            raise RecipeError(f'there is no recipe "{name}"; the known ones are {known}')
        recipes.append(recipe_from(name, tables))
    return recipes


def recipe_from(name: str, tables: dict[str, dict], seen: tuple[str, ...] = ()) -> Recipe:
    """The recipe that table `name` declares, on top of its `base` if it names one."""
    table = dict(tables[name])
    base = table.pop("base", None)
    if base is not None:
        if base not in tables or base in seen or base == name:
            raise RecipeError(f'recipe "{name}" has base "{base}", which is not a recipe it can start from')
        table = {**recipe_from(base, tables, (*seen, name)).model_dump(exclude={"name"}), **table}
    return Recipe(name=name, **table)


def _sentence(name: str, exc: ValidationError) -> str:
    error = exc.errors()[0]
    field = ".".join(str(part) for part in error["loc"])
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        return f'recipe "{name}" has an unknown field "{field}"'
    if not field:
        return f'recipe "{name}": {message}'
    return f'recipe "{name}" has a bad {field}: {message}'


@cache
def _presets() -> dict[str, dict]:
    return _read_tables(PRESETS_FILE)


def _read_tables(path: Path) -> dict[str, dict]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise RecipeError(f"the recipes file {path} cannot be read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(f"the recipes file {path} is not valid TOML: {exc}") from None
    loose = [key for key, value in data.items() if not isinstance(value, dict)]
    if loose:
        raise RecipeError(f'the recipes file {path} has "{loose[0]}" outside a [recipe] table')
    return data
