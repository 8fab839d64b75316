"""The Settings model: every knob of the daemon, validated in one place.

Precedence, highest first: command-line flags (passed as init values), then
`BGREMOVER_<NAME>` environment variables, then the TOML file named by
`--config` or `BGREMOVER_CONFIG`, then the defaults below.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

ENV_PREFIX = "BGREMOVER_"
CONFIG_ENV = "BGREMOVER_CONFIG"
# BGREMOVER_ variables that are not settings but mean something all the same: the
# config file's, and those the on_session_complete hook is given (a hook may run
# bgremover itself). BGREMOVER_TEST_* belong to the test suite's fake jobs.
NOT_SETTINGS = frozenset({CONFIG_ENV, "BGREMOVER_ZIP", "BGREMOVER_STATUS", "BGREMOVER_SESSION"})
RESERVED_PREFIXES = ("BGREMOVER_TEST_",)


TRANSPARENT = "transparent"


class SettingsError(Exception):
    """A bad setting; the message is one line per problem, naming the setting."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    root: Path = Path("./data")
    output_format: Literal["png", "webp", "avif", "jpeg"] = "png"
    # "transparent" keeps the alpha; a colour ("white", "#ffffff") is composited under the cutout.
    background: str = "transparent"
    # What each image gives: "cutout", "mask" (its alpha alone, 8-bit grey PNG) or
    # "both" (NAME.png and NAME.mask.png side by side in the ZIP).
    output: Literal["cutout", "mask", "both"] = "cutout"
    # Framing: "none"; "subject" crops to the subject's box plus `margin` percent of
    # its longer side; "square" centres the subject on a square canvas of the
    # background, its longer side `fill` percent of the canvas, resized to `size` px if set.
    crop: Literal["none", "subject", "square"] = "none"
    margin: float = Field(5.0, ge=0, le=100)
    fill: float = Field(85.0, gt=0, le=100)
    size: int | None = Field(None, ge=16, le=20000)
    # The mask's edge: "raw" as the model gives it; "clean" drops specks and small
    # holes and smooths the contour; "refine" follows the photo near the boundary.
    edges: Literal["raw", "clean", "refine"] = "raw"
    # Where alpha is partial (hair, fur, antialiased contours), estimate the
    # subject's own colour (imaging/foreground.py) instead of keeping the mix
    # with the old background, which shows as a dark or green rim on white.
    decontaminate: bool = False
    quality: int = Field(90, ge=1, le=100, description="WebP/AVIF quality; PNG ignores it")
    max_session_items: int = Field(100, ge=1)
    session_idle_seconds: float = Field(30.0, gt=0)
    stable_seconds: float = Field(2.0, ge=0)
    job_timeout_seconds: float = Field(300.0, gt=0)
    # IS-Net medium peaks at about 2.2 GB on a 40-megapixel photo; U²-Net-p at about 1.1 GB.
    job_memory_limit_mb: int = Field(3072, gt=0)
    kill_grace_seconds: float = Field(3.0, gt=0, le=5)
    # The ONNX model, by its name in a manifest: the user's models folder
    # (models_dir, by default <root>/models) is searched first, then the bundled one.
    model: str = "u2netp"
    models_dir: Path | None = None
    keep_originals: bool = True
    # Speed. `job_slots` is how many jobs run at once, each a fresh process with
    # its own timeout and memory cap: a whole number, or "auto" (supervisor/slots.py
    # chooses from the cores and the memory). `threads` is onnxruntime's intra-op
    # thread count per job and the PNG encoder's; left unset, the daemon gives each
    # job its share of the usable cores (cores / slots), the in-process tools all of them.
    job_slots: int | Literal["auto"] = "auto"
    threads: int = Field(default_factory=lambda: usable_cores(), ge=1, le=1024)
    providers: Annotated[tuple[str, ...], NoDecode] = ("CPUExecutionProvider",)
    png_compress_level: int = Field(
        1, ge=0, le=9, description="zlib level; 1 is fast, 6 is ~25% smaller and ~4x slower"
    )
    webp_method: int = Field(4, ge=0, le=6, description="libwebp effort: 0 fastest, 6 smallest")
    avif_speed: int = Field(8, ge=0, le=10, description="libavif speed: 10 fastest, 0 smallest")
    # Images above max_megapixels are reduced to fit (the item's status says so) or refused.
    max_megapixels: float = Field(40.0, gt=0)
    large_images: Literal["reduce", "refuse"] = "reduce"
    # A shell command run after each session's ZIP is written, with BGREMOVER_ZIP,
    # BGREMOVER_STATUS and BGREMOVER_SESSION in its environment.
    on_session_complete: str | None = None
    hook_timeout_seconds: float = Field(300.0, gt=0)
    # Prometheus metrics, off unless one is set: an endpoint on 127.0.0.1:<port>/metrics,
    # and/or a file for node_exporter's textfile collector (see README, Metrics).
    metrics_port: int | None = Field(None, ge=1, le=65535)
    metrics_textfile: Path | None = None
    log_format: Literal["auto", "json", "console"] = "auto"
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    # How jobs are run, by a name in the table of bgremover/runners/__init__.py:
    # "local", each job a fresh process on this machine; "celery", each job sent
    # through a Redis broker to `bgremover worker` hosts that mount the same root.
    runner: str = "local"
    # The Redis broker of the celery runner, say redis://broker.lan:6379/0 (README, Several machines).
    broker_url: str | None = None
    # How long Redis waits for a delivered task's acknowledgement before it delivers it
    # again; unset, job_timeout_seconds + kill_grace_seconds + 60 s (a lost worker costs that).
    broker_visibility_timeout_seconds: float | None = Field(None, gt=0)
    # The module run as `python -m <job_module>` for each job. Tests point it at
    # fake job bodies; users have no reason to change it.
    job_module: str = "bgremover.job.process"
    # The web page (`bgremover web`, see README, Web page): the address it listens on,
    # the token it asks for (required on any address but the loopback), and how
    # large an upload may be, per file and per request.
    web_listen: str = "127.0.0.1:8765"
    web_token: SecretStr | None = None
    web_upload_file_mb: float = Field(200.0, gt=0)
    web_upload_request_mb: float = Field(2000.0, gt=0)

    @field_validator("runner")
    @classmethod
    def _a_runner(cls, value: str) -> str:
        from bgremover.runners import RUNNERS  # the table only: no runner is imported until one is chosen

        if value not in RUNNERS:
            raise ValueError(f"must be one of {', '.join(sorted(RUNNERS))}")
        return value

    @model_validator(mode="after")
    def _celery_needs_a_broker(self) -> Settings:
        if self.runner == "celery" and not self.broker_url:
            raise ValueError('runner = "celery" needs broker_url (BGREMOVER_BROKER_URL), say redis://host:6379/0')
        return self

    @field_validator("job_slots", mode="before")
    @classmethod
    def _slots(cls, value: Any) -> Any:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
            raise ValueError('must be a whole number of at least 1, or "auto"')
        return int(text)

    @property
    def threads_given(self) -> bool:
        """Whether `threads` was set (flag, variable or file) rather than left to its default."""
        return "threads" in self.model_fields_set

    @field_validator("background")
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

    @model_validator(mode="after")
    def _jpeg_needs_a_background(self) -> Settings:
        if self.output_format == "jpeg" and self.background == TRANSPARENT and self.output != "mask":
            raise ValueError(
                'output_format "jpeg" cannot keep transparency: set background to a colour, e.g. background = "white"'
            )
        return self

    @field_validator("metrics_textfile")
    @classmethod
    def _prom_suffix(cls, value: Path | None) -> Path | None:
        # node_exporter's textfile collector silently skips any other name.
        if value is not None and value.suffix != ".prom":
            raise ValueError("node_exporter's textfile collector reads only files ending in .prom")
        return value

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: Any) -> Any:
        # BGREMOVER_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider, or a TOML list.
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, (list, tuple)) and (not value or not all(value)):
            raise ValueError("name at least one execution provider, e.g. CPUExecutionProvider")
        return value

    @field_validator("web_listen")
    @classmethod
    def _an_address(cls, value: str) -> str:
        from bgremover.address import parse_listen  # standard library only

        parse_listen(value)
        return value

    # Set by load_settings() before construction; a class attribute because
    # pydantic-settings builds its sources from the class.
    _toml_file: ClassVar[Path | None] = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if cls._toml_file is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=cls._toml_file))
        return tuple(sources)

    # Folders under the root; each has one job in the folder contract.
    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    @property
    def outbox(self) -> Path:
        return self.root / "outbox"

    @property
    def retry_dir(self) -> Path:
        return self.root / "retry"

    @property
    def cancel_dir(self) -> Path:
        return self.root / "cancel"

    @property
    def state_dir(self) -> Path:
        return self.root / "state"

    @property
    def archive_dir(self) -> Path:
        return self.root / "archive"

    @property
    def models_folder(self) -> Path:
        return self.models_dir or self.root / "models"

    @property
    def database(self) -> Path:
        return self.state_dir / "bgremover.sqlite3"


def usable_cores() -> int:
    """The cores this process may run on (a cgroup or taskset can allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    # macOS has no affinity call; Python 3.13's process_cpu_count also honours
    # PYTHON_CPU_COUNT, and a count the OS cannot give counts as one.
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return count or 1


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build Settings from flags, environment and file, or raise SettingsError."""
    path = config or os.environ.get(CONFIG_ENV) or None
    toml_file = Path(path) if path else None
    if toml_file is not None and not toml_file.is_file():
        raise SettingsError(f"config file {toml_file} does not exist")
    flags = {key: value for key, value in overrides.items() if value is not None}
    Settings._toml_file = toml_file
    try:
        settings = Settings(**flags)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
    except ValueError as exc:  # a TOML syntax error surfaces as a ValueError subclass
        raise SettingsError(f"config file {toml_file}: {exc}") from None
    finally:
        Settings._toml_file = None
    models_dir = settings.models_dir.expanduser().absolute() if settings.models_dir else None
    return settings.model_copy(update={"root": settings.root.expanduser().absolute(), "models_dir": models_dir})


def unknown_variables(environ: dict[str, str] | os._Environ) -> list[tuple[str, str | None]]:
    """Each BGREMOVER_ variable that names no setting, with the setting variable it most likely meant (or None).

    The settings read the environment by name, whatever its case, so a typo
    such as BGREMOVER_OUTPUT_FORMATT would otherwise be ignored without a word.
    """
    names = list(Settings.model_fields)
    unknown = []
    for variable in sorted(environ):
        upper = variable.upper()
        if not upper.startswith(ENV_PREFIX) or upper in NOT_SETTINGS or upper.startswith(RESERVED_PREFIXES):
            continue
        name = upper.removeprefix(ENV_PREFIX).lower()
        if name in names:
            continue
        # Compared without the shared prefix, which would make every name look alike.
        close = difflib.get_close_matches(name, names, n=1, cutoff=0.75)
        unknown.append((variable, ENV_PREFIX + close[0].upper() if close else None))
    return unknown


def describe(exc: ValidationError) -> str:
    """One line per bad value: which setting, what is wrong, what was given."""
    lines = []
    for error in exc.errors():
        name = ".".join(str(part) for part in error["loc"])
        if not name:  # a rule between settings: its message names them itself
            lines.append(error["msg"].removeprefix("Value error, "))
            continue
        if error["type"] == "extra_forbidden":
            lines.append(f"unknown setting '{name}'")
            continue
        lines.append(f"bad setting '{name}': {error['msg']} (got {error.get('input')!r})")
    return "\n".join(lines)
