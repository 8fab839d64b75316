"""The job ⇄ daemon contract: what a job is asked to do, and what its exit code means.

Both sides read this module and nothing else of each other's: the supervisor
builds a JobSpec and a runner turns it into the job's command line; the job
turns the command line back into the same JobSpec. The exit codes are the
job's only answer besides its result file, so they are written here once.

Nearly a leaf: it imports only the declaration of the image options, so the
supervisor can use it without loading numpy or onnxruntime, and the job
without loading the supervisor.
"""

from __future__ import annotations

import argparse
import dataclasses
import enum
import json
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from bgremover.options import Declared, ImageOptions, declared


class ExitCode(enum.IntEnum):
    """The job's exit codes. A negative return code is a signal, as Python reports it."""

    DONE = 0  # OUT is complete
    BUG = 1  # anything unexpected: a bug, with its traceback on stderr
    BAD_INPUT = 2  # the file is not an image we can process; retrying cannot help
    # EX_CANTCREAT: the state folder refused the result (ENOSPC, EDQUOT, EROFS, EACCES, EPERM, EFBIG).
    # The image is fine: the supervisor queues it again and holds new jobs until the folder takes writes.
    CANT_WRITE = 73
    # EX_TEMPFAIL: the image is fine but this machine is not (EIO, a model gone missing, no encoder).
    TEMPORARY = 75


def whole(low: int, high: int) -> Callable[[str], int]:
    """An argparse type: a whole number from low to high."""

    def parse(text: str) -> int:
        if not text.isdigit() or not low <= int(text) <= high:
            raise argparse.ArgumentTypeError(f"must be a whole number from {low} to {high}, got {text!r}")
        return int(text)

    return parse


def option(
    flag: str | None = None, parse: Callable[[str], object] | None = None, choices=None, help: str | None = None
) -> dict:
    """How one JobSpec field travels on the command line (no flag: it does not travel)."""
    return {"flag": flag, "parse": parse, "choices": choices, "help": help}


def _yes_or_no(text: str) -> bool:
    """An argparse type: a boolean as argv writes it (True, False), or as a person does (true, false)."""
    if text.lower() not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"must be true or false, got {text!r}")
    return text.lower() == "true"


def _providers(text: str) -> tuple[str, ...]:
    return tuple(text.split(","))


@dataclass(frozen=True)
class JobSpec:
    """One job: its input, its outputs, the options of its session and the model to run.

    Each field's metadata says how it is spelled on the job's command line;
    `argv` and `from_argv` are the only places that spelling is used.
    """

    input: Path = field(metadata=option("--input", Path))
    output: Path = field(metadata=option("--output", Path))
    report: Path = field(metadata=option("--report", Path))
    # What to do with the image: each option travels as its own flag (see option_argument).
    options: ImageOptions = field(default_factory=ImageOptions, metadata=option())
    log: Path | None = field(default=None, metadata=option())  # the job's stdout and stderr, set up by the runner
    mask: Path | None = field(
        default=None, metadata=option("--mask", Path, help="where the mask goes with --kind both")
    )
    # With recipes: where the photo and its mask are kept for a later rerender, the prefix of each
    # recipe's file (PREFIX0, PREFIX1, ...), and what names the files: the item's ZIP member, its
    # session and its place in it.
    matte: Path | None = field(default=None, metadata=option("--matte", Path, help="where the kept matte goes"))
    renders: Path | None = field(
        default=None, metadata=option("--renders", Path, help="each recipe's file is this path and its number")
    )
    member: str | None = field(default=None, metadata=option("--member", help="the item's name in the session's ZIP"))
    session: str | None = field(default=None, metadata=option("--session", help="the item's session"))
    index: int | None = field(
        default=None, metadata=option("--index", whole(1, 1 << 30), help="the item's place in its session")
    )
    loose: Path | None = field(
        default=None, metadata=option("--loose", Path, help="the session's tree of loose files (loose_files)")
    )
    alpha: Path | None = field(
        default=None,
        metadata=option("--alpha", Path, help="a person's mask for this image: the alpha, instead of the model's"),
    )
    models_dir: Path | None = field(default=None, metadata=option("--models-dir", Path))
    review_models_dir: Path | None = field(
        default=None, metadata=option("--review-models-dir", Path, help="where review_model's manifest is")
    )
    threads: int | None = field(default=None, metadata=option("--threads", whole(1, 1024)))
    # OpenVINO's compile cache, under the state folder: shared by every job, so only the first compiles.
    cache_dir: Path | None = field(default=None, metadata=option("--cache-dir", Path))
    # The user's models folder: its manifest holds the checks `precision = "auto"` reads, and the INT8
    # variants, also of a bundled model (whose own folder, inside the package, is never written).
    checks_dir: Path | None = field(default=None, metadata=option("--checks-dir", Path))
    providers: tuple[str, ...] = field(
        default=("CPUExecutionProvider",),
        metadata=option("--providers", _providers, help="comma-separated onnxruntime execution providers"),
    )
    # Which item and attempt of the queue this job is, for a runner that names its jobs (the celery
    # task's id); None for an image run outside the queue. They say whose job it is, not what it does,
    # so the job's own command line leaves them out and two specs of the same work compare equal.
    item: int | None = field(default=None, compare=False, metadata=option())
    attempt: int | None = field(default=None, compare=False, metadata=option())

    def argv(self) -> list[str]:
        """The job's command line; a field or option that is None is left out."""
        words: list[str] = []
        for spec_field in dataclasses.fields(self):
            flag, value = spec_field.metadata["flag"], getattr(self, spec_field.name)
            if flag is not None and value is not None:
                words += [flag, ",".join(value) if isinstance(value, tuple) else str(value)]
        for one in declared(type(self.options)):
            value = getattr(self.options, one.name)
            if value is not None:
                words += [one.job_flag, str(value)]
        return words

    @classmethod
    def from_argv(
        cls, argv: list[str] | None, prog: str, description: str, options: type[ImageOptions] = ImageOptions
    ) -> JobSpec:
        """The spec back from the job's command line; a bad one exits with ExitCode.BUG."""
        parser = _Parser(prog=prog, description=description)
        for spec_field in dataclasses.fields(cls):
            if spec_field.metadata["flag"] is not None:
                parser.add_argument(spec_field.metadata["flag"], dest=spec_field.name, **_field_argument(spec_field))
        group = parser.add_argument_group("image options", "as the settings of the same names")
        for one in declared(options):
            group.add_argument(one.job_flag, dest=OPTION_DEST + one.name, **option_argument(one))
        values = vars(parser.parse_args(argv))
        chosen = options(**{one.name: values.pop(OPTION_DEST + one.name) for one in declared(options)})
        if chosen.output == "both" and values["mask"] is None:
            parser.error("--kind both needs --mask")
        return cls(**values, options=chosen)


OPTION_DEST = "option_"  # the parser's names for the options, apart from the spec's own fields


def _field_argument(spec_field: dataclasses.Field) -> dict:
    meta, required = spec_field.metadata, spec_field.default is dataclasses.MISSING
    default = {} if required else {"default": spec_field.default}
    return {"type": meta["parse"], "choices": meta["choices"], "help": meta["help"], "required": required, **default}


def option_argument(one: Declared) -> dict:
    """How the job's parser reads an image option: its type and range as the declaration gives them."""
    if one.choices is not None:
        parse = None
    elif one.kind is bool:
        parse = _yes_or_no
    elif one.kind is int and {"ge", "le"} <= one.bounds.keys():
        parse = whole(int(one.bounds["ge"]), int(one.bounds["le"]))
    else:
        parse = one.kind
    return {"type": parse, "choices": one.choices, "default": one.default, "help": one.help}


def read_report(path: Path) -> dict:
    """The job's REPORT (its error sentence, a note, the stage timings); {} when it wrote none (killed, or crashed first)."""
    try:
        report = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        # argparse exits 2 on a bad command line, which would read as "bad input";
        # a bad command line is the supervisor's bug.
        self.print_usage(sys.stderr)
        self.exit(ExitCode.BUG, f"{self.prog}: error: {message}\n")
