"""`bgremover bench --models u2netp,u2net,isnet-medium`: each model's allowed paths, and rembg, on the same photos.

For every model named, in one run on one corpus:
- the real daemon, at the job slots the settings choose, once on each path
  the model's recorded check allowed on this CPU (fp32 onnxruntime always):
  throughput, CPU seconds per image (the daemon and every job it reaped),
  what a fresh job process costs to set up, the largest job's peak memory;
- each path's cutouts against fp32 onnxruntime's (IoU of the subjects, alpha
  MAE), and against the project's reference mattes (tests/reference), where a
  source checkout has them;
- which path the settings as they are would use (`precision = "auto"`);
- `rembg p -m` the same model on the same folder (bench/rembg.py), and the
  ratio of the daemon's throughput on that path to rembg's: the ratio of the
  medians of `repeat` runs of each, taken in turns (see `alternated`);
- the peak memory of one job at max_megapixels (40 MP by default) on each
  path, against job_memory_limit_mb.
"""

from __future__ import annotations

import io
import os
import resource
import statistics
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bgremover.bench import models as modelbench
from bgremover.bench import rembg
from bgremover.bench.daemon import run_daemon
from bgremover.bench.figures import BenchError, ratio
from bgremover.imaging import matting
from bgremover.models import paths
from bgremover.models.runtime import open_path
from bgremover.tuning import agreement

REFERENCES = Path(__file__).resolve().parents[3] / "tests" / "reference"  # a source checkout's
REFERENCE_PHOTOS = ("astronaut", "chelsea", "coffee")
PHOTOS = Path(__file__).parent / "photos"
REPEAT = 3  # runs of the default path and of rembg, each, for their medians


def allowed_paths(spec, folder: Path) -> list[paths.InferencePath]:
    """fp32 onnxruntime, then every path the model's check allowed on this CPU, fastest first."""
    records = paths.current_records(spec, folder)
    found = [paths.InferencePath(*paths.REFERENCE, spec.path)]
    for name, record in sorted(records.items(), key=lambda one: one[1].get("ms", 0)):
        backend, precision = name.split("/", 1)
        if paths.passes(record) and (backend, precision) != paths.REFERENCE:
            try:
                found.append(paths.path_for(spec, folder, backend, precision))
            except matting.ModelError:
                continue
    return found


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def daemon_run(settings, corpus: list[Path], path: paths.InferencePath, spec, folder: Path) -> dict:
    """The corpus through the real daemon on one path; its figures and its cutouts' alpha, by name."""
    folder.mkdir(parents=True)
    env = {"BGREMOVER_MODEL": spec.name, "BGREMOVER_BACKEND": path.backend, "BGREMOVER_PRECISION": path.precision}
    before = children_cpu_s()
    sections, ready = run_daemon(settings, "png", corpus, folder, probes=[], environment=env)
    cpu = children_cpu_s() - before  # the daemon and every job it reaped, all stopped and waited for now
    daemon, isolation, memory = sections["daemon"], sections["isolation"], sections["memory"]
    if daemon["done"] != len(corpus):
        raise BenchError(f"{spec.name} on {path.name}: the daemon finished {daemon['done']} of {len(corpus)} images")
    return {
        "job_slots": ready.get("job_slots"),
        "threads_per_job": ready.get("intra_op_threads", ready.get("threads")),
        "images_per_s": daemon["images_per_s"],
        "cpu_s_per_image": round(cpu / len(corpus), 3),
        "job_setup_ms": isolation["process_start_ms"],
        "session_ms": isolation["session_create_ms"],
        "job_peak_rss_mb_max": memory["job_peak_rss_mb_max"],
    }, zipped_alphas(folder / "root" / "outbox")


def zipped_alphas(outbox: Path) -> dict[str, np.ndarray]:
    found = {}
    for archive in sorted(outbox.glob("*.zip")):
        with zipfile.ZipFile(archive) as zipped:
            for member in zipped.namelist():
                with Image.open(io.BytesIO(zipped.read(member))) as image:
                    found[Path(member).stem] = np.asarray(image.getchannel("A"))
    return found


def folder_alphas(folder: Path) -> dict[str, np.ndarray]:
    found = {}
    for file in sorted(folder.glob("*.png")):
        with Image.open(file) as image:
            found[file.stem] = np.asarray(image.getchannel("A"))
    return found


def agreement_with(found: dict[str, np.ndarray], reference: dict[str, np.ndarray]) -> dict:
    """IoU of the subjects and alpha MAE of the cutouts against the reference's, image by image."""
    names = sorted(reference)
    if sorted(found) != names:
        raise BenchError(f"the cutouts differ in name from the reference's ({len(found)} against {len(names)})")
    # The same rule as the gate's: a photo with no subject in either is measured by its alpha alone.
    ious, _ = agreement.subject_ious([found[name] for name in names], [reference[name] for name in names])
    errors = [float(np.abs(found[name].astype(np.int16) - reference[name]).mean()) for name in names]
    return {
        "iou_mean": round(statistics.fmean(ious), 4),
        "iou_lowest": round(min(ious), 4),
        "alpha_mae": round(statistics.fmean(errors), 2),
    }


def reference_quality(spec, path: paths.InferencePath, cache_dir: Path) -> dict | None:
    """The path's masks of the reference photos against tests/reference, where a checkout has them."""
    if not REFERENCES.is_dir():
        return None
    session = open_path(spec, path, 1, cache_dir=cache_dir)
    found, truth = {}, {}
    for name in REFERENCE_PHOTOS:
        image = matting.decode(PHOTOS / f"{name}.jpg").image
        raw = matting.infer(session, matting.preprocess(image, spec), spec)
        found[name] = np.asarray(matting.postprocess(raw, image.size, spec))
        with Image.open(REFERENCES / f"{name}.alpha.png") as reference:
            truth[name] = np.asarray(reference)
    return agreement_with(found, truth)


def memory_at_limit(settings, spec, path: paths.InferencePath, image: Path, folder: Path) -> dict:
    """One fresh job's peak memory on a max_megapixels photo, on this path."""
    chosen = settings.model_copy(update={"backend": path.backend, "precision": path.precision})
    job = modelbench.one_job(spec, image, chosen, folder)
    return {**job, "within_limit": job["peak_rss_mb"] <= settings.job_memory_limit_mb}


def large_photo(settings, folder: Path) -> Path:
    """A photo of max_megapixels (4:3), made from the bench's first photo."""
    pixels = settings.max_megapixels * 1e6
    width = int((pixels * 4 / 3) ** 0.5)
    size = (width, int(pixels // width))
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"large-{size[0]}x{size[1]}.jpg"
    with Image.open(sorted(PHOTOS.glob("*.jpg"))[0]) as photo:
        photo.convert("RGB").resize(size, Image.Resampling.BICUBIC).save(target, "JPEG", quality=90)
    return target


def one_model(settings, name: str, corpus: list[Path], workdir: Path, large: Path, repeat: int = REPEAT) -> dict:
    folder = settings.models_folder  # where the checks are, also of a bundled model
    spec = matting.find_model_spec(name, folder)
    chosen = paths.choose(spec, folder, settings.backend, settings.precision)
    runs, alphas = {}, {}
    for path in allowed_paths(spec, folder):
        where = workdir / name / path.name.replace("/", "-")
        os.sync()  # nothing of earlier runs left to write back: see before rembg.run
        runs[path.name], alphas[path.name] = daemon_run(settings, corpus, path, spec, where)
        runs[path.name]["reference_quality"] = reference_quality(spec, path, settings.compile_cache)
        runs[path.name]["memory_at_max_megapixels"] = memory_at_limit(settings, spec, path, large, where / "large")
    reference = alphas[paths.InferencePath(*paths.REFERENCE, spec.path).name]
    for path_name, found in alphas.items():
        runs[path_name]["against_fp32"] = agreement_with(found, reference)
    # Each timed run starts with nothing left to write back (the photos, the last run's cutouts and
    # ZIP): the daemon makes every result durable, and a disk still busy with another run's pages
    # would slow whichever run came next.
    os.sync()
    theirs = rembg.run(spec, corpus[0].parent, len(corpus), workdir / name / "rembg")
    theirs["against_fp32"] = agreement_with(folder_alphas(Path(theirs.pop("output"))), reference)
    default = chosen if chosen.name in runs else paths.InferencePath(*paths.REFERENCE, spec.path)
    ours = runs[default.name]

    def again(index: int) -> tuple[float, float]:
        where = workdir / name / f"{default.name.replace('/', '-')}-{index}"
        os.sync()
        figures, _ = daemon_run(settings, corpus, default, spec, where)
        os.sync()
        their_figures = rembg.run(spec, corpus[0].parent, len(corpus), workdir / name / f"rembg-{index}")
        return figures["images_per_s"], their_figures["images_per_s"]

    turns = alternated((ours["images_per_s"], theirs["images_per_s"]), again, repeat)
    return {
        "default_path": chosen.name,
        "default_path_passed": chosen.name == "onnxruntime/fp32" or chosen.name in runs,
        "paths": runs,
        "rembg": theirs,
        **turns,
        # One run of each path, in one sequence: the default against fp32 like for like.
        "default_over_fp32_ratio": ratio(ours["images_per_s"], runs["onnxruntime/fp32"]["images_per_s"]),
    }


def alternated(first: tuple[float, float], again: Callable[[int], tuple[float, float]], repeat: int) -> dict:
    """The daemon's and rembg's images per second over `repeat` runs each, and the ratio of their medians.

    The runs take turns (ours, theirs, ours, theirs, ...): a shared machine
    that slows down or speeds up during the bench then weighs on both sides
    alike. On the 2-core machine of docs/models.md, rembg's own figure for one
    folder moved by 15 % from one run to the next, so one pair of runs can
    make the ratio look far better or far worse than it is.
    """
    pairs = [first, *(again(index) for index in range(2, repeat + 1))]
    ours, theirs = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
    ours_median, their_median = statistics.median(ours), statistics.median(theirs)
    return {
        "default_images_per_s_runs": ours,
        "rembg_images_per_s_runs": theirs,
        "default_images_per_s_median": ours_median,
        "rembg_images_per_s_median": their_median,
        "default_over_rembg_ratios": [ratio(mine, their) for mine, their in pairs],
        "default_over_rembg_ratio": ratio(ours_median, their_median),
    }


def compare(settings, names: list[str], corpus: list[Path], workdir: Path, repeat: int = REPEAT) -> dict:
    rembg.installed()  # before any figure: its first install takes minutes
    large = large_photo(settings, workdir)
    return {name: one_model(settings, name, corpus, workdir, large, repeat) for name in names}
