"""Every per-image option, declared once: what a job does with an image beyond running the model.

`ImageOptions` is the one declaration. Each field carries its name (the same
as a setting, a ticket key and a keyword of `remove`), its default, its type
and range, a help sentence, whether a job ticket may set it and the flags that
give it. Everything else derives from it: the settings' image section, the
ticket's rules, the job's command line, the imaging steps' options, the Python
API's keywords and the CLI flags. Adding an option is one field here plus its
step in imaging/.

A leaf: it imports nothing of ours, so the supervisor, the job and the clients
can all read it.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

from pydantic import BaseModel, Field, create_model, field_validator, model_validator

TRANSPARENT = "transparent"


def option(
    help: str,
    *,
    ticket: bool = True,
    ge: float | None = None,
    gt: float | None = None,
    le: float | None = None,
    flags: tuple[str, ...] = (),
    metavar: str | None = None,
    job_flag: str | None = None,
    doc: str | None = None,
    shown: str | None = None,
    example: str | None = None,
) -> dict:
    """One option's declaration beyond its name, type and default.

    `ticket`: whether a job ticket may set it (else only the settings do);
    `flags`: how `run`, `remove` and `bench` spell it, if at all; `job_flag`:
    how the job's command line spells it, where that differs from --NAME;
    `doc`, `shown`, `example`: its entry in docs/settings.md and the example
    config, as bgremover.settings.doc describes them (`doc` defaults to `help`).
    """
    return {
        "help": help,
        "ticket": ticket,
        "bounds": {key: value for key, value in (("ge", ge), ("gt", gt), ("le", le)) if value is not None},
        "flags": flags,
        "metavar": metavar,
        "job_flag": job_flag,
        "docs": {"doc": doc or help, "shown": shown, "example": example, "internal": False},
    }


@dataclass(frozen=True)
class ImageOptions:
    """The options of one image, in the order a ticket's error lists them; none is checked here.

    Checking is the settings' (see `settings_model`): the imaging steps trust
    what they are given.
    """

    output_format: Literal["png", "webp", "avif", "jpeg"] = field(
        default="png",
        metadata=option(
            "png, webp, avif or jpeg",
            flags=("-f", "--format"),
            metavar="FORMAT",
            job_flag="--format",
            doc="`png`, `webp`, `avif` or `jpeg`, for every image of a session; `jpeg` needs a `background` colour",
        ),
    )
    background: str = field(
        default=TRANSPARENT,
        metadata=option(
            'a background colour ("white", "#ffffff") or "transparent"',
            flags=("--background",),
            metavar="COLOUR",
            doc=(
                "`transparent` keeps the alpha; a colour (`white`, `#ffffff`, `rgb(240,240,240)`) is put behind the "
                "subject: exactly that colour wherever the cutout was transparent, and the output has no alpha. "
                "`jpeg` with `transparent` stops start-up with one line"
            ),
        ),
    )
    # The job's --output is the file it writes, so this one travels as --kind.
    output: Literal["cutout", "mask", "both"] = field(
        default="cutout",
        metadata=option(
            "what each image gives: cutout, mask or both",
            job_flag="--kind",
            doc=(
                "`mask` gives each image's alpha alone, as an 8-bit grey PNG (always PNG: a matte must be lossless); "
                "`both` puts the cutout and its mask side by side in the ZIP (`shoes/red.png` and "
                "`shoes/red.mask.png`), framed alike"
            ),
        ),
    )
    crop: Literal["none", "subject", "square"] = field(
        default="none",
        metadata=option(
            "framing: none, subject or square",
            flags=("--crop",),
            metavar="CROP",
            doc=(
                "`subject` crops each cutout to its subject (the pixels at least half opaque) plus `margin`; `square`"
                " centres the subject on a square canvas of the background, spanning `fill` of its side; an image "
                "where no subject was found is left uncropped"
            ),
        ),
    )
    margin: float = field(
        default=5.0,
        metadata=option(
            "percent of the subject's longer side kept around it (crop subject)",
            ge=0,
            le=100,
            doc='percent of the subject\'s longer side kept around it, with `crop = "subject"`',
        ),
    )
    fill: float = field(
        default=85.0,
        metadata=option(
            "percent of the square the subject's longer side spans (crop square)",
            gt=0,
            le=100,
            doc="percent of the square's side the subject's longer side spans, with `crop = \"square\"`",
        ),
    )
    size: int | None = field(
        default=None,
        metadata=option(
            "the square's side in pixels (crop square)",
            ge=16,
            le=20000,
            doc=(
                'with `crop = "square"`, the square\'s side in pixels (e.g. `2000`); otherwise the subject keeps its '
                "own size"
            ),
            example="2000",
        ),
    )
    edges: Literal["raw", "clean", "refine"] = field(
        default="raw",
        metadata=option(
            "the mask's edge: raw, clean or refine",
            flags=("--edges",),
            metavar="EDGES",
            doc=(
                "`raw` keeps the model's mask as it is; `clean` removes specks and small holes and gives a smooth, "
                "crisp contour; `refine` lets a band around the contour follow the photo (hair, soft edges) and "
                "leaves the rest untouched; see [Outputs](../README.md#outputs)"
            ),
        ),
    )
    decontaminate: bool = field(
        default=False,
        metadata=option(
            "true: the subject's own colour at partial alpha, no rim of the old background; false: the photo's colours",
            flags=("--decontaminate",),
            metavar="BOOL",
            doc=(
                "`true` gives partial-alpha pixels (hair, fur, antialiased contours) the subject's own colour, "
                "estimated from the photo (blur-fusion), so no rim of the old background shows on a new one; opaque "
                "pixels keep their colours exactly; also a ticket key and `--decontaminate true|false`; see "
                "[Outputs](../README.md#outputs)"
            ),
        ),
    )
    model: str = field(
        default="u2netp",
        metadata=option(
            "the model, by its name in `bgremover models list`",
            flags=("-m", "--model"),
            metavar="NAME",
            doc=(
                "the model, by its name in a manifest: the models folder's first, then the bundled one; see "
                "[Models](../README.md#models)"
            ),
        ),
    )
    review_model: str | None = field(
        default=None,
        metadata=option(
            "a second, stronger installed model for the quality review (review_escalate, review_compare)",
            flags=("--review-model",),
            metavar="NAME",
            doc=(
                "a second installed model (e.g. `isnet-medium`, after `bgremover models fetch isnet-medium`) that "
                "`review_escalate` and `review_compare` run; unset, neither does anything"
            ),
            example='"isnet-medium"',
        ),
    )
    review_escalate: bool = field(
        default=False,
        metadata=option(
            "true: an image a quality signal flags (but for cut_by_frame) runs again with review_model, and "
            "the second model's result is kept unless it raises more signals",
            flags=("--review-escalate",),
            metavar="BOOL",
            doc=(
                "`true`: an image whose mask raises a quality signal a stronger model may clear (any but "
                "`cut_by_frame`) runs again with `review_model`; the second model's result is kept unless it raises "
                "more signals, and the item's `note` says so (see [Review](review.md))"
            ),
        ),
    )
    review_compare: bool = field(
        default=False,
        metadata=option(
            "true: every image runs with review_model too, and one the two models disagree on is flagged",
            flags=("--review-compare",),
            metavar="BOOL",
            doc=(
                "`true`: every image also runs with `review_model`, and a result the two models' masks disagree "
                "on is flagged (`models_disagree`); costs the second model's time on every image"
            ),
        ),
    )
    backend: Literal["onnxruntime", "openvino"] = field(
        default="onnxruntime",
        metadata=option(
            "the inference backend: onnxruntime, or openvino (pip install 'bgremover[openvino]')",
            flags=("--backend",),
            metavar="BACKEND",
            doc=(
                "`onnxruntime`, or `openvino` (installed with `pip install 'bgremover[openvino]'`; without it each "
                "job fails with one line saying so); see [Backends and precisions](models.md#backends-and-precisions)"
            ),
        ),
    )
    precision: Literal["fp32", "bf16", "int8", "auto"] = field(
        default="auto",
        metadata=option(
            "fp32, bf16, int8, or auto: the fastest backend and precision the model's check passed on this CPU",
            flags=("--precision",),
            metavar="PRECISION",
            doc=(
                "`fp32`, `bf16` (OpenVINO only), `int8` (the variant `bgremover models quantize` made), each on "
                "`backend`; or `auto`: the fastest backend and precision that `bgremover models verify` passed for "
                "the model on this machine's CPU features (among the backends installed), and fp32 onnxruntime where "
                "none has"
            ),
        ),
    )
    quality: int = field(
        default=90,
        metadata=option(
            "WebP, AVIF and JPEG quality, 1 to 100",
            ge=1,
            le=100,
            flags=("--quality",),
            metavar="Q",
            doc="WebP, AVIF and JPEG quality, 1–100 (WebP keeps its alpha lossless)",
        ),
    )
    png_compress_level: int = field(
        default=1,
        metadata=option(
            "deflate level; 1 is fast, 6 is ~22% smaller and ~17x slower",
            ge=0,
            le=9,
            doc="deflate level 0–9 (1 and 2 by ISA-L, the others by zlib); 6 makes files about 22 % smaller and encodes about 17× slower",
        ),
    )
    webp_method: int = field(
        default=4,
        metadata=option(
            "libwebp effort: 0 fastest, 6 smallest",
            ge=0,
            le=6,
            doc="libwebp effort 0–6: 0 is about 2.5× faster than 4 and 37 % larger",
        ),
    )
    avif_speed: int = field(
        default=8,
        metadata=option(
            "libavif speed: 10 fastest, 0 smallest",
            ge=0,
            le=10,
            doc="libavif speed 0–10: 6 is 3× slower and 17 % smaller, 10 is 1.8× faster and the same size",
        ),
    )
    recipes: str = field(
        default="",
        metadata=option(
            "the recipes each image is rendered by, comma-separated (amazon,shopify-square), from one inference",
            flags=("--recipe",),
            metavar="NAMES",
            doc=(
                "the recipes (named outputs: canvas, fill, background, format, byte budget, file name) each image is "
                'also rendered by, as a list (`["amazon", "shopify-square"]`) or comma-separated; the shipped '
                "presets and those of `recipes_file`; every recipe of an image comes from its one inference, and "
                "each lands in the ZIP's folder of that name; see [Recipes](folders-and-markers.md#recipes)"
            ),
            example='["amazon", "shopify-square"]',
        ),
    )
    recipes_file: str | None = field(
        default=None,
        metadata=option(
            "your own recipes, a TOML file, beside the shipped presets",
            ticket=False,
            doc="a TOML file of your own recipes, named beside the shipped presets; see [Recipes](folders-and-markers.md#recipes)",
            example='"/srv/bgremover/recipes.toml"',
        ),
    )
    loose_files: bool = field(
        default=False,
        metadata=option(
            "true: each result is also written as a loose file under outbox/SESSION/, as the ZIP names it",
            doc=(
                "`true` also writes each done item's files, as the ZIP names them, into `outbox/SESSION/` as the "
                "item finishes: each one a temp file renamed into place, so a sync tool never sees half a file"
            ),
        ),
    )
    max_megapixels: float = field(
        default=40.0,
        metadata=option(
            "images above this are reduced to fit or refused",
            ticket=False,
            gt=0,
            doc="images above this are reduced to fit or refused (`large_images`)",
        ),
    )
    large_images: Literal["reduce", "refuse"] = field(
        default="reduce",
        metadata=option(
            "what happens above max_megapixels: reduce or refuse",
            ticket=False,
            doc="`reduce` (the item's `note` says so) or `refuse` (the item fails)",
        ),
    )


@dataclass(frozen=True)
class Declared:
    """One option as its users read it: the field, its resolved type and its declaration."""

    name: str
    annotation: Any
    default: Any
    help: str
    ticket: bool
    bounds: dict
    flags: tuple[str, ...]
    metavar: str | None
    job_flag: str
    docs: dict

    @property
    def choices(self) -> tuple[str, ...] | None:
        return typing.get_args(self.annotation) if typing.get_origin(self.annotation) is Literal else None

    @property
    def kind(self) -> type:
        """The plain type of a value: bool, int, float or str (a Literal's or an Optional's)."""
        if self.choices is not None:
            return str
        return next(arg for arg in (typing.get_args(self.annotation) or (self.annotation,)) if arg is not type(None))

    def pydantic_field(self) -> tuple[Any, Any]:
        return self.annotation, Field(self.default, description=self.help, json_schema_extra=self.docs, **self.bounds)


@cache
def declared(options: type[ImageOptions] = ImageOptions) -> tuple[Declared, ...]:
    """The options of `options` (ImageOptions, or a class extending it), in declaration order."""
    hints = typing.get_type_hints(options)
    return tuple(
        Declared(
            name=spec.name,
            annotation=hints[spec.name],
            default=spec.default,
            job_flag=spec.metadata["job_flag"] or "--" + spec.name.replace("_", "-"),
            **{key: value for key, value in spec.metadata.items() if key != "job_flag"},
        )
        for spec in dataclasses.fields(options)
    )


def names(options: type[ImageOptions] = ImageOptions) -> tuple[str, ...]:
    return tuple(one.name for one in declared(options))


def ticket_names(options: type[ImageOptions] = ImageOptions) -> tuple[str, ...]:
    """What a job ticket may set: the options that shape a result, not the daemon's limits."""
    return tuple(one.name for one in declared(options) if one.ticket)


def recipe_names(recipes: str) -> list[str]:
    """The names an option's `recipes` value holds, in order (see ImageRules: already distinct)."""
    return [name for name in recipes.split(",") if name]


def values_of(source: object, options: type[ImageOptions] = ImageOptions) -> dict:
    """Each option's value as `source` (Settings, say) holds it, by name."""
    return {name: getattr(source, name) for name in names(options)}


class ImageRules(BaseModel):
    """The rules of the image options, for the settings and a ticket alike."""

    @field_validator("background", check_fields=False)
    @classmethod
    def _a_colour(cls, value: str) -> str:
        if value.strip().lower() == TRANSPARENT:
            return TRANSPARENT
        from PIL import ImageColor  # only when a colour is set: the supervisor needs no Pillow otherwise

        try:
            red, green, blue = ImageColor.getrgb(value.strip())[:3]
        except ValueError:
            raise ValueError('must be "transparent" or a colour such as "white" or "#ffffff"') from None
        return f"#{red:02x}{green:02x}{blue:02x}"

    @field_validator("recipes", mode="before", check_fields=False)
    @classmethod
    def _recipe_names(cls, value: object) -> object:
        """A list of names or one comma-separated string, as one string of distinct names in their order."""
        if isinstance(value, (list, tuple)):
            if not all(isinstance(one, str) for one in value):
                raise ValueError('must be a list of recipe names, e.g. ["amazon", "shopify-square"]')
            value = ",".join(value)
        if not isinstance(value, str):
            return value
        return ",".join(dict.fromkeys(name.strip() for name in value.split(",") if name.strip()))

    @model_validator(mode="after")
    def _jpeg_needs_a_background(self) -> ImageRules:
        if self.output_format == "jpeg" and self.background == TRANSPARENT and self.output != "mask":
            raise ValueError(
                'output_format "jpeg" cannot keep transparency: set background to a colour, e.g. background = "white"'
            )
        return self


@cache
def settings_model(options: type[ImageOptions] = ImageOptions) -> type[ImageRules]:
    """The image options as a pydantic model: each with its type, range and help, under ImageRules."""
    fields = {one.name: one.pydantic_field() for one in declared(options)}
    return create_model("ImageSettings", __base__=ImageRules, **fields)
