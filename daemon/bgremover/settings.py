"""The Settings model: every knob of the daemon, validated in one place.

Precedence, highest first: command-line flags (passed as init values), then
`BGREMOVER_<NAME>` environment variables, then the TOML file named by
`--config` or `BGREMOVER_CONFIG`, then the defaults below.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from bgremover.options import settings_model
from bgremover.runnertable import RUNNERS

ENV_PREFIX = "BGREMOVER_"
CONFIG_ENV = "BGREMOVER_CONFIG"
# BGREMOVER_ variables that are not settings but mean something all the same: the
# config file's, and those the on_session_complete hook is given (a hook may run
# bgremover itself). BGREMOVER_TEST_* belong to the test suite's fake jobs.
NOT_SETTINGS = frozenset({CONFIG_ENV, "BGREMOVER_ZIP", "BGREMOVER_STATUS", "BGREMOVER_SESSION"})
RESERVED_PREFIXES = ("BGREMOVER_TEST_",)


class SettingsError(Exception):
    """A bad setting; the message is one line per problem, naming the setting."""


def doc(text: str, *, shown: str | None = None, example: str | None = None, internal: bool = False) -> dict:
    """A setting's entry in docs/settings.md and config/bgremover.toml (python -m bgremover.settingsdocs writes both).

    `shown`: its default as the docs say it, where the value alone would
    mislead; `example`: a TOML value shown commented out where the default is
    unset; `internal`: left out of both (for the test suite only).
    """
    return {"json_schema_extra": {"doc": text, "shown": shown, "example": example, "internal": internal}}


class QueueSettings(BaseModel):
    """Folders, sessions and originals."""

    root: Path = Field(
        Path("./data"),
        **doc(
            "the folder holding `inbox/`, `outbox/` and the other [folders](../README.md#the-folders)", shown="./data"
        ),
    )
    max_session_items: int = Field(100, ge=1, **doc("images per session before spilling into `NAME-2`"))
    session_idle_seconds: float = Field(30.0, gt=0, **doc("a session closes after this long without a new file"))
    stable_seconds: float = Field(2.0, ge=0, **doc("a file is taken once unchanged this long"))
    keep_originals: bool = Field(
        True,
        **doc(
            "archive originals of complete sessions; `false` deletes each original once its cutout is in the ZIP "
            "(failed items keep theirs for a retry)"
        ),
    )
    review_folder: bool = Field(
        False,
        **doc(
            "put the outputs of items a quality signal flagged, and no one has approved yet, in a `_review/` folder "
            "of the session's ZIP, so a team that never opens the page still sees which to look at"
        ),
    )
    # Days, but fractions count: a test or a tight disk can ask for seconds-scale history.
    keep_sessions_days: float = Field(
        30.0,
        ge=0,
        **doc(
            "a complete session is forgotten this many days after it completed: its rows leave the database and its "
            "files leave `state/`; a failed or cancelled item's original is moved to `archive/SESSION/` first, and its "
            "retry marker no longer works. `0` keeps every session forever; see "
            "[How long things are kept](folders-and-markers.md#how-long-things-are-kept)"
        ),
    )
    keep_outbox_days: float = Field(
        0.0,
        ge=0,
        **doc(
            "a complete session's `SESSION.zip` and `SESSION.json` in `outbox/`, and its `archive/SESSION/` folder, "
            "are deleted this many days after they were last written, never while one of its items can still be "
            "retried. `0` (the default) never deletes them: the daemon cannot tell whether a user has collected them"
        ),
    )


class JobsSettings(BaseModel):
    """Each image's process: its limits, its model files and its speed."""

    job_timeout_seconds: float = Field(300.0, gt=0, **doc("a job running longer is killed and its item fails"))
    # IS-Net medium peaks at about 2.2 GB on a 40-megapixel photo; U²-Net-p at about 1.1 GB.
    job_memory_limit_mb: int = Field(3072, gt=0, **doc("a job using more resident memory is killed and its item fails"))
    kill_grace_seconds: float = Field(
        3.0, gt=0, le=5, **doc("between asking a job to stop (SIGTERM) and killing it (at most 5)")
    )
    models_dir: Path | None = Field(
        None,
        **doc(
            "the folder holding your own models and their `manifest.json`",
            shown="ROOT/models",
            example='"/srv/bgremover-models"',
        ),
    )
    job_slots: int | Literal["auto"] = Field(
        "auto",
        **doc(
            "how many jobs run at once, each a fresh process with its own `job_timeout_seconds` and "
            "`job_memory_limit_mb`: a whole number of at least 1, or `auto` (one a usable core, no more than the "
            "memory available at start-up holds at `job_memory_limit_mb` each, less 512 MB); `--job-slots` on "
            "`run`; see [Several jobs at once](../README.md#several-jobs-at-once)"
        ),
    )
    threads: int = Field(
        default_factory=lambda: usable_cores(),
        ge=1,
        le=1024,
        **doc(
            "onnxruntime's threads per job, and the PNG encoder's; default: the cores this process may use divided "
            "among the job slots (at least 1); `remove` and the bench's in-process loop use them all",
            shown="cores ÷ slots",
            example="2",
        ),
    )
    providers: Annotated[tuple[str, ...], NoDecode] = Field(
        ("CPUExecutionProvider",),
        **doc(
            "onnxruntime execution providers (`BGREMOVER_PROVIDERS=A,B`); one that cannot run here stops start-up, "
            "never a silent fall-back"
        ),
    )
    # The module run as `python -m <job_module>` for each job: tests point it at fake job bodies.
    job_module: str = Field("bgremover.job.process", **doc("the job's module", internal=True))

    @field_validator("job_slots", mode="before")
    @classmethod
    def _slots(cls, value: Any) -> Any:
        text = str(value).strip().lower()
        if text == "auto":
            return "auto"
        if isinstance(value, bool) or not text.isdigit() or int(text) < 1:
            raise ValueError('must be a whole number of at least 1, or "auto"')
        return int(text)

    @field_validator("providers", mode="before")
    @classmethod
    def _split_providers(cls, value: Any) -> Any:
        # BGREMOVER_PROVIDERS=CUDAExecutionProvider,CPUExecutionProvider, or a TOML list.
        if isinstance(value, str):
            value = [part.strip() for part in value.split(",")]
        if isinstance(value, (list, tuple)) and (not value or not all(value)):
            raise ValueError("name at least one execution provider, e.g. CPUExecutionProvider")
        return value


class HooksSettings(BaseModel):
    """What runs when a session is complete."""

    on_session_complete: str | None = Field(
        None,
        **doc(
            "a shell command run after each session's ZIP is written, with `BGREMOVER_ZIP`, `BGREMOVER_STATUS` and "
            "`BGREMOVER_SESSION` in its environment; see [Hooks](../README.md#hooks)",
            example="'cp \"$BGREMOVER_ZIP\" /srv/shipped/'",
        ),
    )
    hook_timeout_seconds: float = Field(
        300.0, gt=0, **doc("a hook running longer is killed, with everything it started")
    )


class ObservabilitySettings(BaseModel):
    """Metrics and logs."""

    metrics_port: int | None = Field(
        None,
        ge=1,
        le=65535,
        **doc(
            "serve Prometheus metrics at `http://127.0.0.1:PORT/metrics` (1–65535); see [Metrics](../README.md#metrics)",
            example="9101",
        ),
    )
    metrics_textfile: Path | None = Field(
        None,
        **doc(
            "a file ending in `.prom` for node_exporter's textfile collector, rewritten every second; "
            "see [Metrics](../README.md#metrics)",
            example='"/var/lib/node_exporter/textfile_collector/bgremover.prom"',
        ),
    )
    log_format: Literal["auto", "json", "console"] = Field(
        "auto", **doc("`json`, `console`, or `auto` (JSON unless stderr is a terminal)")
    )
    log_level: Literal["debug", "info", "warning", "error"] = Field(
        "info", **doc("`debug`, `info`, `warning`, `error`")
    )

    @field_validator("metrics_textfile")
    @classmethod
    def _prom_suffix(cls, value: Path | None) -> Path | None:
        # node_exporter's textfile collector silently skips any other name.
        if value is not None and value.suffix != ".prom":
            raise ValueError("node_exporter's textfile collector reads only files ending in .prom")
        return value


class RunnerSettings(BaseModel):
    """How jobs are run: on this machine, or on worker hosts."""

    runner: str = Field(
        "local",
        **doc(
            "how jobs are run: `local`, each image in a fresh process on this machine, forked by the fork server; "
            "`celery`, each image sent through a Redis broker to `bgremover worker` hosts on the same root (README, "
            "Several machines; the table of runners is `daemon/bgremover/runnertable.py`)"
        ),
    )
    broker_url: SecretStr | None = Field(
        None,
        **doc(
            "the Redis broker of the `celery` runner, say `redis://:SECRET@broker.lan:6379/0`; required with it "
            "(or `broker_url_file`). Its password is never shown: logs and `bgremover status` print `***`",
            example='"redis://broker.lan:6379/0"',
        ),
    )
    broker_url_file: Path | None = Field(
        None,
        **doc(
            "a file whose first line is `broker_url`, so the password stays out of the config, the environment and "
            "`ps`: say `/etc/bgremover/broker-url`, mode 0600, or `%d/broker-url` with systemd's `LoadCredential=`; "
            "not both",
            example='"/etc/bgremover/broker-url"',
        ),
    )
    broker_visibility_timeout_seconds: float | None = Field(
        None,
        gt=0,
        **doc(
            "how long Redis waits for a delivered task's acknowledgement before it delivers the task again (to "
            "another worker); the fence refuses the duplicate",
            shown="job_timeout_seconds + kill_grace_seconds + 60",
            example="180",
        ),
    )

    @field_validator("runner")
    @classmethod
    def _a_runner(cls, value: str) -> str:
        if value not in RUNNERS:
            raise ValueError(f"must be one of {', '.join(sorted(RUNNERS))}")
        return value

    @model_validator(mode="after")
    def _celery_needs_a_broker(self) -> RunnerSettings:
        if self.broker_url_file is not None:
            if self.broker_url is not None:
                raise ValueError("broker_url and broker_url_file are both set: keep one")
            from bgremover.brokerurl import read  # standard library only

            self.broker_url = SecretStr(read(self.broker_url_file))
        if self.runner == "celery" and not self.broker_url:
            raise ValueError(
                'runner = "celery" needs broker_url (BGREMOVER_BROKER_URL) or broker_url_file, say redis://host:6379/0'
            )
        return self


class WebSettings(BaseModel):
    """The web page, `bgremover web`."""

    web_listen: str = Field(
        "127.0.0.1:8765",
        **doc(
            "where `bgremover web` listens, as `HOST:PORT` (`[::1]:8765` for IPv6; port 0 picks a free one); any "
            "address but the loopback needs `web_token`, else the page refuses to start (exit code 2); see "
            "[Web page](../README.md#web-page)"
        ),
    )
    web_token: SecretStr | None = Field(
        None,
        **doc(
            "the access code of the web page, at least 16 characters; once set, every request needs it (the page's "
            "sign-in form, or `Authorization: Bearer TOKEN`)",
            example="\"paste the output of: python3 -c 'import secrets; print(secrets.token_urlsafe(24))'\"",
        ),
    )
    web_session_hours: float = Field(
        168.0,
        gt=0,
        **doc(
            "how long a sign-in on the page's form lasts, in hours; then the browser is asked for the access code "
            "again. Changing `web_token` signs every browser out at once"
        ),
    )
    web_upload_file_mb: float = Field(
        200.0,
        gt=0,
        **doc(
            "the largest file the web page takes, in MB; a larger one is refused (413) and nothing of that upload is kept"
        ),
    )
    web_upload_request_mb: float = Field(
        2000.0, gt=0, **doc("the most one upload may carry in all, in MB; likewise refused (413)")
    )

    @field_validator("web_listen")
    @classmethod
    def _an_address(cls, value: str) -> str:
        from bgremover.address import parse_listen  # standard library only

        parse_listen(value)
        return value


# The sections, in the order the docs and the example config show them; each validates its own fields.
ImageSettings = settings_model()
SECTIONS = {
    "Image options": ImageSettings,
    "Queue": QueueSettings,
    "Jobs": JobsSettings,
    "Hooks": HooksSettings,
    "Observability": ObservabilitySettings,
    "Runner": RunnerSettings,
    "Web": WebSettings,
}


class Settings(
    WebSettings,
    RunnerSettings,
    ObservabilitySettings,
    HooksSettings,
    JobsSettings,
    QueueSettings,
    ImageSettings,
    BaseSettings,
):
    """Every setting, flat: one BGREMOVER_<NAME> variable and one top-level TOML key each, whatever its section.

    The sections are listed last to first, because pydantic puts the fields of the last base first.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", validate_default=True)

    @property
    def threads_given(self) -> bool:
        """Whether `threads` was set (flag, variable or file) rather than left to its default."""
        return "threads" in self.model_fields_set

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
    def review_dir(self) -> Path:
        return self.root / "review"

    @property
    def cancel_dir(self) -> Path:
        return self.root / "cancel"

    @property
    def uploaded_dir(self) -> Path:
        return self.root / "uploaded"

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

    @property
    def compile_cache(self) -> Path:
        """OpenVINO's compiled models, shared by every job of this root (made on first use)."""
        return self.state_dir / "openvino"


def usable_cores() -> int:
    """The cores this process may run on (a cgroup or taskset can allow fewer than the machine has)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    # macOS has no affinity call; Python 3.13's process_cpu_count also honours
    # PYTHON_CPU_COUNT, and a count the OS cannot give counts as one.
    count = getattr(os, "process_cpu_count", os.cpu_count)()
    return count or 1


def reading(toml_file: Path | None) -> type[Settings]:
    """Settings whose sources are the flags (init values), the environment and `toml_file`, highest first.

    A class made for each load, because pydantic-settings builds its sources
    from the class: a file named on the class itself would be shared by every load.
    """

    class FromSources(Settings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            if toml_file is None:
                return init_settings, env_settings
            return init_settings, env_settings, TomlConfigSettingsSource(settings_cls, toml_file=toml_file)

    return FromSources


def load_settings(config: Path | str | None = None, **overrides: Any) -> Settings:
    """Build Settings from flags, environment and file, or raise SettingsError."""
    path = config or os.environ.get(CONFIG_ENV) or None
    toml_file = Path(path) if path else None
    if toml_file is not None and not toml_file.is_file():
        raise SettingsError(f"config file {toml_file} does not exist")
    flags = {key: value for key, value in overrides.items() if value is not None}
    try:
        settings = reading(toml_file)(**flags)
    except ValidationError as exc:
        raise SettingsError(describe(exc)) from None
    except ValueError as exc:  # a TOML syntax error surfaces as a ValueError subclass
        raise SettingsError(f"config file {toml_file}: {exc}") from None
    settings = Settings.model_construct(settings.model_fields_set, **dict(settings))  # validated already
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
