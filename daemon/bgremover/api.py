"""bgremover as a Python library: `remove(data)` and `Session(model)`.

    from bgremover import remove, Session
    cutout_png = remove(open("shoe.jpg", "rb").read())       # bytes in, PNG bytes out
    session = Session("u2netp")                              # load the model once ...
    cutouts = [remove(image, session=session) for image in images]  # ... and reuse it

`remove` takes what rembg's `remove` takes and gives back the same kind: the
bytes of an encoded image (any format bgremover reads) give encoded bytes in
`format` (PNG unless told); a PIL.Image gives a PIL.Image (RGBA, or an "L"
mask); a numpy array H×W×3 or H×W×4 of uint8 gives a numpy array (H×W×4, or
H×W for a mask). With output="both" it returns the pair (cutout, mask), each
of that same kind.

With `recipe` (a preset's name such as "amazon", a bgremover.recipes.Recipe,
or a list of them) the cutout is rendered as each recipe says (canvas, fill,
background, format, byte budget) and the file comes back as bytes, whatever
the input's kind; a list gives a list of bgremover.recipes.Rendered, each with
its file name, bytes and compliance report, all from one inference:

    amazon_jpeg = remove(photo_bytes, recipe="amazon")
    files = remove(photo_bytes, recipe=["amazon", "thumbnail"], session=session)

Everything here runs in the calling process, by choice: a Session keeps its
model loaded across calls, which is what a library is for. It therefore gives
no isolation: an image that exhausts memory or crashes a native library takes
the caller down with it. The daemon (`bgremover run`) is what gives isolation:
it runs each image in a fresh process, and one bad image fails alone.

The steps are the daemon's own (bgremover.imaging.matting: decode, model,
mask, edges, cutout, framing, encode), and the options are validated by the
settings' rules, so a call here and a job of the daemon with the same options
give the same cutout.
"""

from __future__ import annotations

import inspect
import io
from pathlib import Path

import numpy as np
from PIL import Image
from pydantic import ValidationError

from bgremover.imaging import matting
from bgremover.imaging.matting import BadInput, EncoderUnavailable, ModelError  # noqa: F401 - raised to callers
from bgremover.models import paths
from bgremover.models.runtime import open_path
from bgremover.options import ImageOptions, names, settings_model, values_of
from bgremover.settings import describe, load_settings, usable_cores

DEFAULT_MODEL = "u2netp"


class Session:
    """One model, loaded once and reused by every `remove(..., session=...)` (rembg's new_session).

    `model` is a name from the bundled manifest or the models folder (where
    `bgremover models fetch` and `bgremover models import` put models); the
    folder is `models_dir`, or else the one the settings name (flags aside:
    BGREMOVER_MODELS_DIR or BGREMOVER_ROOT, the config file, the default).
    `threads` is onnxruntime's thread count (None lets it choose).
    """

    def __init__(
        self,
        model: str = DEFAULT_MODEL,
        *,
        models_dir: str | Path | None = None,
        threads: int | None = None,
        providers: tuple[str, ...] = (matting.CPU,),
        backend: str = "onnxruntime",
        precision: str = "auto",
    ) -> None:
        folder = Path(models_dir) if models_dir is not None else load_settings().models_folder
        self.model = model
        self.spec = matting.find_model_spec(model, folder)
        self.asked = {"backend": backend, "precision": precision}
        self.path = paths.choose(self.spec, folder, backend, precision)
        self.inference = open_path(self.spec, self.path, threads, providers)

    def __repr__(self) -> str:
        return f"Session({self.model!r}, file={str(self.spec.path)!r})"


def remove(
    data,
    *,
    model: str | None = None,
    output: str = "cutout",
    background: str = "transparent",
    edges: str = "raw",
    crop: str = "none",
    format: str | None = None,
    session: Session | None = None,
    recipe=None,
    recipes_file: str | Path | None = None,
    **more,
):
    """The background of `data` removed; see this module's docstring for what comes back.

    `output` is "cutout", "mask" or "both"; `background` "transparent" or a
    colour composited under the cutout ("white", "#ffeedd"; the result stays
    RGBA, fully opaque); `edges` "raw", "clean" or "refine"; `crop` "none",
    "subject" or "square"; `format` (bytes only) "png", "webp", "avif" or
    "jpeg". Further keywords are the other per-image settings: margin, fill,
    size, quality, png_compress_level, webp_method, avif_speed, max_megapixels,
    large_images. Without `session`, the model (u2netp unless named) is loaded
    for this one call.

    Raises TypeError for input of another kind, ValueError for a bad option,
    BadInput for data that is not a usable image, ModelError for a model
    that cannot be loaded, EncoderUnavailable for a format this Pillow cannot write.
    With `recipe` (names looked up among the shipped presets and `recipes_file`,
    a TOML file of your own), RecipeError (a ValueError) for an unknown name or a bad recipe.
    """
    kind = _kind_of(data)
    if recipe is not None:
        _no_framing_beside_a_recipe(output, background, crop, format)
        return _rendered(
            kind,
            data,
            recipe,
            recipes_file,
            _options("cutout", "transparent", edges, "none", "png", more),
            _session_for(model, session, asked_paths(more)),
        )
    if recipes_file is not None:
        raise ValueError("recipes_file names where recipes come from: pass recipe too")
    if format is not None and kind != "bytes":
        raise ValueError(f"format applies only to bytes input; a {kind} input gives back the same kind, unencoded")
    options = _options(output, background, edges, crop, format or "png", more)
    session = _session_for(model, session, asked_paths(more))
    decoded = _decoded(kind, data, options)
    rgba = matting.matte(decoded.image, session.inference, session.spec, options)
    if kind == "bytes":
        return _encoded(rgba, decoded.icc, options)
    cutout, mask = _cutout_image(rgba, options), rgba.getchannel("A")
    chosen = {"cutout": cutout, "mask": mask, "both": (cutout, mask)}[options.output]
    if kind == "array":
        return tuple(np.array(one) for one in chosen) if options.output == "both" else np.array(chosen)
    return chosen


def _kind_of(data) -> str:
    if isinstance(data, (bytes, bytearray, memoryview)):
        return "bytes"
    if isinstance(data, Image.Image):
        return "image"
    if isinstance(data, np.ndarray):
        if data.dtype != np.uint8 or data.ndim != 3 or data.shape[2] not in (3, 4):
            raise TypeError(
                f"a numpy image must be H×W×3 (RGB) or H×W×4 (RGBA) of uint8, not shape {data.shape} of {data.dtype}"
            )
        return "array"
    raise TypeError(f"remove takes the bytes of an image file, a PIL.Image or a numpy array, not {type(data).__name__}")


def _options(output: str, background: str, edges: str, crop: str, fmt: str, more: dict) -> matting.Options:
    """The options, checked by the settings' own rules (and nothing read from the environment or a file)."""
    others = more_options()
    unknown = sorted(set(more) - set(others))
    if unknown:
        raise TypeError(
            f"remove() got unknown option {', '.join(unknown)} (besides its named ones it takes: {', '.join(others)})"
        )
    values = {"output": output, "background": background, "edges": edges, "crop": crop, "output_format": fmt, **more}
    try:
        checked = settings_model().model_validate(values)  # the options' rules alone: no environment, no file
    except ValidationError as exc:
        raise ValueError(describe(exc).replace("bad setting", "bad option")) from None
    return matting.Options(**values_of(checked), threads=usable_cores())


def more_options(options: type[ImageOptions] = ImageOptions) -> tuple[str, ...]:
    """The image options `remove` takes as further keywords: all but its named ones (format is output_format)."""
    named = set(inspect.signature(remove).parameters) | {"output_format"} | NOT_HERE
    return tuple(name for name in names(options) if name not in named)


# Options of the daemon's and the command line's files, not of one image in memory: refused here as unknown
# rather than taken and ignored.
NOT_HERE = {"recipes", "recipes_file", "loose_files"}


def asked_paths(more: dict) -> dict:
    """The backend and precision a call names, of its further keywords."""
    return {key: more[key] for key in ("backend", "precision") if key in more}


def _session_for(model: str | None, session: Session | None, asked: dict) -> Session:
    if session is None:
        return Session(model or DEFAULT_MODEL, **asked)
    if model is not None and model != session.model:
        raise ValueError(f"model={model!r} was asked for, but the session holds {session.model!r}; pass one of them")
    for key, value in asked.items():
        if value != session.asked[key]:
            raise ValueError(f"{key}={value!r} was asked for, but the session runs {session.asked[key]!r}; pass one")
    return session


def _decoded(kind: str, data, options: matting.Options) -> matting.Decoded:
    if kind == "bytes":
        return matting.decode_bytes(bytes(data), options.max_megapixels, options.large_images)
    image = data if kind == "image" else Image.fromarray(data)
    return matting.decode_image(image, options.max_megapixels, options.large_images)


def _encoded(rgba: Image.Image, icc: bytes | None, options: matting.Options) -> bytes | tuple[bytes, bytes]:
    """The result as encoded bytes, written by the same step that writes the daemon's files."""
    main, mask = io.BytesIO(), io.BytesIO()
    matting.write_result(rgba, icc, options, main, mask)
    return (main.getvalue(), mask.getvalue()) if options.output == "both" else main.getvalue()


def _no_framing_beside_a_recipe(output: str, background: str, crop: str, fmt: str | None) -> None:
    clashing = [
        name
        for name, value, default in (
            ("output", output, "cutout"),
            ("background", background, "transparent"),
            ("crop", crop, "none"),
            ("format", fmt, None),
        )
        if value != default
    ]
    if clashing:
        raise ValueError(f"a recipe sets the format, background and framing itself: leave {', '.join(clashing)} out")


def _rendered(kind: str, data, recipe, recipes_file, options: matting.Options, session: Session):
    """Each recipe rendered from the one cutout: bytes for one recipe, a list of Rendered for a list."""
    from bgremover.recipes import Recipe, load_recipes, render_many

    several = isinstance(recipe, (list, tuple))
    wanted = list(recipe) if several else [recipe]
    named = [one for one in wanted if not isinstance(one, Recipe)]
    if any(not isinstance(one, str) for one in named):
        raise TypeError("recipe must be a preset's name, a Recipe, or a list of them")
    loaded = iter(load_recipes(named, Path(recipes_file) if recipes_file is not None else None))
    recipes = [one if isinstance(one, Recipe) else next(loaded) for one in wanted]
    decoded = _decoded(kind, data, options)
    rgba = np.asarray(matting.matte(decoded.image, session.inference, session.spec, options).convert("RGBA"))
    rgb, alpha = np.ascontiguousarray(rgba[..., :3]), np.ascontiguousarray(rgba[..., 3])
    files = render_many(rgb, alpha, recipes, icc_profile=decoded.icc, stem="image", threads=options.threads)
    failure = next((one for one in files if isinstance(one, Exception)), None)
    if failure is not None:
        raise failure
    return files if several else files[0].data


def _cutout_image(rgba: Image.Image, options: matting.Options) -> Image.Image:
    if options.background == "transparent":
        return rgba
    return matting.on_background(rgba, options.background).convert("RGBA")
