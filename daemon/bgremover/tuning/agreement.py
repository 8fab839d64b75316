"""`bgremover models verify NAME`: every inference path of a model measured against fp32 onnxruntime.

Each path (backend × precision) cuts out the project's own photo set, and its
masks are compared with fp32 onnxruntime's, photo by photo: the IoU of the
subjects (alpha ≥ 128) and the mean absolute alpha difference in levels of
255. A photo on which neither mask holds a subject worth the name (the
model found none) has no IoU to give, only its alpha difference. The mean and
lowest IoU decide whether the path passes the gate
(models/paths.py); the record, with the time per inference, the model's
checksum and the CPU features it was measured on, goes into the models
folder's manifest, where `precision = "auto"` reads it.
"""

from __future__ import annotations

import functools
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from bgremover.imaging import matting
from bgremover.job.process import fit_huge_pages
from bgremover.models import paths, photoset
from bgremover.models.manifest import ModelError, ModelSpec, read_checks, read_manifest
from bgremover.models.runtime import open_path
from bgremover.runners.forkserver import tune_malloc_here
from bgremover.tuning import mixed

SUBJECT_ALPHA = 128  # a pixel with at least this alpha counts as subject for IoU
# Two masks that hold less than this share of the photo as subject between them have no subject to compare,
# and their IoU is noise: fp32 IS-Net finds 826 pixels of subject on "portrait over chelsea" (0.17 % of it,
# under a faint veil no higher than alpha 160), and bf16 moving 192 of them across alpha 128, by 4 levels at
# most, made an IoU of 0.77 there. A path that finds a subject fp32 did not, or loses one, makes the union
# large, and the photo counts.
NO_SUBJECT = 0.005
BF16 = "openvino/bf16"  # the one path whose failure `models verify` answers with a variant (tuning/mixed.py)
PROBES = 3  # fresh processes measuring a path's set-up; the median counts


def available(spec: ModelSpec, folder: Path, say: Callable[[str], None] = print) -> list[paths.InferencePath]:
    """Every path this installation can run for the model; one line for each backend or variant it cannot."""
    found = []
    for backend in paths.BACKENDS:
        if backend == "openvino":
            from bgremover.models.openvino_session import missing

            if missing():
                say(f"{spec.name}: openvino paths not checked: {missing()}")
                continue
        for precision in paths.OFFERED[backend]:
            try:
                found.append(paths.path_for(spec, folder, backend, precision))
            except ModelError:
                continue  # no INT8 variant: nothing to check
    return found


def masks(
    spec: ModelSpec,
    path: paths.InferencePath,
    images: list,
    threads: int,
    cache_dir: Path | None,
    with_setup: bool = True,
):
    """The path's masks of `images` at their own size (uint8), its median CPU ms per inference, and its set-up.

    CPU time, not wall time: on a machine others share, a busy minute would
    otherwise decide which path is "fastest". The set-up is measured apart, in
    fresh processes (setup_ms); without `with_setup` it is not measured (0).
    """
    session = open_path(spec, path, threads, cache_dir=cache_dir)  # the first fills OpenVINO's compile cache
    matting.infer(session, matting.blank_input(spec), spec)  # a warm run: the first pays for allocation
    found, times = [], []
    for image in images:
        tensor = matting.preprocess(image, spec)
        started = time.process_time()  # every thread of this process: OpenVINO's pool included
        raw = matting.infer(session, tensor, spec)
        times.append((time.process_time() - started) * 1000)
        found.append(np.asarray(matting.postprocess(raw, image.size, spec), dtype=np.uint8))
    del session
    setup = setup_ms(spec, path, threads, cache_dir) if with_setup else 0.0
    return found, statistics.median(times), setup


def setup_ms(spec: ModelSpec, path: paths.InferencePath, threads: int, cache_dir: Path | None) -> float:
    """CPU ms a job spends on the path beyond its one inference: `auto` adds it to each image's cost.

    Measured in a fresh process started as a job is (probe), since that is
    where the cost lies: what a process has imported and allocated before
    hides it. The median of three probes.
    """
    request = json.dumps(
        {
            "name": spec.name,
            "folder": str(spec.path.parent),
            "path": [path.backend, path.precision, str(path.file)],
            "threads": threads,
            "cache_dir": str(cache_dir) if cache_dir else None,
        }
    )
    found = []
    for _ in range(PROBES):
        done = subprocess.run(
            [sys.executable, "-c", "from bgremover.tuning.agreement import probe; probe()", request],
            capture_output=True,
            text=True,
            check=False,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            reason = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ModelError(f"measuring the set-up of {path.name} failed: {reason}")
        found.append(float(done.stdout))
    return statistics.median(found)


def probe() -> None:
    """In a fresh process, as a job: the job's heap, the path set up and run twice; prints the set-up's CPU ms.

    An onnxruntime job inherits the session the fork server made, so making it
    is not counted, only its first run's extra allocations; an OpenVINO job
    imports OpenVINO and loads the compiled model itself.
    """
    request = json.loads(sys.argv[1])
    backend, precision, file = request["path"]
    path = paths.InferencePath(backend, precision, Path(file))
    spec = matting.find_model_spec(request["name"], Path(request["folder"]))
    tune_malloc_here()
    fit_huge_pages(spec)
    cache_dir = Path(request["cache_dir"]) if request["cache_dir"] else None
    held = backend == "onnxruntime"
    if not held:
        from bgremover.models.openvino_session import leave_out_conversion_tools

        leave_out_conversion_tools()  # as a job does
    if held:
        session = open_path(spec, path, request["threads"], cache_dir=cache_dir)
    started = time.process_time()
    if not held:
        session = open_path(spec, path, request["threads"], cache_dir=cache_dir)
    blank = matting.blank_input(spec)
    matting.infer(session, blank, spec)
    first = time.process_time()
    matting.infer(session, blank, spec)
    second = time.process_time() - first
    print(round(max(0.0, (first - started - second) * 1000), 1))


def iou(first: np.ndarray, second: np.ndarray) -> float:
    """Intersection over union of the subjects of two masks; two empty masks agree completely."""
    a, b = first >= SUBJECT_ALPHA, second >= SUBJECT_ALPHA
    union = np.count_nonzero(a | b)
    return np.count_nonzero(a & b) / union if union else 1.0


def has_subject(first: np.ndarray, second: np.ndarray) -> bool:
    """Whether the two masks hold enough subject between them for their IoU to say anything."""
    union = np.count_nonzero((first >= SUBJECT_ALPHA) | (second >= SUBJECT_ALPHA))
    return union >= NO_SUBJECT * first.size


def subject_ious(found: list[np.ndarray], reference: list[np.ndarray]) -> tuple[list[float], int]:
    """The IoU of each pair of masks with a subject between them, and how many pairs had none.

    Where no pair had one, the masks agree that there is none (to the alpha MAE): [1.0].
    """
    pairs = list(zip(found, reference, strict=True))
    ious = [iou(one, other) for one, other in pairs if has_subject(one, other)]
    return ious or [1.0], len(pairs) - len(ious)


def compare(found: list[np.ndarray], reference: list[np.ndarray], ms: float, setup: float) -> dict:
    """One path's record: agreement with the reference's masks, its speed, and whether it passes the gate."""
    ious, without = subject_ious(found, reference)
    errors = [float(np.abs(one.astype(np.int16) - other).mean()) for one, other in zip(found, reference, strict=True)]
    record = {
        "mean_iou": round(float(statistics.fmean(ious)), 5),
        "lowest_iou": round(float(min(ious)), 5),
        "alpha_mae": round(float(statistics.fmean(errors)), 3),
        "photos_without_subject": without,
        "ms": round(float(ms), 1),
        "setup_ms": round(float(setup), 1),
    }
    return {**record, "allowed": bool(paths.passes(record))}


def verify(
    name: str,
    folder: Path,
    threads: int = 1,  # jobs run one thread each when there are as many as cores: the throughput that counts
    cache_dir: Path | None = None,
    images: list[tuple[str, Image.Image]] | None = None,
    say: Callable[[str], None] = print,
) -> dict:
    """Check every available path of the model and record the result in the models folder's manifest."""
    spec = matting.find_model_spec(name, folder)
    images = images if images is not None else photoset.photos()
    pictures = [image for _, image in images]
    reference_path = paths.InferencePath(*paths.REFERENCE, spec.path)
    reference, reference_ms, reference_setup = masks(spec, reference_path, pictures, threads, cache_dir)
    records = {reference_path.name: compare(reference, reference, reference_ms, reference_setup)}
    check = {**read_checks(folder).get(spec.name, {})}
    for path in available(spec, folder, say):
        if path.name == reference_path.name:
            continue
        try:
            found, ms, setup = masks(spec, path, pictures, threads, cache_dir)
        except ModelError as exc:
            say(f"{spec.name} {path.name}: cannot run: {exc}")
            records[path.name] = {"error": str(exc), "allowed": False}
            continue
        records[path.name] = compare(found, reference, ms, setup)
        if path.name == BF16:
            search = functools.partial(bf16_variant, spec, folder, pictures, reference, threads, cache_dir, say)
            records[path.name] = answer_bf16(spec, folder, check, records[path.name], search, say)
    check.update(sha256=spec.sha256, cpu=paths.cpu_features(), photos=len(pictures), threads=threads, paths=records)
    record(folder, spec.name, check)
    mixed.remove_others(spec, folder, check.get("bf16", {}).get("file"))
    for path_name, one in records.items():
        say(line(spec.name, path_name, one))
    return check


def answer_bf16(
    spec: ModelSpec, folder: Path, check: dict, measured: dict, search: Callable, say: Callable[[str], None]
) -> dict:
    """OpenVINO bf16's record: as measured if it passed, else its variant's (registered in `check`) if one passes.

    The path measured is the registered variant where there is one: a variant
    that fails now (another CPU, another OpenVINO) is dropped and searched again.
    """
    kept = check.get("bf16", {}).get("fp32_convolutions") if paths.variant_file(spec, folder, "bf16") else None
    if measured["allowed"]:
        return {**measured, "fp32_convolutions": kept} if kept else measured
    say(f"{line(spec.name, BF16, measured)}; looking for the convolutions it must keep in fp32")
    check.pop("bf16", None)
    try:
        found = search()
    except ModelError as exc:
        say(f"{spec.name}: no bf16 variant: {exc}")
        return measured
    if found is None:
        return measured
    check["bf16"], answered = found
    return answered


def bf16_variant(
    spec: ModelSpec,
    folder: Path,
    pictures: list,
    reference: list[np.ndarray],
    threads: int,
    cache_dir: Path | None,
    say: Callable[[str], None],
) -> tuple[dict, dict] | None:
    """Where plain bf16 failed: the variant with its last convolutions in fp32 (tuning/mixed.py) and its record."""

    def passes(file: Path) -> dict:
        found, ms, _ = masks(spec, paths.InferencePath("openvino", "bf16", file), pictures, threads, None, False)
        return compare(found, reference, ms, 0.0)

    found = mixed.keep_what_bf16_must(spec, folder, passes, say)
    if found is None:
        return None
    variant, record = found
    # The masks and their timing are the search's, of the same IR; only a job's set-up is left to
    # measure, where the variant now lies (its probes fill the compile cache the jobs share).
    setup = setup_ms(spec, paths.InferencePath("openvino", "bf16", folder / variant["file"]), threads, cache_dir)
    return variant, {**record, "setup_ms": round(float(setup), 1), "fp32_convolutions": variant["fp32_convolutions"]}


def line(name: str, path_name: str, record: dict) -> str:
    """One path's result as `models verify` prints it."""
    if "error" in record:
        return f"{name} {path_name}: refused ({record['error']})"
    verdict = "allowed" if record["allowed"] else "refused"
    without = record.get("photos_without_subject", 0)
    aside = f" ({without} photo{'s' if without > 1 else ''} without a subject, by alpha MAE only)" if without else ""
    kept = record.get("fp32_convolutions")
    variant = f" with its last {kept} convolutions in fp32" if kept else ""
    return (
        f"{name} {path_name}: {verdict}{variant}: IoU mean {record['mean_iou']:.4f}, lowest {record['lowest_iou']:.4f}{aside}, "
        f"alpha MAE {record['alpha_mae']:.2f}, {record['ms']:.0f} ms of CPU per inference"
        f" and {record.get('setup_ms', 0):.0f} ms per job to set up"
    )


def record(folder: Path, name: str, check: dict) -> None:
    """Write the model's check into the models folder's manifest, keeping everything else in it."""
    from bgremover.models.fetch import write_manifest  # the one writer of the manifest

    folder.mkdir(parents=True, exist_ok=True)
    write_manifest(folder, read_manifest(folder, missing_ok=True), {**read_checks(folder), name: check})
