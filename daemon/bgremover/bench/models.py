"""`bgremover bench --model NAME`: NAME beside the bundled u2netp, on the same images.

A slower model is worth its time only if its masks differ where it matters, so
both questions are answered in one run: what each model costs (session, model
alone, whole pipeline, memory of one job) and how far their masks agree. The
models take turns on every measurement, so a noisy minute on a shared machine
lands on both alike and the ratios between them hold.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

import bgremover
from bgremover.imaging import matting
from bgremover.runners import forkserver

BASELINE = "u2netp"  # the bundled model every other one is compared with
MODEL_IMAGES = 10  # the corpus --model makes unless --count says otherwise
INFERENCE_RUNS = 5  # after a warm-up; a large model takes a second or more a run
SUBJECT_ALPHA = 128  # a pixel with at least this alpha counts as subject for IoU
# The settings a job's memory depends on, handed to the fresh process as the daemon hands them to its jobs.
JOB_MEMORY_SETTINGS = ("threads", "providers", "max_megapixels", "large_images", "backend", "precision")
# Reaps the job with os.wait4 and writes "EXIT_CODE PEAK_RSS_KB" to the file named first.
#
# Why a launcher between us and the job: Linux carries the high-water mark of the
# memory a process had before exec into its ru_maxrss, and a process forked (or
# vforked, as subprocess does) from this one starts with ours, sessions and all:
# a bare `python -c pass` started from here reports this process's peak. The
# launcher is a bare interpreter (-I -S: no site, no imports beyond os and sys) of
# a few MB, so the job it forks starts that small and its ru_maxrss is its own.
LAUNCHER = """
import os, sys
result, command = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    try:
        os.execv(command[0], command)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
with open(result, "w") as out:
    out.write(f"{os.waitstatus_to_exitcode(status)} {usage.ru_maxrss}")
"""


class JobFailed(Exception):
    """The fresh `bgremover remove` process did not finish its image; one sentence saying why."""


def model_specs(name: str, user_folder: Path) -> dict:
    """{"u2netp": the bundled one, name: the one the user named}; ModelError if `name` is unknown."""
    return {
        BASELINE: matting.load_model_spec(BASELINE, matting.models_dir()),
        name: matting.find_model_spec(name, user_folder),
    }


def compare(corpus: list[Path], specs: dict, settings, options: matting.Options, folder: Path) -> dict:
    """{"models": {name: numbers}, "agreement": {...}} for the models in `specs`, baseline first."""
    forkserver.tune_malloc_here()  # the heap settings every job gets, as in the other in-process runs
    sessions, session_ms = open_sessions(specs, settings)
    inference_ms = inference_medians(corpus[0], specs, sessions)
    pipeline = pipeline_medians(corpus, specs, sessions, options, folder / "pipeline")
    agreement = agreement_section(corpus, specs, sessions, options)
    del sessions  # their memory and threads, before the fresh processes want the cores
    job_image = largest_image(corpus)
    models = {}
    for name, spec in specs.items():
        models[name] = {
            "input": "x".join(map(str, spec.input_size)),
            "file_mb": round(spec.path.stat().st_size / 2**20, 1),
            "session_ms": session_ms[name],
            "model_alone": {"runs": INFERENCE_RUNS, "inference_ms": inference_ms[name]},
            "pipeline": pipeline[name],
            "one_job": one_job(spec, job_image, settings, folder / "jobs" / name),
        }
    other = list(specs)[1]
    models[other]["vs_" + BASELINE] = ratios(models[other], models[BASELINE])
    return {"models": models, "agreement": agreement}


def ratios(model: dict, baseline: dict) -> dict:
    return {
        "ms_per_image_ratio": ratio(model["pipeline"]["ms_per_image"], baseline["pipeline"]["ms_per_image"]),
        "inference_ms_ratio": ratio(model["model_alone"]["inference_ms"], baseline["model_alone"]["inference_ms"]),
    }


def ratio(numerator: float, denominator: float) -> float:
    # Three significant figures: a tiny test model can be 0.0123 times u2netp, an IS-Net 8.14 times.
    return float(f"{numerator / denominator:.3g}")


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


# ---------------------------------------------------------------- in this process


def open_sessions(specs: dict, settings) -> tuple[dict, dict[str, float]]:
    """One fresh session per model with the daemon's threads and providers, and how long each took."""
    # The first session in a process also sets up onnxruntime itself: a throwaway one
    # pays for that, so it lands on neither model's number.
    matting.create_session(specs[BASELINE], settings.threads, settings.providers)
    sessions, session_ms = {}, {}
    for name, spec in specs.items():
        start = time.perf_counter()
        sessions[name] = matting.create_session(spec, settings.threads, settings.providers)
        session_ms[name] = ms(time.perf_counter() - start)
    return sessions, session_ms


def inference_medians(image_path: Path, specs: dict, sessions: dict) -> dict[str, float]:
    """The model alone on a prepared tensor: median ms per run, the models taking turns."""
    image = matting.decode(image_path).image
    tensors = {name: matting.preprocess(image, spec) for name, spec in specs.items()}
    for name, spec in specs.items():
        matting.infer(sessions[name], tensors[name], spec)  # warm-up
    runs: dict[str, list[float]] = {name: [] for name in specs}
    for _ in range(INFERENCE_RUNS):
        for name, spec in specs.items():
            start = time.perf_counter()
            matting.infer(sessions[name], tensors[name], spec)
            runs[name].append(time.perf_counter() - start)
    return {name: ms(statistics.median(times)) for name, times in runs.items()}


def pipeline_medians(corpus: list[Path], specs: dict, sessions: dict, options, folder: Path) -> dict[str, dict]:
    """Per model: median ms per image through the whole pipeline, and each stage's median."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, spec in specs.items():
        cut_out(corpus[0], spec, sessions[name], options, folder)  # warm-up: first allocations, first imports
    rows: dict[str, list[dict]] = {name: [] for name in specs}
    for index, path in enumerate(corpus):
        for name in in_turn(list(specs), index):
            rows[name].append(cut_out(path, specs[name], sessions[name], options, folder))
    return {name: {"images": len(corpus), **medians(found)} for name, found in rows.items()}


def in_turn(names: list[str], index: int) -> list[str]:
    """The names rotated by `index`.

    Who goes first changes with each image, so neither model always reads the
    file cold, nor always runs in the other's wake.
    """
    shift = index % len(names)
    return names[shift:] + names[:shift]


def cut_out(path: Path, spec, session, options: matting.Options, folder: Path) -> dict[str, float]:
    """One image through remove_background: {"ms_per_image": wall, "decode_ms": ..., ...}."""
    output = folder / f"{spec.name}{matting.FORMAT_EXTENSIONS[options.output_format]}"
    start = time.perf_counter()
    outcome = matting.remove_background(path, output, session, spec, options, folder / f"{spec.name}.mask.png")
    wall = time.perf_counter() - start
    return {"ms_per_image": wall * 1000, **{f"{stage}_ms": value for stage, value in outcome.timings_ms.items()}}


def medians(rows: list[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(row[key] for row in rows), 2) for key in rows[0]}


# ---------------------------------------------------------------- agreement


def agreement_section(corpus: list[Path], specs: dict, sessions: dict, options: matting.Options) -> dict:
    """How far the other model's mask agrees with the baseline's, image by image, at the photo's size."""
    found = {path.name: mask_agreement(path, specs, sessions, options) for path in corpus}
    ious = [iou for iou, _ in found.values()]
    differences = [difference for _, difference in found.values()]
    baseline, other = specs
    return {
        "model": other,
        "against": baseline,
        "images": len(found),
        "subject_alpha_at_least": SUBJECT_ALPHA,
        "iou_median": round(statistics.median(ious), 4),
        "iou_min": round(min(ious), 4),
        "alpha_diff_levels_median": round(statistics.median(differences), 2),
        "alpha_diff_levels_max": round(max(differences), 2),
        "iou_per_image": {name: round(iou, 4) for name, (iou, _) in found.items()},
    }


def mask_agreement(path: Path, specs: dict, sessions: dict, options: matting.Options) -> tuple[float, float]:
    """(IoU of the subjects, mean absolute alpha difference in levels of 255) of the two models' masks."""
    image = matting.decode(path, options.max_megapixels, options.large_images).image
    first, second = (model_mask(image, spec, sessions[name]) for name, spec in specs.items())
    return iou(first >= SUBJECT_ALPHA, second >= SUBJECT_ALPHA), float(np.abs(first - second).mean())


def model_mask(image: Image.Image, spec, session) -> np.ndarray:
    """The model's raw mask at the photo's own size, as int16 so differences cannot wrap."""
    raw = matting.infer(session, matting.preprocess(image, spec), spec)
    return np.asarray(matting.postprocess(raw, image.size, spec), dtype=np.int16)


def iou(first: np.ndarray, second: np.ndarray) -> float:
    """Intersection over union of two boolean masks; two empty masks agree completely."""
    union = np.count_nonzero(first | second)
    return np.count_nonzero(first & second) / union if union else 1.0


# ---------------------------------------------------------------- one job in a fresh process


def largest_image(corpus: list[Path]) -> Path:
    """The image with the most pixels: the one a memory limit has to allow for."""

    def pixels(path: Path) -> int:
        with Image.open(path) as image:
            return image.width * image.height

    return max(corpus, key=pixels)


def one_job(spec, image: Path, settings, folder: Path) -> dict:
    """The peak memory of a fresh `bgremover remove` process cutting out one image with this model.

    That is what one job of the daemon needs, to hold against job_memory_limit_mb.
    """
    folder.mkdir(parents=True, exist_ok=True)
    log_path, result_path = folder / "remove.log", folder / "exit-and-peak.txt"
    # Absolute: the child works in `folder`, and --images may have been given relative to ours.
    command = [
        sys.executable,
        "-m",
        "bgremover",
        "remove",
        "--root",
        str(folder / "root"),
        str(image.absolute()),
        str(folder / "cutout.png"),
    ]
    doing = f"`bgremover remove` with model {spec.name}"
    if not run_measured(command, result_path, log_path, job_environment(spec, settings), settings.job_timeout_seconds):
        raise JobFailed(f"{doing} did not finish within job_timeout_seconds = {settings.job_timeout_seconds:g}")
    try:
        code, peak_kb = map(int, result_path.read_text().split())
    except (OSError, ValueError):  # the launcher itself failed: its traceback is in the log
        raise JobFailed(f"{doing} could not be started: {last_line(log_path)}") from None
    if code < 0:
        raise JobFailed(f"{doing} was killed by signal {-code}, perhaps for want of memory")
    if code != 0:
        raise JobFailed(f"{doing} exited with code {code}: {last_line(log_path)}")
    return {
        "image": image.name,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "job_memory_limit_mb": settings.job_memory_limit_mb,
    }


def job_environment(spec, settings) -> dict[str, str]:
    """The model and the settings a job's memory depends on; no other BGREMOVER_* variable.

    Leaving out the rest (a config file, output "both", a crop) keeps the child
    doing one plain cutout, the same for both models.
    """
    env = {key: value for key, value in os.environ.items() if not key.startswith("BGREMOVER_")}
    for name in JOB_MEMORY_SETTINGS:
        value = getattr(settings, name)
        env[f"BGREMOVER_{name.upper()}"] = ",".join(value) if isinstance(value, tuple) else str(value)
    # The folder the spec came from, as the supervisor tells its jobs: the baseline is then the bundled
    # u2netp even where the user's folder holds one of their own.
    env.update(BGREMOVER_MODEL=spec.name, BGREMOVER_MODELS_DIR=str(spec.path.parent))
    # A source checkout is not installed: let `python -m bgremover` find this very package.
    package_parent = str(Path(bgremover.__file__).parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    return env


def run_measured(command: list[str], result_path: Path, log_path: Path, env: dict[str, str], limit_s: float) -> bool:
    """Run `command` under LAUNCHER, output to log_path; False if it ran past limit_s and was killed."""
    # The child keeps its own copy of the descriptor; ours can close at once.
    with open(log_path, "wb") as log_file:
        launcher = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(result_path), *command],
            cwd=log_path.parent,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            process_group=0,  # one group for the launcher and the job: one kill stops both
        )
    try:
        launcher.wait(limit_s)
        return True
    except subprocess.TimeoutExpired:
        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait()
        return False


def last_line(path: Path) -> str:
    lines = path.read_text(errors="replace").strip().splitlines()
    return lines[-1].removeprefix("bgremover: ") if lines else "it printed nothing"
