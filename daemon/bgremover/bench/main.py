"""`bgremover bench`: where the time goes, from one model run to the whole daemon.

The same images are measured three ways, each a floor for the next:

- the model alone: session.run on a prepared tensor;
- the pipeline in this process: the model loaded once, no isolation;
- the real daemon end to end: the hot folder, a fresh process per image, the ZIP.

The ratios between them turn "what does isolation cost" into a number.
`--soak N` instead pushes N small images through the daemon and watches the
supervisor's memory for growth. Every number is a median unless its name says
otherwise, and carries its unit in its name (`decode_ms`, `images_per_s`).
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from datetime import datetime
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image, ImageOps

import bgremover
from bgremover.runners import forkserver
from bgremover.imaging import matting
from bgremover.bench import models as modelbench
from bgremover.bench import options as optionbench
from bgremover.cli.common import EXIT_FAILED, EXIT_OK, fail
from bgremover.intake.watcher import is_image_name, is_temporary_name
from bgremover.settings import Settings, usable_cores

DEFAULT_SIZE = (2000, 1500)
DEFAULT_COUNT = 40
SOAK_SIZE = (320, 240)
SOAK_STEP = 100  # supervisor memory is sampled every this many finished items
JPEG_QUALITY = 90
MODEL_RUNS = 10
ENCODER_IMAGES = 3
PROBES = 5
PROBE_SIZE = (320, 240)
PROBE_INTERVAL_SECONDS = 1.0
POLL_SECONDS = 0.02  # the resolution of every latency measured by polling
RSS_SAMPLE_SECONDS = 1.0
READY_TIMEOUT_SECONDS = 60.0
STOP_TIMEOUT_SECONDS = 15.0
# Generous on purpose: a bench that gives up on a slow machine measures nothing.
BATCH_TIMEOUT_BASE_SECONDS = 60.0
BATCH_TIMEOUT_PER_IMAGE_SECONDS = 30.0
BENCH_SESSION = "bench"
BENCH_STABLE_SECONDS = 0.5
# Short waits so the daemon's own latency shows rather than the defaults'; JSON so the log can be read.
BENCH_ENVIRONMENT = {
    "BGREMOVER_LOG_FORMAT": "json",
    "BGREMOVER_LOG_LEVEL": "info",  # job_finished and daemon_ready are info lines
    "BGREMOVER_STABLE_SECONDS": str(BENCH_STABLE_SECONDS),
    "BGREMOVER_SESSION_IDLE_SECONDS": "1",
}
# --root names the bench's own root; its daemon must run no hook, and neither take the running
# daemon's metrics port nor overwrite its metrics textfile.
NOT_FOR_THE_BENCH_DAEMON = {"root", "metrics_port", "metrics_textfile", "on_session_complete"}
READY_FIELDS_SKIPPED = {"event", "level", "timestamp", "root", "inbox"}
DAEMON_LOG = "daemon.log"
PHOTOS = Path(__file__).parent / "photos"  # three small public-domain and CC0 photos (photos/LICENSE.md)


class BenchError(Exception):
    """The bench could not measure what it set out to; one sentence saying why."""


# Failures with a sentence of their own, shown as they are.
EXPECTED_FAILURES = (
    BenchError,
    matting.BadInput,
    matting.EncoderUnavailable,
    matting.ModelError,
)


# ---------------------------------------------------------------- command line


def main(settings: Settings, args: argparse.Namespace, *, soak_step: int = SOAK_STEP) -> int:
    """Run the bench (or the soak) and print a table or JSON; 1 and one sentence on failure."""
    workdir = work_folder(args.keep)
    table = not args.json
    document = None
    try:
        if args.soak:
            document = soak(settings, args, workdir, soak_step, echo=table)
        elif args.options:
            document = per_option(settings, args, workdir)
        elif args.model:
            document = per_model(settings, args, workdir)
        else:
            document = bench(settings, args, workdir)
    except EXPECTED_FAILURES as exc:
        return fail(str(exc), EXIT_FAILED)
    except OSError as exc:
        return fail(f"the bench could not use its files: {exc}", EXIT_FAILED)
    finally:
        tidy(workdir, args.keep, failed=document is None)
    print(render_table(document) if table else json.dumps(document, indent=2))
    return EXIT_OK


def tidy(workdir: Path, keep: Path | None, failed: bool) -> None:
    """Remove our temporary folder, unless it holds the log of a daemon that failed us."""
    if keep is None and not (failed and (workdir / DAEMON_LOG).exists()):
        shutil.rmtree(workdir, ignore_errors=True)


def work_folder(keep: Path | None) -> Path:
    if keep is None:
        return Path(tempfile.mkdtemp(prefix="bgremover-bench-"))
    keep.mkdir(parents=True, exist_ok=True)
    return keep.absolute()


def bench(settings: Settings, args: argparse.Namespace, workdir: Path) -> dict:
    """The model alone, the pipeline in this process, then the real daemon; and the ratios."""
    fmt = args.format or settings.output_format
    matting.ensure_encoder(fmt)
    corpus = bench_corpus(args, workdir / "corpus")
    spec, session = open_model(settings)
    options = matting.Options.from_settings(settings, fmt)
    document = {
        "machine": machine(settings.threads),
        "corpus": describe_corpus(corpus, args),
        "model": model_section(spec, session, corpus[0]),
        "in_process": in_process(corpus, options, spec, session, workdir / "in-process"),
        "encoders": encoders(corpus[:ENCODER_IMAGES], settings, spec, session, workdir),
    }
    del session  # free its memory and threads before the daemon's jobs want the cores
    sections, ready = run_daemon(settings, fmt, corpus, workdir)
    document.update(sections)
    document["machine"].update(ready_fields(ready))
    document["ratios"] = ratios(document["in_process"], document["daemon"])
    return reorder(document)


def per_option(settings: Settings, args: argparse.Namespace, workdir: Path) -> dict:
    """What each output option costs per image, and what `edges` does to the alpha (bench/options.py)."""
    corpus = bench_corpus(args, workdir / "corpus", optionbench.OPTION_IMAGES)
    spec, session = open_model(settings)
    forkserver.tune_malloc_here()
    base = matting.Options.from_settings(settings)
    return {
        "machine": machine(settings.threads),
        "corpus": describe_corpus(corpus, args),
        "options": optionbench.options_section(corpus, base, spec, session, workdir / "options"),
        "edges": optionbench.edges_section(corpus, spec, session),
    }


def per_model(settings: Settings, args: argparse.Namespace, workdir: Path) -> dict:
    """Model NAME beside the bundled u2netp: time, memory per job, mask agreement (bench/models.py)."""
    if args.model == modelbench.BASELINE:
        raise BenchError(f"--model compares a model with the bundled {modelbench.BASELINE}; name another model "
                         "(see `bgremover models list`)")
    fmt = args.format or settings.output_format
    matting.ensure_encoder(fmt)
    specs = modelbench.model_specs(args.model, settings.models_folder)
    corpus = bench_corpus(args, workdir / "corpus", modelbench.MODEL_IMAGES)
    options = matting.Options.from_settings(settings, fmt)
    try:
        compared = modelbench.compare(corpus, specs, settings, options, workdir / "models")
    except modelbench.JobFailed as exc:
        raise BenchError(str(exc)) from None
    return {"machine": machine(settings.threads), "corpus": describe_corpus(corpus, args), **compared}


def reorder(document: dict) -> dict:
    order = (
        "machine",
        "corpus",
        "model",
        "in_process",
        "encoders",
        "daemon",
        "isolation",
        "ratios",
        "memory",
        "enqueue_latency",
    )
    return {key: document[key] for key in order if key in document}


# ---------------------------------------------------------------- corpus


def photo_sources() -> list[Path]:
    """The real photos the corpus is made from, shipped inside this package."""
    photos = sorted(PHOTOS.glob("*.jpg"))
    if photos:
        return photos
    raise BenchError(f"no source photos to make the corpus from in {PHOTOS}; pass --images DIR instead")


def make_corpus(folder: Path, count: int, size: tuple[int, int], seed: int = 0) -> list[Path]:
    """`count` JPEG photos of exactly `size`, the same bytes for the same arguments.

    Each is a crop of one of the real photos, perhaps mirrored, its colour and
    brightness nudged, then upscaled: real content for the model and the
    encoders, where a synthetic pattern would flatter or punish them.
    """
    folder.mkdir(parents=True, exist_ok=True)
    photos = [Image.open(path).convert("RGB") for path in photo_sources()]
    digits = max(3, len(str(count - 1)))
    paths = []
    for index in range(count):
        # One stream per image: image k is the same whatever the count.
        rng = np.random.default_rng([seed, index])
        image = varied(photos[index % len(photos)], size, rng)
        path = folder / f"photo-{index:0{digits}d}.jpg"
        image.save(path, "JPEG", quality=JPEG_QUALITY)
        paths.append(path)
    return paths


def varied(photo: Image.Image, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    image = photo.crop(crop_window(photo.size, size, rng))
    if rng.random() < 0.5:
        image = ImageOps.mirror(image)
    # A colour cast per channel, then an overall brightness change.
    gains = rng.uniform(0.92, 1.08, 3) * rng.uniform(0.85, 1.15)
    pixels = np.clip(np.asarray(image, dtype=np.float32) * gains.astype(np.float32), 0, 255)
    return Image.fromarray(pixels.astype(np.uint8)).resize(size, Image.Resampling.BICUBIC)


def crop_window(source: tuple[int, int], target: tuple[int, int], rng: np.random.Generator) -> tuple[int, ...]:
    """A window of the target's aspect, 70-100 % of the largest that fits, placed at random."""
    width, height = source
    aspect = target[0] / target[1]
    full_width, full_height = (height * aspect, height) if width / height > aspect else (width, width / aspect)
    scale = rng.uniform(0.7, 1.0)
    crop_width, crop_height = (
        max(1.0, full_width * scale),
        max(1.0, full_height * scale),
    )
    left, top = rng.uniform(0, width - crop_width), rng.uniform(0, height - crop_height)
    return round(left), round(top), round(left + crop_width), round(top + crop_height)


def bench_corpus(args: argparse.Namespace, folder: Path, count: int | None = None) -> list[Path]:
    """--count images, else `count`, else every image of --images or DEFAULT_COUNT generated ones."""
    if args.images is not None:
        return image_files(args.images)[: args.count or count]
    return make_corpus(folder, args.count or count or DEFAULT_COUNT, args.size or DEFAULT_SIZE)


def image_files(folder: Path) -> list[Path]:
    """The images the daemon would take from `folder` (top level only), sorted by name."""
    if not folder.is_dir():
        raise BenchError(f"--images {folder} is not a folder")
    files = sorted(
        path
        for path in folder.iterdir()
        if path.is_file() and is_image_name(path.name) and not is_temporary_name(path.name)
    )
    if not files:
        raise BenchError(f"--images {folder} holds no image files")
    return files


def describe_corpus(corpus: list[Path], args: argparse.Namespace) -> dict:
    sizes: dict[str, int] = {}
    for path in corpus:
        key = "x".join(map(str, image_size(path)))
        sizes[key] = sizes.get(key, 0) + 1
    described = {
        "source": str(args.images) if args.images else "generated",
        "count": len(corpus),
        "sizes": sizes,
    }
    if args.images is None:
        described["jpeg_quality"] = JPEG_QUALITY
    described["file_kb"] = round(statistics.median(path.stat().st_size for path in corpus) / 1024, 1)
    return described


def image_size(path: Path) -> tuple[int, int]:
    try:
        with Image.open(path) as image:
            return image.size
    except (OSError, SyntaxError, ValueError) as exc:
        raise BenchError(f"{path} cannot be read as an image ({exc})") from None


# ---------------------------------------------------------------- in this process


def open_model(settings: Settings):
    """The model's spec and a session with the threads and providers the daemon's jobs use."""
    spec = matting.find_model_spec(settings.model, settings.models_folder)
    return spec, matting.create_session(spec, settings.threads, settings.providers)


def cut_out(src: Path, dst: Path, options, session, spec) -> dict[str, float]:
    """The whole pipeline on one image; returns its stage timings in ms."""
    return matting.remove_background(src, dst, session, spec, options).timings_ms


def in_process(corpus: list[Path], options, spec, session, folder: Path) -> dict:
    """Every image through the pipeline with the model loaded once: the floor for the daemon."""
    forkserver.tune_malloc_here()  # the heap settings every job gets, for a like-for-like floor
    folder.mkdir(parents=True, exist_ok=True)
    # One output file, overwritten each time: 40 big cutouts would fill a small disk.
    output = folder / f"cutout{matting.FORMAT_EXTENSIONS[options.format]}"
    # A warm-up run: the first run's allocations are not the steady rate.
    cut_out(corpus[0], output, options, session, spec)
    walls, stages = [], []
    for path in corpus:
        start = time.perf_counter()
        stages.append(cut_out(path, output, options, session, spec))
        walls.append(time.perf_counter() - start)
    return {
        "images": len(corpus),
        "ms_per_image": ms(statistics.median(walls)),
        "images_per_s": round(len(walls) / sum(walls), 2),
        **stage_medians(stages),
    }


def stage_medians(timings: Iterable[dict[str, float]]) -> dict[str, float]:
    """{"decode_ms": median, ...} over the stages the timings name, in the order first seen."""
    by_stage: dict[str, list[float]] = {}
    for timing in timings:
        for stage, value in timing.items():
            by_stage.setdefault(stage, []).append(float(value))
    return {f"{stage}_ms": round(statistics.median(values), 2) for stage, values in by_stage.items()}


def model_section(spec, session, image_path: Path) -> dict:
    """The model alone on a prepared tensor: what no amount of plumbing can beat."""
    image, _, _ = matting.decode(image_path)
    tensor = matting.preprocess(image, spec)
    matting.infer(session, tensor, spec)  # warm-up
    runs = []
    for _ in range(MODEL_RUNS):
        start = time.perf_counter()
        matting.infer(session, tensor, spec)
        runs.append(time.perf_counter() - start)
    return {
        "name": spec.name,
        "input": "x".join(map(str, spec.input_size)),
        "runs": MODEL_RUNS,
        "inference_ms": ms(statistics.median(runs)),
    }


def prepared_cutout(path: Path, spec, session) -> tuple[Image.Image, bytes | None]:
    """The RGBA cutout the encoder is handed, and the source's colour profile."""
    image, icc, _ = matting.decode(path)
    raw = matting.infer(session, matting.preprocess(image, spec), spec)
    return matting.cutout(image, matting.postprocess(raw, image.size, spec)), icc


def encoders(corpus: list[Path], settings: Settings, spec, session, workdir: Path) -> dict:
    """Each output format's encode time and size on the same few cutouts."""
    folder = workdir / "encoders"
    folder.mkdir(parents=True, exist_ok=True)
    cutouts = [prepared_cutout(path, spec, session) for path in corpus]
    found = {}
    for fmt, extension in matting.FORMAT_EXTENSIONS.items():
        try:
            matting.ensure_encoder(fmt)
        except matting.EncoderUnavailable as exc:
            found[fmt] = {"available": False, "why": str(exc)}
            continue
        options = matting.Options.from_settings(settings, fmt)
        if fmt == "jpeg" and options.background == "transparent":
            options = dataclasses.replace(options, background="#ffffff")  # JPEG has no alpha: timed on white
        times = encode_times(cutouts, folder / f"cutout{extension}", options)
        found[fmt] = {"available": True, **times}
    return found


def encode_times(cutouts: list, path: Path, options) -> dict:
    times, sizes = [], []
    for rgba, icc in cutouts:
        start = time.perf_counter()
        matting.encode(rgba, path, icc, options)
        times.append(time.perf_counter() - start)
        sizes.append(path.stat().st_size)
    return {
        "encode_ms": ms(statistics.median(times)),
        "output_kb": round(statistics.median(sizes) / 1024, 1),
    }


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# ---------------------------------------------------------------- machine


def machine(threads: int | None = None) -> dict:
    """This machine; `threads`: the onnxruntime threads of the in-process runs, if any."""
    found = {
        "usable_cores": usable_cores(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "onnxruntime": onnxruntime.__version__,
        "providers": onnxruntime.get_available_providers(),
        "platform": platform.platform(),
    }
    return found if threads is None else {**found, "threads": threads}


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


# ---------------------------------------------------------------- the daemon, as a child process


class RunningDaemon:
    """`bgremover run` on a root of our own, and what its JSON log says so far."""

    def __init__(self, root: Path, log_path: Path, env: dict[str, str]) -> None:
        self.root, self.log_path, self.env = root, log_path, env
        self.process: subprocess.Popen | None = None
        self.records: dict[str, list[dict]] = {}
        self._unread = b""
        self._offset = 0

    def start(self) -> dict:
        """Start it and wait for its daemon_ready line, which is returned."""
        # The child keeps its own copy of the descriptor; ours can close at once.
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bgremover", "run", "--root", str(self.root)],
                cwd=self.root.parent,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log_file,
                stderr=log_file,
            )
        started = time.monotonic()
        while not self.events("daemon_ready"):
            self.ensure_running("get ready", started, READY_TIMEOUT_SECONDS)
            time.sleep(POLL_SECONDS)
        return self.events("daemon_ready")[0]

    def events(self, name: str) -> list[dict]:
        self.read_log()
        return self.records.get(name, [])

    def read_log(self) -> None:
        """Parse the lines written since the last call; a half-written last line waits for the next."""
        with open(self.log_path, "rb") as log_file:
            log_file.seek(self._offset)
            data = log_file.read()
        self._offset += len(data)
        *lines, self._unread = (self._unread + data).split(b"\n")
        for line in lines:
            record = parse_log_line(line)
            if record is not None:
                self.records.setdefault(record.get("event", ""), []).append(record)

    def ensure_running(self, doing: str, started: float, limit_s: float) -> None:
        """Raise BenchError if it has exited, or has not managed `doing` within limit_s."""
        code = self.process.poll()
        if code is not None:
            raise BenchError(f"the daemon exited with code {code} before it could {doing}; its log is {self.log_path}")
        if time.monotonic() - started > limit_s:
            raise BenchError(f"the daemon did not {doing} within {limit_s:.0f} s; its log is {self.log_path}")

    def memory_mb(self, key: str) -> float | None:
        """VmRSS or VmHWM of the supervisor process, from /proc."""
        return proc_memory_mb(self.process.pid, key)

    def stop(self) -> None:
        """SIGTERM, as systemd would; SIGKILL if it has not stopped in 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def parse_log_line(line: bytes) -> dict | None:
    if not line.startswith(b"{"):
        return None  # the start-up banner and anything else that is not a structlog JSON line
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def proc_memory_mb(pid: int, key: str) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{key}:"):
                return round(int(line.split()[1]) / 1024, 1)
    except (OSError, ValueError):
        pass
    return None


def daemon_environment(settings: Settings, fmt: str) -> dict[str, str]:
    """The user's settings as BGREMOVER_* variables (a --config file's too), then the bench's own."""
    env = dict(os.environ)
    env.pop("BGREMOVER_CONFIG", None)  # what it said is already in `settings`
    for name, value in settings.model_dump().items():
        if name in NOT_FOR_THE_BENCH_DAEMON:
            env.pop(f"BGREMOVER_{name.upper()}", None)
        elif value is not None:  # None is "not set", which no variable can say
            env[f"BGREMOVER_{name.upper()}"] = environment_value(value)
    env.update(BENCH_ENVIRONMENT, BGREMOVER_OUTPUT_FORMAT=fmt)
    # The user's models folder defaults to one under the root, and the bench daemon has its own root.
    env["BGREMOVER_MODELS_DIR"] = str(settings.models_folder)
    # A source checkout is not installed: let `python -m bgremover` find this very package.
    package_parent = str(Path(bgremover.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return env


def environment_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))  # the providers setting's form: A,B
    return str(value)


def session_names(base: str, count: int, max_items: int) -> list[str]:
    """The sessions a folder of `count` files becomes: NAME, then NAME-2, NAME-3, ... when full."""
    sessions = max(1, math.ceil(count / max_items))
    return [base] + [f"{base}-{n}" for n in range(2, sessions + 1)]


def read_status(path: Path) -> dict | None:
    """A status JSON, or None before it exists (the daemon replaces it whole, never half)."""
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


def session_complete(outbox: Path, name: str) -> bool:
    status = read_status(outbox / f"{name}.json") or {}
    return status.get("state") == "complete" and (outbox / f"{name}.zip").is_file()


def batch_timeout(count: int) -> float:
    return BATCH_TIMEOUT_BASE_SECONDS + BATCH_TIMEOUT_PER_IMAGE_SECONDS * count


class Watch:
    """What the bench keeps an eye on whenever it waits: the batch's end, the daemon's memory and health."""

    def __init__(self, daemon: RunningDaemon, sessions: list[str], started: float, count: int) -> None:
        self.daemon, self.sessions, self.started = daemon, sessions, started
        self.count = count
        self.limit_s = batch_timeout(count)
        self.finished_at: float | None = None
        self.rss_mb: list[float] = []
        self.next_sample = 0.0

    @property
    def complete(self) -> bool:
        return self.finished_at is not None

    def step(self) -> None:
        doing = f"finish the {self.count} images"
        self.daemon.ensure_running(doing, self.started, self.limit_s)
        now = time.monotonic()
        if not self.complete and self.sessions_complete():
            self.finished_at = now
        if now >= self.next_sample:
            self.next_sample = now + RSS_SAMPLE_SECONDS
            self.sample()
        time.sleep(POLL_SECONDS)

    def sessions_complete(self) -> bool:
        # The log says so first (cheap to follow); the status JSON and the ZIP confirm.
        logged = {e.get("session") for e in self.daemon.events("session_complete")}
        outbox = self.daemon.root / "outbox"
        return logged.issuperset(self.sessions) and all(session_complete(outbox, name) for name in self.sessions)

    def sample(self) -> None:
        rss = self.daemon.memory_mb("VmRSS")
        if rss is not None:
            self.rss_mb.append(rss)

    def until(self, condition: Callable[[], bool]) -> None:
        while not condition():
            self.step()

    def pause_until(self, moment: float) -> None:
        self.until(lambda: time.monotonic() >= moment)


def stage(files: list[Path], folder: Path) -> Path:
    """Copy files into a folder outside the inbox, on its filesystem, ready to be renamed in whole."""
    folder.mkdir(parents=True)
    for path in files:
        shutil.copyfile(path, folder / path.name)
    return folder


def run_daemon(settings: Settings, fmt: str, corpus: list[Path], workdir: Path) -> tuple[dict, dict]:
    """The corpus through the real daemon: throughput, per-job time, memory and enqueue latency."""
    probes = make_corpus(workdir / "probes", PROBES, PROBE_SIZE, seed=1)
    sessions = session_names(BENCH_SESSION, len(corpus), settings.max_session_items)
    runner = RunningDaemon(workdir / "root", workdir / DAEMON_LOG, daemon_environment(settings, fmt))
    try:
        ready = runner.start()
        staged = stage(corpus, workdir / "staging" / BENCH_SESSION)
        started = time.monotonic()
        # The drop: one rename, so the whole folder appears in the inbox at once.
        os.rename(staged, runner.root / "inbox" / BENCH_SESSION)
        watch = Watch(runner, sessions, started, len(corpus))
        watch.until(lambda: bool(runner.events("job_finished")) or watch.complete)
        latencies = probe_latencies(probes, runner.root, workdir / "staging", watch)
        watch.until(lambda: watch.complete)
        watch.sample()
        # Before the stop: the process and its /proc entry go with it.
        hwm_mb = runner.memory_mb("VmHWM")
    finally:
        runner.stop()
    return daemon_sections(runner, watch, fmt, latencies, hwm_mb), ready


def probe_latencies(probes: list[Path], root: Path, staging: Path, watch: Watch) -> list[tuple[float, bool]]:
    """(ms from rename to 'queued' in a status JSON, whether the batch was still running), per probe."""
    found = []
    for index, source in enumerate(probes):
        started = time.monotonic()
        during_batch = not watch.complete
        latency = enqueue_latency_ms(source, f"probe-{index + 1}.jpg", root, staging, watch)
        found.append((latency, during_batch))
        if index + 1 < len(probes):
            watch.pause_until(started + PROBE_INTERVAL_SECONDS)
    return found


def enqueue_latency_ms(source: Path, name: str, root: Path, staging: Path, watch: Watch) -> float:
    staged = staging / name
    shutil.copyfile(source, staged)
    start = time.monotonic()
    # Straight into the inbox root: it joins the loose session.
    os.rename(staged, root / "inbox" / name)
    watch.until(lambda: item_listed(root / "outbox", name))
    return ms(time.monotonic() - start)


def item_listed(outbox: Path, name: str) -> bool:
    """Whether any session's status JSON lists `name`: queued or any later status."""
    for path in outbox.glob("*.json"):
        status = read_status(path) or {}
        if any(item.get("name") == name for item in status.get("items", [])):
            return True
    return False


# ---------------------------------------------------------------- the daemon's numbers


def daemon_sections(runner: RunningDaemon, watch: Watch, fmt: str, latencies: list, hwm_mb: float | None) -> dict:
    finished = [e for e in runner.events("job_finished") if e.get("session") in watch.sessions]
    started = [e for e in runner.events("job_started") if e.get("session") in watch.sessions]
    return {
        "daemon": daemon_section(runner, watch, fmt, finished),
        "isolation": isolation_section(started),
        "memory": memory_section(finished, watch.rss_mb, hwm_mb),
        "enqueue_latency": latency_section(latencies),
    }


def daemon_section(runner: RunningDaemon, watch: Watch, fmt: str, finished: list[dict]) -> dict:
    outbox = runner.root / "outbox"
    counts = session_counts(outbox, watch.sessions)
    elapsed = watch.finished_at - watch.started
    timings = [e["timings_ms"] for e in finished if isinstance(e.get("timings_ms"), dict) and e["timings_ms"]]
    return {
        "format": fmt,
        "images": watch.count,
        "sessions": len(watch.sessions),
        "done": counts.get("done", 0),
        "failed": counts.get("failed", 0),
        "zip_members": zip_member_count(outbox, watch.sessions),
        "elapsed_s": round(elapsed, 2),
        "images_per_s": round(watch.count / elapsed, 2),
        "ms_per_image": steady_ms_per_image(finished),
        "job_duration_ms": median_of(e.get("duration_ms") for e in finished),
        # None: this daemon does not log its jobs' stage timings.
        "job_stages": stage_medians(timings) if timings else None,
    }


def isolation_section(started: list[dict]) -> dict:
    """What a fresh process per job costs, as each job process measured it, and how much of it was hidden.

    process_start_ms runs from the fork server's fork to the process being ready
    (session created); it is paid while the previous job runs whenever the
    process was ready before its job was handed over.
    """
    return {
        "jobs": len(started),
        "process_start_ms": median_of(e.get("start_ms") for e in started),
        "session_create_ms": median_of(e.get("session_ms") for e in started),
        "ready_before_its_job": sum(1 for e in started if e.get("ready_in_advance")),
    }


def steady_ms_per_image(finished: list[dict]) -> float | None:
    """The median gap between consecutive job_finished lines: the rate once the queue is full.

    It leaves out the drop, the stable-file wait and the ZIP, which the
    elapsed time includes. With one job there is no gap: its duration stands in.
    """
    moments = sorted(log_time(event) for event in finished)
    gaps = [later - earlier for earlier, later in itertools.pairwise(moments)]
    if gaps:
        return ms(statistics.median(gaps))
    return median_of(event.get("duration_ms") for event in finished)


def log_time(event: dict) -> float:
    # structlog's TimeStamper: ISO 8601 in UTC.
    return datetime.fromisoformat(event["timestamp"]).timestamp()


def median_of(values: Iterable[float | None]) -> float | None:
    present = [float(value) for value in values if isinstance(value, (int, float))]
    return round(statistics.median(present), 2) if present else None


def session_counts(outbox: Path, sessions: list[str]) -> dict[str, int]:
    totals: dict[str, int] = {}
    for name in sessions:
        for status, count in ((read_status(outbox / f"{name}.json") or {}).get("counts") or {}).items():
            totals[status] = totals.get(status, 0) + count
    return totals


def zip_member_count(outbox: Path, sessions: list[str]) -> int:
    total = 0
    for name in sessions:
        with zipfile.ZipFile(outbox / f"{name}.zip") as archive:
            total += len(archive.namelist())
    return total


def memory_section(finished: list[dict], rss_mb: list[float], hwm_mb: float | None) -> dict:
    return {
        "job_peak_rss_mb_max": largest_job_peak_mb(finished),
        "supervisor_hwm_mb": hwm_mb,
        "supervisor_rss_mb_median": median_of(rss_mb),
        "supervisor_rss_mb_max": max(rss_mb, default=None),
        "supervisor_rss_mb_samples": rss_mb,
    }


def largest_job_peak_mb(finished: list[dict]) -> float | None:
    peaks = [e["peak_rss_mb"] for e in finished if isinstance(e.get("peak_rss_mb"), (int, float))]
    return max(peaks, default=None)


def latency_section(latencies: list[tuple[float, bool]]) -> dict:
    values = [latency for latency, _ in latencies]
    median = median_of(values)
    stable_ms = BENCH_STABLE_SECONDS * 1000
    return {
        "probes": len(values),
        "probes_during_batch": sum(during for _, during in latencies),
        "median_ms": median,
        "max_ms": max(values, default=None),
        # A wait the daemon adds on purpose: a file is taken once it has held still.
        "stable_seconds": BENCH_STABLE_SECONDS,
        "median_beyond_stable_ms": difference(median, stable_ms),
    }


def ready_fields(ready: dict) -> dict:
    """What the daemon says about itself on its daemon_ready line (providers, threads, ...), prefixed."""
    return {f"daemon_{key}": value for key, value in ready.items() if key not in READY_FIELDS_SKIPPED}


# ---------------------------------------------------------------- ratios


def ratios(local: dict, daemon_numbers: dict) -> dict:
    """How the daemon compares with the in-process floor: the price of one process per image."""
    local_ms, daemon_ms = local["ms_per_image"], daemon_numbers["ms_per_image"]
    core_ms = round(
        sum(local.get(key, 0.0) for key in ("decode_ms", "inference_ms", "encode_ms")),
        2,
    )
    overhead_ms = difference(daemon_ms, local_ms)
    return {
        "time_per_image_ratio": ratio(daemon_ms, local_ms),
        "isolation_overhead_ms": overhead_ms,
        "isolation_overhead_pct": percent(overhead_ms, local_ms),
        "core_work_ms": core_ms,  # decode + inference + encode in this process
        "time_per_image_over_core_work_ratio": ratio(daemon_ms, core_ms),
        "images_per_s_ratio": ratio(daemon_numbers["images_per_s"], local["images_per_s"]),
    }


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


def percent(part: float | None, whole: float | None) -> float | None:
    share = ratio(part, whole)
    return None if share is None else round(100 * part / whole, 1)


def difference(value: float | None, less: float | None) -> float | None:
    if value is None or less is None:
        return None
    return round(value - less, 2)


# ---------------------------------------------------------------- soak


def soak(settings: Settings, args: argparse.Namespace, workdir: Path, step: int, echo: bool) -> dict:
    """N small images through the daemon; the supervisor's memory every `step` finished items."""
    fmt = args.format or settings.output_format
    matting.ensure_encoder(fmt)
    size = args.size or SOAK_SIZE
    corpus = make_corpus(workdir / "corpus", args.soak, size)
    folders = stage_sessions(corpus, workdir / "staging", settings.max_session_items)
    runner = RunningDaemon(workdir / "root", workdir / DAEMON_LOG, daemon_environment(settings, fmt))
    try:
        ready = runner.start()
        started = time.monotonic()
        # All queued at once: growth after the first sample is the loop's, not the queue's.
        for folder in folders:
            os.rename(folder, runner.root / "inbox" / folder.name)
        watch = Watch(runner, [folder.name for folder in folders], started, len(corpus))
        samples = memory_every(step, runner, watch, echo)
        samples.append(
            {
                "items": len(runner.events("job_finished")),
                "rss_mb": runner.memory_mb("VmRSS"),
            }
        )
        hwm_mb = runner.memory_mb("VmHWM")
    finally:
        runner.stop()
    return {
        "machine": {**machine(), **ready_fields(ready)},
        "soak": soak_section(runner, watch, fmt, size, step, samples, hwm_mb),
    }


def stage_sessions(files: list[Path], staging: Path, max_items: int) -> list[Path]:
    """Move files into folders of at most `max_items`: one session each, none spilling over."""
    folders = []
    for start in range(0, len(files), max_items):
        folder = staging / f"soak-{start // max_items + 1:03d}"
        folder.mkdir(parents=True)
        for path in files[start : start + max_items]:
            os.rename(path, folder / path.name)
        folders.append(folder)
    return folders


def memory_every(step: int, runner: RunningDaemon, watch: Watch, echo: bool) -> list[dict]:
    """The supervisor's VmRSS each time another `step` jobs have finished, until the sessions complete."""
    samples, next_at = [], step
    while True:
        done = len(runner.events("job_finished"))
        if done >= next_at:
            samples.append({"items": done, "rss_mb": runner.memory_mb("VmRSS")})
            next_at = (done // step + 1) * step
            if echo:
                print(
                    f"soak: {done} items finished, supervisor RSS {samples[-1]['rss_mb']} MB",
                    flush=True,
                )
        if watch.complete:
            return samples
        watch.step()


def soak_section(runner, watch, fmt, size, step, samples, hwm_mb) -> dict:
    finished = runner.events("job_finished")
    counts = session_counts(runner.root / "outbox", watch.sessions)
    elapsed = watch.finished_at - watch.started
    first, last = samples[0]["rss_mb"], samples[-1]["rss_mb"]
    return {
        "images": watch.count,
        "format": fmt,
        "size": "x".join(map(str, size)),
        "sessions": len(watch.sessions),
        "done": counts.get("done", 0),
        "failed": counts.get("failed", 0),
        "elapsed_s": round(elapsed, 2),
        "images_per_s": round(watch.count / elapsed, 2),
        "step_items": step,
        "samples": samples,
        "supervisor_hwm_mb": hwm_mb,
        # From the first sample on, the queue is whole: growth after it is the loop's own.
        "spread_mb": difference(last, first),
        "job_peak_rss_mb_max": largest_job_peak_mb(finished),
    }


# ---------------------------------------------------------------- output


SECTION_TITLES = {
    "in_process": "in-process stages",
    "enqueue_latency": "enqueue latency",
    "options": "each output option, whole pipeline in this process",
    "edges": "edges against the raw mask (alpha levels of 255; band = pixels near the contour)",
    "models": "each model: session, model alone, whole pipeline in this process (medians), one job's peak memory",
    "agreement": "mask agreement at each photo's size (alpha_diff: mean |difference| in levels of 255)",
}
KEY_WIDTH = 40
LIST_SHOWN = 8


def render_table(document: dict) -> str:
    lines = []
    for section, values in document.items():
        lines.append(SECTION_TITLES.get(section, section))
        lines.extend(render_rows(values, indent=2))
        lines.append("")
    return "\n".join(lines).rstrip()


def render_rows(values: dict, indent: int) -> list[str]:
    rows = []
    for key, value in values.items():
        if isinstance(value, dict):
            rows.append(" " * indent + key)
            rows.extend(render_rows(value, indent + 2))
        else:
            rows.append(f"{' ' * indent}{key:<{KEY_WIDTH - indent}} {render_value(value)}")
    return rows


def render_value(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{decimals(value)}f}"
    if isinstance(value, list):
        return render_list(value)
    return str(value)


def decimals(value: float) -> int:
    """Three significant figures or so: 1234, 56.7, 8.90."""
    return 0 if abs(value) >= 100 else 1 if abs(value) >= 10 else 2


def render_list(values: list) -> str:
    shown = [render_item(value) for value in values]
    if len(shown) > LIST_SHOWN:
        half = LIST_SHOWN // 2
        shown = [
            *shown[:half],
            f"... ({len(values) - LIST_SHOWN} more)",
            *shown[-half:],
        ]
    return ", ".join(shown) if shown else "-"


def render_item(value: object) -> str:
    if isinstance(value, dict):
        return " ".join(f"{key}={render_value(item)}" for key, item in value.items())
    return render_value(value)
