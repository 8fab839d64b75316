"""The job ⇄ daemon contract: what a job is asked to do, and what its exit code means.

Both sides read this module and nothing else of each other's: the supervisor
builds a JobSpec and a runner turns it into the job's command line; the job
turns the command line back into the same JobSpec. The exit codes are the
job's only answer besides its result file, so they are written here once.

Nearly a leaf: it imports only the table of output formats, so the supervisor
can use it without loading numpy or onnxruntime, and the job without loading
the supervisor.
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

from bgremover.formats import FORMAT_EXTENSIONS


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


FORMATS = tuple(sorted(FORMAT_EXTENSIONS))
# The JobSpec fields named as a setting is: those a job ticket may set too, and those only the settings set.
TICKET_OPTIONS = (
    "background",
    "crop",
    "margin",
    "fill",
    "size",
    "edges",
    "decontaminate",
    "quality",
    "png_compress_level",
    "webp_method",
    "avif_speed",
)
SETTING_OPTIONS = ("max_megapixels", "large_images")
KINDS = ("cutout", "mask", "both")
CROPS = ("none", "subject", "square")
EDGES = ("raw", "clean", "refine")
LARGE_IMAGES = ("reduce", "refuse")


@dataclass(frozen=True)
class JobSpec:
    """One job: its input, its outputs, the options of its session and the model to run.

    Each field's metadata says how it is spelled on the job's command line;
    `argv` and `from_argv` are the only places that spelling is used.
    """

    input: Path = field(metadata=option("--input", Path))
    output: Path = field(metadata=option("--output", Path))
    report: Path = field(metadata=option("--report", Path))
    format: str = field(metadata=option("--format", choices=FORMATS))
    quality: int = field(metadata=option("--quality", whole(1, 100)))
    model: str = field(metadata=option("--model"))
    log: Path | None = field(default=None, metadata=option())  # the job's stdout and stderr, set up by the runner
    background: str = field(default="transparent", metadata=option("--background", help='"transparent" or "#rrggbb"'))
    kind: str = field(
        default="cutout",
        metadata=option("--kind", choices=KINDS, help="what OUT holds; with both, the mask goes to --mask"),
    )
    mask: Path | None = field(
        default=None, metadata=option("--mask", Path, help="where the mask goes with --kind both")
    )
    crop: str = field(default="none", metadata=option("--crop", choices=CROPS))
    margin: float = field(default=5.0, metadata=option("--margin", float))
    fill: float = field(default=85.0, metadata=option("--fill", float))
    size: int | None = field(default=None, metadata=option("--size", whole(16, 20000)))
    edges: str = field(default="raw", metadata=option("--edges", choices=EDGES))
    decontaminate: bool = field(
        default=False,
        metadata=option("--decontaminate", _yes_or_no, help="true: the subject's own colour where alpha is partial"),
    )
    models_dir: Path | None = field(default=None, metadata=option("--models-dir", Path))
    threads: int | None = field(default=None, metadata=option("--threads", whole(1, 1024)))
    providers: tuple[str, ...] = field(
        default=("CPUExecutionProvider",),
        metadata=option("--providers", _providers, help="comma-separated onnxruntime execution providers"),
    )
    png_compress_level: int = field(default=1, metadata=option("--png-compress-level", whole(0, 9)))
    webp_method: int = field(default=4, metadata=option("--webp-method", whole(0, 6)))
    avif_speed: int = field(default=8, metadata=option("--avif-speed", whole(0, 10)))
    max_megapixels: float = field(default=40.0, metadata=option("--max-megapixels", float))
    large_images: str = field(default="reduce", metadata=option("--large-images", choices=LARGE_IMAGES))

    def argv(self) -> list[str]:
        """The job's command line; a field that is None is left out."""
        words: list[str] = []
        for spec_field in dataclasses.fields(self):
            flag, value = spec_field.metadata["flag"], getattr(self, spec_field.name)
            if flag is None or value is None:
                continue
            words += [flag, ",".join(value) if isinstance(value, tuple) else str(value)]
        return words

    @classmethod
    def from_argv(cls, argv: list[str] | None, prog: str, description: str) -> JobSpec:
        """The spec back from the job's command line; a bad one exits with ExitCode.BUG."""
        parser = _Parser(prog=prog, description=description)
        for spec_field in dataclasses.fields(cls):
            meta = spec_field.metadata
            if meta["flag"] is None:
                continue
            required = spec_field.default is dataclasses.MISSING
            parser.add_argument(
                meta["flag"],
                dest=spec_field.name,
                type=meta["parse"],
                choices=meta["choices"],
                help=meta["help"],
                required=required,
                **({} if required else {"default": spec_field.default}),
            )
        args = parser.parse_args(argv)
        if args.kind == "both" and args.mask is None:
            parser.error("--kind both needs --mask")
        return cls(**vars(args))


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
