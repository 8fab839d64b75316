"""One image, one process: `python -m daemon.job --input IN --output OUT --report REPORT ...`.

The supervisor starts this per item and trusts only two things: the exit code
and OUT, which appears (by rename) only once complete. REPORT adds the error
sentence and the stage timings.

Exit codes:
  0   done: OUT is complete.
  2   bad input: the file is not an image we can process; retrying cannot help.
  75  temporary failure (EX_TEMPFAIL): the image is fine but this machine is
      not. An OSError reading the input or writing the result (ENOSPC, EROFS,
      EACCES, EIO), a ModelError (the model file went missing or broken after
      the supervisor verified it at start-up), or no encoder for the format.
      The same item can succeed once someone fixes the machine.
  1   anything else: a bug; the traceback is on stderr.
  A job stopped by SIGTERM still removes its temp file, then dies by SIGTERM
  itself so the supervisor sees a negative return code as for any signal.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import traceback
from pathlib import Path

from daemon import matting, outbox

EXIT_OK, EXIT_BUG, EXIT_BAD_INPUT, EXIT_TEMPFAIL = 0, 1, 2, 75


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:
        # argparse exits 2 on a bad command line, which would read as "bad input";
        # a bad command line is the supervisor's bug.
        self.print_usage(sys.stderr)
        self.exit(EXIT_BUG, f"{self.prog}: error: {message}\n")


class Terminated(BaseException):
    """Raised from the SIGTERM handler so `finally` blocks clean up on the way out."""


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = _Parser(prog="python -m daemon.job", description=__doc__.splitlines()[0])
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--report", type=Path, required=True)
    parser.add_argument("--format", choices=sorted(matting.FORMAT_EXTENSIONS), required=True)
    parser.add_argument("--quality", type=_quality, metavar="1..100", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--models-dir", type=Path, default=None)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_terminated)
    timings: dict[str, float] = {}
    try:
        timings = run(args)
    except matting.BadInput as exc:
        return finish(args.report, EXIT_BAD_INPUT, str(exc))
    except (matting.ModelError, matting.EncoderUnavailable) as exc:
        return finish(args.report, EXIT_TEMPFAIL, str(exc))
    except OSError as exc:
        return finish(args.report, EXIT_TEMPFAIL, describe_os_error(exc, args.input))
    except Terminated:
        # The temp file is gone (run's finally); now die the way the supervisor expects.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return EXIT_BUG  # not reached
    except Exception as exc:
        traceback.print_exc()
        return finish(args.report, EXIT_BUG, f"unexpected error: {type(exc).__name__}: {exc}", quiet=True)
    return finish(args.report, EXIT_OK, None, timings)


def run(args: argparse.Namespace) -> dict[str, float]:
    """Write the result to a temp file beside OUT, make it durable, then rename it to OUT."""
    spec = matting.load_model_spec(args.model, args.models_dir, verify=False)  # verified at daemon start-up
    session = matting.create_session(spec)
    temp = args.output.with_name(f".tmp-{args.output.name}")
    try:
        timings = matting.remove_background(args.input, temp, args.format, args.quality, session, spec)
        publish(temp, args.output)
    finally:
        temp.unlink(missing_ok=True)  # after a successful publish it no longer exists
    return timings


def publish(temp: Path, final: Path) -> None:
    """fsync the data, rename over `final`, fsync the folder: after a crash OUT is whole or absent."""
    fd = os.open(temp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temp, final)
    outbox.fsync_folder(final.parent)  # the rename itself lives in the directory


def write_report(path: Path, error: str | None, timings: dict[str, float]) -> None:
    report = {"error": error, "timings_ms": timings}
    outbox.atomic_write(path, (json.dumps(report, indent=1) + "\n").encode("utf-8"))


def finish(
    report: Path, code: int, error: str | None, timings: dict[str, float] | None = None, quiet: bool = False
) -> int:
    """Write the report and say the error on stderr; the exit code stands even if the report fails."""
    if error and not quiet:
        print(error, file=sys.stderr)
    try:
        write_report(report, error, timings or {})
    except OSError as exc:
        print(f"could not write the report {report}: {exc.strerror or exc}", file=sys.stderr)
    return code


def describe_os_error(exc: OSError, source: Path) -> str:
    reason = exc.strerror or str(exc)
    if exc.filename is not None and Path(exc.filename) == source:
        return f"could not read the input: {reason}"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"could not write the result: {reason}{where}"


def _quality(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 100:
        raise argparse.ArgumentTypeError(f"must be a whole number from 1 to 100, got {text!r}")
    return int(text)


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


if __name__ == "__main__":
    sys.exit(main())
