"""One image, one process: `python -m bgremover.job --input IN --output OUT --report REPORT ...`.

The supervisor runs this once per item, in a fresh process forked from the
fork server (runners/forkserver.py) through `preload`, `prepare` and `main`; run
as a command it does all three itself. Either way the supervisor trusts only
two things: the exit code and OUT, which appears (by rename) only once
complete. REPORT adds the error sentence, a note for the user (an image
reduced to fit max_megapixels) and the stage timings.

Its exit codes are the table in bgremover/contract.py (ExitCode). A job
stopped by SIGTERM still removes its temp file, then dies by SIGTERM itself so
the supervisor sees a negative return code as for any signal.
"""

from __future__ import annotations

import ctypes
import dataclasses
import json
import os
import signal
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import onnxruntime

from bgremover import durable
from bgremover.backoff import is_storage_error
from bgremover.contract import ExitCode, JobSpec
from bgremover.imaging import matting
from bgremover.job import renders
from bgremover.models import paths
from bgremover.models.manifest import ModelSpec
from bgremover.models.runtime import open_path
from bgremover.options import values_of
from bgremover.outbox.zips import mask_member


class Terminated(BaseException):
    """Raised from the SIGTERM handler so `finally` blocks clean up on the way out."""


def parse_args(argv: list[str] | None) -> JobSpec:
    return JobSpec.from_argv(argv, prog="python -m bgremover.job", description=__doc__.splitlines()[0])


# ---------------------------------------------------------------- the fork server's hooks


@dataclass(frozen=True)
class Shared:
    """What every job of a daemon shares, loaded once in the fork server."""

    spec: ModelSpec
    optimized: bytes | None  # the model as onnxruntime optimized it on this machine
    threads: int | None
    providers: tuple[str, ...]
    error: str | None = None  # why this model cannot run here; each job then fails with it
    path: paths.InferencePath | None = None  # the backend, precision and file the jobs run
    asked: tuple[str, str] = ("onnxruntime", "fp32")  # the backend and precision the settings or ticket named
    cache_dir: Path | None = None  # OpenVINO's compile cache, shared by every job
    checks_dir: Path | None = None  # the models folder holding the checks and INT8 variants
    session: onnxruntime.InferenceSession | None = None  # made here, never run: see held_session

    def failed(self, error: str) -> Shared:
        return dataclasses.replace(self, optimized=None, error=error, session=None)


LARGEST_INPUT_FOR_HUGE_PAGES = 512 * 512  # model input pixels; see fit_huge_pages
PR_SET_THP_DISABLE = 41  # from <linux/prctl.h>

# Every model the fork server has loaded for a spawn request, by (name, folder,
# sha256, backend, precision): each is read and optimized once, and shared by every
# job forked after that; a file replaced under the same name is a new model.
_variants: dict[tuple[str, str, str, str, str], Shared] = {}


@dataclass
class Prepared:
    """A fresh process's own session, made before it is given an image."""

    shared: Shared
    session: onnxruntime.InferenceSession | None
    error: str | None = None

    @property
    def model_session(self) -> str:
        """ "inherited": the one the fork server made (held_session); "own": made by this process."""
        return "inherited" if self.session is not None and self.session is self.shared.session else "own"

    def describe(self) -> dict:
        """What this process will actually run on, for the supervisor's start-up log."""
        if self.session is None:
            return {"error": self.error}
        if hasattr(self.session, "describe"):  # OpenVINO's
            return self.session.describe()
        options = self.session.get_session_options()
        return {
            "backend": "onnxruntime",
            "model_session": self.model_session,
            "providers": self.session.get_providers(),
            "intra_op_threads": options.intra_op_num_threads,
            "onnxruntime": onnxruntime.__version__,
            "precision": self.shared.path.precision if self.shared.path else "fp32",
        }


def preload(config: dict, optimize: bool = True) -> Shared:
    """In the fork server: refuse what cannot work, and optimize the model once for every job."""
    providers = tuple(config.get("providers") or (matting.CPU,))
    matting.check_providers(providers)
    models_dir = Path(config["models_dir"]) if config.get("models_dir") else None
    spec = matting.load_model_spec(config["model"], models_dir, verify=False)  # verified by the supervisor
    matting.ensure_encoder(config.get("format", "png"))
    matting.edges.preload()  # any folder's ticket may ask for clean edges
    # Any folder's ticket may ask for recipes too; the settings' own are checked now, so a typo stops start-up.
    renders.preload(config.get("recipes") or "", config.get("recipes_file"))
    asked = (config.get("backend", "onnxruntime"), config.get("precision", "fp32"))
    cache_dir, checks_dir = (Path(config[key]) if config.get(key) else None for key in ("cache_dir", "checks_dir"))
    path = chosen_path(spec, asked, checks_dir)
    optimized = optimized_in_child(spec, providers, path) if optimize else None
    threads = config.get("threads")
    session = held_session(spec, providers, path, threads, optimized)
    return Shared(spec, optimized, threads, providers, None, path, asked, cache_dir, checks_dir, session)


def chosen_path(spec: ModelSpec, asked: tuple[str, str], checks_dir: Path | None) -> paths.InferencePath:
    """The path the jobs run (reading the manifest's checks only: OpenVINO is not imported here)."""
    path = paths.choose(spec, checks_dir or spec.path.parent, *asked)
    if path.backend == "openvino":
        from bgremover.models.openvino_session import missing  # looks, does not import OpenVINO

        if missing():
            raise matting.ModelError(missing())
    return path


def variant(shared: Shared, request: dict) -> Shared:
    """In the fork server: what a job of the requested model shares (a job ticket may name another model).

    Never raises: the fork server must outlive a model that cannot load, and
    the jobs asking for it fail with the sentence instead.
    """
    asked = (request.get("backend", "onnxruntime"), request.get("precision", "fp32"))
    key = (request["model"], request["models_dir"], request["sha256"], *asked)
    if key == (shared.spec.name, str(shared.spec.path.parent), shared.spec.sha256, *shared.asked):
        return shared
    if key not in _variants:
        try:
            spec = matting.load_model_spec(request["model"], Path(request["models_dir"]), verify=False)
            if spec.sha256 != request["sha256"]:  # replaced between the supervisor's check and now
                raise matting.ModelError(f"model file {spec.path} changed while the daemon ran; retry the item")
            path = chosen_path(spec, asked, shared.checks_dir)
            optimized = optimized_in_child(spec, shared.providers, path)
            # No held session: see held_session.
            _variants[key] = dataclasses.replace(
                shared, spec=spec, optimized=optimized, path=path, asked=asked, error=None, session=None
            )
        except (matting.ModelError, OSError) as exc:
            return shared.failed(str(exc))  # not kept: may be fixed
    return _variants[key]


def optimized_in_child(spec: ModelSpec, providers: tuple[str, ...], path: paths.InferencePath) -> bytes | None:
    """matting.optimize, run in a child: a model onnxruntime chokes on takes the child down, not the fork server.

    The server makes its own session (held_session) only from the graph this
    child saved. None for OpenVINO: its compile cache does that work, in the job processes.
    """
    if path.backend != "onnxruntime":
        return None
    spec = dataclasses.replace(spec, path=path.file)
    with tempfile.TemporaryDirectory(prefix="bgremover-") as folder:
        target = Path(folder) / "optimized.onnx"
        pid = os.fork()
        if pid == 0:
            code = ExitCode.BUG
            try:
                matting.optimize(spec, providers, target)
                code = ExitCode.DONE
            except matting.ModelError as exc:
                print(exc, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - shown, then the exit code says it failed
                traceback.print_exc()
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        if os.waitstatus_to_exitcode(status) != ExitCode.DONE or not target.is_file():
            raise matting.ModelError(f"onnxruntime could not optimize the model {spec.path} (see the log above)")
        return target.read_bytes()


def held_session(
    spec: ModelSpec, providers: tuple[str, ...], path: paths.InferencePath, threads: int | None, optimized: bytes | None
) -> onnxruntime.InferenceSession | None:
    """In the fork server: the session every job inherits with its fork, or None where each job makes its own.

    Making a session costs a job about 40 ms of CPU for U²-Net-p and 0.3 s for
    U²-Net or IS-Net (reading the graph, packing the weights for this CPU's
    kernels), which is 10 to 15 % of a whole U²-Net job. Made once here and
    never run here, it reaches each job as a private copy-on-write copy: a job
    that damages its session damages only its own. Only where the session holds
    no thread (a process that forks must have none): onnxruntime on the CPU
    alone, one thread per job; with more threads onnxruntime starts a pool, and
    OpenVINO starts threads at import.

    Only for the daemon's own model, not for one a job ticket names: all the
    server holds is mapped into every job, and so counted in each job's memory
    against job_memory_limit_mb; a session for every model ever asked for
    would count them all against every job.
    """
    if path.backend != "onnxruntime" or threads != 1 or tuple(providers) != (matting.CPU,) or optimized is None:
        return None
    try:
        return matting.create_session(dataclasses.replace(spec, path=path.file), 1, providers, optimized)
    except matting.ModelError:
        return None  # each job makes its own and fails with the sentence


def fit_huge_pages(spec: ModelSpec) -> None:
    """Keep this process off transparent huge pages if the model's working memory is too big for them.

    The fork server asks malloc for huge pages (runners/forkserver.py): a fresh
    process then faults its working memory in 2 MB pieces instead of 4 kB ones.
    Measured through the daemon on 2000×1500 photos, that made U²-Net-p's jobs
    about 15 % cheaper and U²-Net's about even; but IS-Net at 1024×1024 needs
    some 1.4 GB, more than the kernel keeps in free 2 MB blocks, so it compacts
    memory to make them and its jobs took about 9 % longer. Such a model's job
    turns huge pages off for itself.
    """
    width, height = spec.input_size
    if width * height > LARGEST_INPUT_FOR_HUGE_PAGES:
        try:
            ctypes.CDLL(None).prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0)
        except (OSError, AttributeError):  # not Linux's C library: nothing asked for huge pages either
            pass


def prepare(shared: Shared) -> Prepared:
    """In the fresh child: the session it inherited, else its own, with its own threads (threads do not survive a fork)."""
    fit_huge_pages(shared.spec)
    if shared.error:
        return Prepared(shared, None, shared.error)
    if shared.session is not None:
        return Prepared(shared, shared.session)
    path = shared.path or paths.InferencePath("onnxruntime", "fp32", shared.spec.path)
    if path.backend == "openvino":
        from bgremover.models.openvino_session import leave_out_conversion_tools  # never in the fork server

        leave_out_conversion_tools()
    try:
        session = open_path(shared.spec, path, shared.threads, shared.providers, shared.optimized, shared.cache_dir)
    except matting.ModelError as exc:
        return Prepared(shared, None, str(exc))
    return Prepared(shared, session)


def warm(prepared: Prepared) -> None:
    """Run the model once on a blank input, so the first real run finds its working memory in place."""
    if prepared.session is not None:
        spec = prepared.shared.spec
        matting.infer(prepared.session, matting.blank_input(spec), spec)


# ---------------------------------------------------------------- the job


def main(argv: list[str] | None = None, prepared: Prepared | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _raise_terminated)
    outcome = matting.Outcome()
    try:
        prepared = matching(prepared, args)
        if prepared.error:
            raise matting.ModelError(prepared.error)
        outcome = run(args, prepared)
    except matting.BadInput as exc:
        return finish(args.report, ExitCode.BAD_INPUT, str(exc))
    except renders.Unusable as exc:
        # The recipes changed since the session opened (its user file, say): the image is fine.
        return finish(args.report, ExitCode.TEMPORARY, str(exc))
    except (matting.ModelError, matting.EncoderUnavailable) as exc:
        return finish(args.report, ExitCode.TEMPORARY, str(exc))
    except OSError as exc:
        code = ExitCode.CANT_WRITE if is_storage_error(exc) and not reading(exc, args.input) else ExitCode.TEMPORARY
        return finish(args.report, code, describe_os_error(exc, args.input))
    except Terminated:
        # The temp file is gone (run's finally); now die the way the supervisor expects.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return ExitCode.BUG  # not reached
    except Exception as exc:  # noqa: BLE001 - a bug of ours: shown, then one sentence and the BUG exit code
        traceback.print_exc()
        return finish(args.report, ExitCode.BUG, f"unexpected error: {type(exc).__name__}: {exc}", quiet=True)
    return finish(args.report, ExitCode.DONE, None, outcome)


def matching(prepared: Prepared | None, args: JobSpec) -> Prepared:
    """The prepared session if it fits this job's model, else one made now (a job run by hand)."""
    asked = (args.options.backend, args.options.precision)
    if prepared is not None and prepared.shared.spec.name == args.options.model and prepared.shared.asked == asked:
        return prepared
    config = {
        "model": args.options.model,
        "models_dir": args.models_dir,
        "backend": args.options.backend,
        "precision": args.options.precision,
        "cache_dir": args.cache_dir,
        "checks_dir": args.checks_dir,
        "threads": args.threads,
        "providers": list(args.providers),
        "format": args.options.output_format,
    }
    return prepare(preload(config, optimize=False))  # one session: optimizing first would only add time


def options_from(spec: JobSpec) -> matting.Options:
    return matting.Options(**values_of(spec.options), threads=spec.threads or 1)


def run(args: JobSpec, prepared: Prepared) -> matting.Outcome:
    """Write the result to a temp file beside OUT, make it durable, then rename it to OUT.

    With --kind both the mask is published first: once OUT exists, so does its mask.
    With recipes, the matte and every recipe's file are published before OUT too,
    all from the one inference; the report lists each recipe's file or error.
    """
    recipes = renders.load(args.options.recipes, args.options.recipes_file) if args.options.recipes else []
    temp = durable.temp_path(args.output)
    mask = args.mask if args.options.output == "both" else None
    mask_temp = durable.temp_path(mask) if mask else None
    model = Counted(prepared.session)
    entries: list[dict] = []
    then = rendering(args, recipes, entries) if recipes else None
    try:
        outcome = matting.remove_background(
            args.input, temp, model, prepared.shared.spec, options_from(args), mask_temp, then,
            alpha=args.alpha, second=second_model(args, prepared),
        )  # fmt: skip
        started = time.perf_counter()
        if mask:
            durable.publish(mask_temp, mask)
        durable.publish(temp, args.output)
        outcome.timings_ms["publish"] = round((time.perf_counter() - started) * 1000, 2)
    finally:
        for leftover in (temp, mask_temp):
            if leftover:
                leftover.unlink(missing_ok=True)  # after a successful publish it no longer exists
    outcome.extra.update(inferences=model.runs, model_session=prepared.model_session)
    if recipes:
        outcome.extra["recipes"] = entries
    if args.loose is not None:
        deliver_loose(args, entries, outcome)
    return outcome


def rendering(args: JobSpec, recipes: list, entries: list[dict]) -> matting.Then:
    """What the job does with the unframed cutout: keep it as the matte, then render each recipe from it."""
    naming = renders.Naming(args.member or args.output.name, args.session or "", args.index or 1)

    def keep(number: int, member: str, data: bytes) -> None:
        durable.atomic_write(renders.render_path(args.renders, number), data)

    def then(rgba, icc: bytes | None, lap) -> None:
        if args.matte is not None:
            renders.write_matte(rgba, icc, args.matte, args.threads or 1)
            lap("matte")
        write = keep if args.renders else _nowhere
        entries.extend(renders.render_each(rgba, icc, recipes, naming, write, args.threads or 1))
        lap("render")

    return then


def _nowhere(number: int, member: str, data: bytes) -> None:
    pass


def deliver_loose(args: JobSpec, entries: list[dict], outcome: matting.Outcome) -> None:
    """The item's files into the session's loose tree, each renamed into place whole.

    After OUT is published, so the item is done whatever happens here: a loose
    tree that refuses a file costs a note, never the item (the ZIP still has it).
    """
    member = args.member or args.output.name
    files: list[tuple[str, Path]] = [(member, args.output)]
    if args.options.output == "both" and args.mask is not None:
        files.append((mask_member(member), args.mask))
    files += [(e["file"], renders.render_path(args.renders, n)) for n, e in enumerate(entries) if e["file"]]
    try:
        for name, source in files:
            if args.loose.joinpath(*name.split("/")).absolute() != source.absolute():  # `remove -o`: there already
                renders.deliver(args.loose, name, source)
    except OSError as exc:
        note = f"the loose files could not be written ({exc.strerror or exc}); the ZIP has them"
        outcome.note = f"{outcome.note}; {note}" if outcome.note else note


class Counted:
    """The model's session, counting its runs: the report says how many inferences the job made."""

    def __init__(self, session: onnxruntime.InferenceSession | None) -> None:
        self.session = session
        self.runs = 0

    def run(self, *args, **kwargs):
        self.runs += 1
        return self.session.run(*args, **kwargs)

    def __getattr__(self, name: str):
        return getattr(self.session, name)


def second_model(args: JobSpec, prepared: Prepared) -> matting.Second | None:
    """The review's second model, made only if this image needs it (review_compare, or review_escalate on a flag)."""
    options = args.options
    if not options.review_model or not (options.review_compare or options.review_escalate):
        return None

    def make() -> tuple[onnxruntime.InferenceSession, ModelSpec]:
        # Checked by the supervisor, which found it there (review_models_dir); a job run by hand looks it up.
        spec = matting.find_model_spec(options.review_model, args.review_models_dir, verify=False)
        fit_huge_pages(spec)
        return matting.create_session(spec, args.threads, prepared.shared.providers), spec

    return matting.Second(make, compare=options.review_compare, escalate=options.review_escalate)


def write_report(path: Path, error: str | None, outcome: matting.Outcome) -> None:
    note = "; ".join(filter(None, (outcome.note, outcome.escalated))) or None
    report = {"error": error, "note": note, "timings_ms": outcome.timings_ms, "review": outcome.review}
    report.update(outcome.extra)
    durable.atomic_write(path, (json.dumps(report, indent=1) + "\n").encode("utf-8"))


def finish(
    report: Path, code: int, error: str | None, outcome: matting.Outcome | None = None, quiet: bool = False
) -> int:
    """Write the report and say the error on stderr; the exit code stands even if the report fails."""
    if error and not quiet:
        print(error, file=sys.stderr)
    try:
        write_report(report, error, outcome or matting.Outcome())
    except OSError as exc:
        print(f"could not write the report {report}: {exc.strerror or exc}", file=sys.stderr)
    return code


def reading(exc: OSError, source: Path) -> bool:
    return exc.filename is not None and Path(exc.filename) == source


def describe_os_error(exc: OSError, source: Path) -> str:
    reason = exc.strerror or str(exc)
    if reading(exc, source):
        return f"could not read the input: {reason}"
    where = f" ({exc.filename})" if exc.filename else ""
    return f"could not write the result: {reason}{where}"


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


if __name__ == "__main__":
    sys.exit(main())
