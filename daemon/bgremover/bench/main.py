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
import json
import os
import platform
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime
from PIL import Image, ImageOps

from bgremover.bench import api as apibench
from bgremover.bench import catalog, composites
from bgremover.bench import cluster as clusterbench
from bgremover.bench import models as modelbench
from bgremover.bench import options as optionbench
from bgremover.bench import rerender as rerenderbench
from bgremover.bench import signals as signalbench
from bgremover.bench import slots as slotbench
from bgremover.bench.daemon import (
    DAEMON_LOG,
    RunningDaemon,
    Watch,
    daemon_environment,
    largest_job_peak_mb,
    ready_fields,
    run_daemon,
    session_counts,
)
from bgremover.bench.figures import BenchError, difference, ms, percent, ratio, stage_medians
from bgremover.exits import EXIT_FAILED, EXIT_OK, fail
from bgremover.imaging import matting
from bgremover.intake.watcher import is_image_name, is_temporary_name
from bgremover.runners import forkserver
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
PHOTOS = Path(__file__).parent / "photos"  # three small public-domain and CC0 photos (photos/LICENSE.md)


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
        if args.repeat and not args.models:
            raise BenchError("--repeat counts the runs of --models: add --models NAME,NAME,... or leave --repeat out")
        if args.soak:
            document = soak(settings, args, workdir, soak_step, echo=table)
        elif args.options:
            document = per_option(settings, args, workdir)
        elif args.rerender:
            document = per_rerender(settings, args, workdir)
        elif args.edges:
            document = edge_quality(settings)
        elif args.signals:
            document = signal_quality(settings)
        elif args.models:
            document = per_model_path(settings, args, workdir)
        elif args.model:
            document = per_model(settings, args, workdir)
        elif args.slots:
            document = per_slot_count(settings, args, workdir)
        elif args.workers:
            document = per_worker_count(settings, args, workdir)
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


def prepared(settings: Settings, args: argparse.Namespace, workdir: Path) -> tuple:
    """The format, the corpus, the model's spec and session, and the options, as the in-process loop uses them."""
    fmt = args.format or settings.output_format
    matting.ensure_encoder(fmt)
    corpus = bench_corpus(args, workdir / "corpus")
    spec, session = open_model(settings)
    return fmt, corpus, spec, session, matting.Options.from_settings(settings, fmt)


def bench(settings: Settings, args: argparse.Namespace, workdir: Path) -> dict:
    """The model alone, the pipeline in this process, then the real daemon; and the ratios."""
    fmt, corpus, spec, session, options = prepared(settings, args, workdir)
    document = {
        "machine": machine(settings.threads),
        "corpus": describe_corpus(corpus, args),
        "model": model_section(spec, session, corpus[0]),
        "in_process": in_process(corpus, options, spec, session, workdir / "in-process"),
        "encoders": encoders(corpus[:ENCODER_IMAGES], settings, spec, session, workdir),
    }
    del session  # free its memory and threads before the daemon's jobs want the cores
    probes = make_corpus(workdir / "probes", PROBES, PROBE_SIZE, seed=1)
    sections, ready = run_daemon(settings, fmt, corpus, workdir, probes)
    document.update(sections)
    document["api"] = apibench.session_reuse(settings.model, probes)
    document["machine"].update(ready_fields(ready))
    document["ratios"] = ratios(document["in_process"], document["daemon"])
    return reorder(document)


EDGE_MODELS = ("u2netp", "isnet-small")


def edge_quality(settings: Settings) -> dict:
    """Alpha and colour errors on the project's composites, per model that is installed (bench/composites.py)."""
    document = {
        "machine": machine(settings.threads),
        "composites": {
            "size": "x".join(map(str, composites.SIZE)),
            "subjects": ", ".join(composites.SUBJECTS),
            "backgrounds": ", ".join(composites.BACKGROUNDS),
            "real photos": "the coffee photo against its hand-checked mask; its cup and the cat's fur over "
            "the other backgrounds",
        },
    }
    for name in EDGE_MODELS:
        try:
            spec = matting.find_model_spec(name, settings.models_folder)
        except matting.ModelError:
            document[name] = {"skipped": f"not installed (bgremover models fetch {name})"}
            continue
        session = matting.create_session(spec, settings.threads, settings.providers)
        document[name] = composites.summary(composites.measure_model(spec, session))
        document[name]["real photos"] = composites.reference_summary(composites.measure_references(spec, session))
    return document


def signal_quality(settings: Settings) -> dict:
    """Each quality signal's precision and recall on the labelled set; with review_model, escalation's figures."""
    spec, session = open_model(settings)
    second = None
    if settings.review_model:
        review_spec = matting.find_model_spec(settings.review_model, settings.models_folder)
        second = (matting.create_session(review_spec, settings.threads, settings.providers), review_spec)
    document = {"machine": machine(settings.threads), "models": {"first": spec.name, "second": settings.review_model}}
    document.update(signalbench.measure((session, spec), second))
    return document


def per_slot_count(settings: Settings, args: argparse.Namespace, workdir: Path) -> dict:
    """The in-process loop, then the daemon at each of --slots on the same images (bench/slots.py)."""
    fmt, corpus, spec, session, options = prepared(settings, args, workdir)
    document = {
        "machine": machine(settings.threads),
        "corpus": describe_corpus(corpus, args),
        "in_process": in_process(corpus, options, spec, session, workdir / "in-process"),
    }
    del session  # its memory and threads go before the daemons' jobs want the cores
    runs = {}
    for count in args.slots:
        (workdir / f"slots-{count}").mkdir()
        sections, ready = run_daemon(
            settings, fmt, corpus, workdir / f"slots-{count}", probes=[], environment=slotbench.environment(count)
        )
        runs[count] = slotbench.slot_run(sections, ready)
    document["slots"] = slotbench.compare(runs, document["in_process"])
    return document


def per_worker_count(settings: Settings, args: argparse.Namespace, workdir: Path) -> dict:
    """One local job slot, N local slots, then N celery workers of one slot each on this machine, on the same images."""
    broker = args.broker or (settings.broker_url.get_secret_value() if settings.broker_url else None)
    if not broker:
        raise BenchError("--workers needs a broker: --broker redis://127.0.0.1:6379/0 (a redis-server of yours)")
    fmt = args.format or settings.output_format
    matting.ensure_encoder(fmt)
    corpus = bench_corpus(args, workdir / "corpus")
    runs, threads = {}, None

    def workers(root: Path, env: dict[str, str]):
        nonlocal threads
        env = clusterbench.worker_environment(env, args.workers, usable_cores(), settings.threads_given)
        threads = int(env["BGREMOVER_THREADS"]) if "BGREMOVER_THREADS" in env else settings.threads
        return clusterbench.workers_on(root, broker, args.workers, env, workdir / "celery" / "workers")

    for label, environment, beside in (
        ("local", clusterbench.LOCAL_ENVIRONMENT, None),
        ("local-n", clusterbench.local_slots_environment(args.workers), None),
        ("celery", clusterbench.cluster_environment(broker, args.workers), workers),
    ):
        (workdir / label).mkdir()
        sections, ready = run_daemon(
            settings, fmt, corpus, workdir / label, probes=[], environment=environment, beside=beside
        )
        runs[label] = slotbench.slot_run(sections, ready)
    return {
        "machine": machine(settings.threads),
        "corpus": describe_corpus(corpus, args),
        "workers": clusterbench.compare(runs["local"], runs["local-n"], runs["celery"], args.workers, threads),
    }


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
        "recipes": optionbench.recipes_section(corpus, base, spec, session, workdir / "recipes"),
        "edges": optionbench.edges_section(corpus, spec, session),
    }


def per_rerender(settings: Settings, args: argparse.Namespace, workdir: Path) -> dict:
    """A session through the daemon with one recipe, then `rerender` of it with another (bench/rerender.py)."""
    corpus = bench_corpus(args, workdir / "corpus", rerenderbench.SESSION_IMAGES)
    return {
        "machine": machine(settings.threads),
        "corpus": describe_corpus(corpus, args),
        **rerenderbench.rerender_against_session(settings, corpus, workdir),
    }


def per_model_path(settings: Settings, args: argparse.Namespace, workdir: Path) -> dict:
    """Each of --models on each path it may take, beside rembg, on the same photos (bench/catalog.py)."""
    corpus = bench_corpus(args, workdir / "corpus")
    try:
        compared = catalog.compare(settings, args.models, corpus, workdir / "models", args.repeat or catalog.REPEAT)
    except modelbench.JobFailed as exc:
        raise BenchError(str(exc)) from None
    return {"machine": machine(settings.threads), "corpus": describe_corpus(corpus, args), "paths_and_rembg": compared}


def per_model(settings: Settings, args: argparse.Namespace, workdir: Path) -> dict:
    """Model NAME beside the bundled u2netp: time, memory per job, mask agreement (bench/models.py)."""
    if args.model == modelbench.BASELINE:
        raise BenchError(
            f"--model compares a model with the bundled {modelbench.BASELINE}; name another model "
            "(see `bgremover models list`)"
        )
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
        "api",
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
    output = folder / f"cutout{matting.FORMAT_EXTENSIONS[options.output_format]}"
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


# ---------------------------------------------------------------- the daemon's numbers


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
    "u2netp": "u2netp on the drawn composites, then the real photos (errors: means; alpha in levels of 255, "
    "gradient ×1000)",
    "isnet-small": "isnet-small on the drawn composites, then the real photos (errors: means; alpha in levels of "
    "255, gradient ×1000)",
    "in_process": "in-process stages",
    "api": "the Python API's session, reused against one-shot calls",
    "enqueue_latency": "enqueue latency",
    "slots": "the daemon at each slot count, beside the in-process loop (medians; memory: peaks)",
    "workers": "one local job slot, as many local slots, then celery workers of one slot each on this machine "
    "(medians; memory: peaks)",
    "options": "each output option, whole pipeline in this process",
    "recipes": "one recipe against five, each from one inference (medians; cpu = this process's CPU time), and a "
    "rerender of one recipe from the kept matte",
    "session": "a session through the real daemon, with one recipe",
    "rerender ebay": "`bgremover rerender` of that session with ebay (JPEG on white): no model",
    "rerender shopify-square": "`bgremover rerender` of that session with shopify-square (2048-px WebP): no model",
    "edges": "edges against the raw mask (alpha levels of 255; band = pixels near the contour)",
    "models": "each model: session, model alone, whole pipeline in this process (medians), one job's peak memory",
    "paths_and_rembg": "each model on each path its check allowed, through the daemon, beside rembg with the same "
    "model file on the same photos (agreement: IoU of alpha ≥ 128, alpha MAE in levels of 255; the ratio to rembg: "
    "of the medians of --repeat runs each, taking turns)",
    "agreement": "mask agreement at each photo's size (alpha_diff: mean |difference| in levels of 255)",
    "labelled_set": "the labelled set: cases in each group (bench/signals.py)",
    "signals": "each quality signal of the first model on the labelled set",
    "checks": "the sides cut_by_frame names, and good photos flagged (none is wanted)",
    "wrong": "the cases whose signals differ from their labels",
    "disagreement": "the two models' disagreement, against the first model's mask being wrong (IoU with the truth < 0.85)",
    "escalation": "escalation (review_escalate): mean IoU with the truth over the drawn cases, and ms per image",
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
