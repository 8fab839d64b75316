"""`bgremover bench --options`: what each output option and recipe costs per image, and what `edges` changes.

Every variant runs the whole pipeline in this process (decode to encoded file)
on the same images with one model session, so the differences between their
medians are the options' own costs. For `edges`, the alpha is compared with
the model's raw mask pixel by pixel: inside the band around the subject's
contour (daemon.edges.band) and outside it.
"""

from __future__ import annotations

import dataclasses
import statistics
import time
from pathlib import Path

import numpy as np

from bgremover.imaging import edges, matting

OPTION_IMAGES = 10  # the corpus --options makes unless --count says otherwise
# Each variant is the daemon's defaults with these settings changed; the first is the baseline.
VARIANTS: dict[str, dict] = {
    "cutout png (baseline)": {},
    "background white, png": {"background": "#ffffff"},
    "background white, jpeg": {"background": "#ffffff", "output_format": "jpeg"},
    "crop subject": {"crop": "subject"},
    "crop square": {"crop": "square"},
    "crop square, size 2000": {"crop": "square", "size": 2000},
    "output mask": {"output": "mask"},
    "output both": {"output": "both"},
    "decontaminate": {"decontaminate": True},
    "edges clean": {"edges": "clean"},
    "edges refine": {"edges": "refine"},
}
CHANGED = 8  # an alpha that moved by at least this many levels of 255 counts as changed


def options_section(corpus: list[Path], base: matting.Options, spec, session, folder: Path) -> dict:
    """Per variant: median ms per image, and its cost over the baseline's median.

    The variants take turns on each image rather than running one after
    another, so a slow minute on a shared machine lands on all of them alike.
    """
    folder.mkdir(parents=True, exist_ok=True)
    base = dataclasses.replace(
        base,
        output_format="png",
        background="transparent",
        output="cutout",
        crop="none",
        size=None,
        edges="raw",
        decontaminate=False,
    )
    variants = {name: dataclasses.replace(base, **change) for name, change in VARIANTS.items()}
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for options in variants.values():
        one_run(corpus[0], options, spec, session, folder)  # warm-up: first allocations, first imports
    for path in corpus:
        for name, options in variants.items():
            runs[name].append(one_run(path, options, spec, session, folder))
    found = {name: medians(rows) for name, rows in runs.items()}
    baseline = found["cutout png (baseline)"]["ms_per_image"]
    for numbers in found.values():
        numbers["extra_ms"] = round(numbers["ms_per_image"] - baseline, 1)
    return {"images": len(corpus), "variants": found}


def one_run(path: Path, options: matting.Options, spec, session, folder: Path) -> dict:
    output = folder / f"out{matting.FORMAT_EXTENSIONS[options.output_format]}"
    start = time.perf_counter()
    timings = matting.remove_background(path, output, session, spec, options, folder / "out.mask.png").timings_ms
    return {
        "ms_per_image": (time.perf_counter() - start) * 1000,
        "postprocess_ms": timings["postprocess"],
        "encode_ms": timings["encode"],
        "output_kb": output.stat().st_size / 1024 if options.output != "mask" else None,
    }


# The recipe sets a job is timed with: the first preset alone, then the first five, each from one inference.
RECIPE_SETS = {"1 recipe": 1, "5 recipes": 5}


def recipes_section(corpus: list[Path], base: matting.Options, spec, session, folder: Path) -> dict:
    """A job's pipeline with one recipe against five (wall and CPU ms, inferences), and a rerender from the matte.

    Each run is what the job does: decode, one inference, the cutout encoded,
    the matte kept, then every recipe rendered and written. The rerender is what
    `bgremover rerender` does per image: the kept matte read, one recipe rendered
    and written, no model. The sets take turns on each image, as the variants do.
    """
    from bgremover.job import renders
    from bgremover.recipes import preset_names

    folder.mkdir(parents=True, exist_ok=True)
    names = preset_names()
    sets = {label: renders.load(",".join(names[:count]), None) for label, count in RECIPE_SETS.items()}
    rows: dict[str, list[dict]] = {label: [] for label in [*sets, "rerender 1 recipe"]}
    for recipes in sets.values():
        recipe_run(corpus[0], base, recipes, spec, session, folder)  # warm-up
    for path in corpus:
        for label, recipes in sets.items():
            rows[label].append(recipe_run(path, base, recipes, spec, session, folder))
        rows["rerender 1 recipe"].append(rerender_run(folder / "matte.png", sets["1 recipe"], folder))
    found = {label: medians(runs) for label, runs in rows.items()}
    one, five, again = (found[label] for label in rows)
    return {
        "recipes": {label: names[:count] for label, count in RECIPE_SETS.items()},
        **found,
        "5 against 1 (wall)": round(five["ms_per_image"] / one["ms_per_image"], 2),
        "5 against 1 (cpu)": round(five["cpu_ms_per_image"] / one["cpu_ms_per_image"], 2),
        "rerender against 1-recipe job (wall)": round(again["ms_per_image"] / one["ms_per_image"], 3),
    }


def recipe_run(path: Path, base: matting.Options, recipes: list, spec, session, folder: Path) -> dict:
    from bgremover.job import renders
    from bgremover.job.process import Counted

    model = Counted(session)

    def write(number: int, member: str, data: bytes) -> None:
        (folder / f"render{number}").write_bytes(data)

    def then(rgba, icc, lap) -> None:
        renders.write_matte(rgba, icc, folder / "matte.png", base.threads)
        # On the job's threads, as the job renders them (its --threads; here, as its inference, `threads`).
        renders.render_each(rgba, icc, recipes, renders.Naming("image.png"), write, base.threads)

    wall, cpu = time.perf_counter(), time.process_time()
    matting.remove_background(path, folder / "out.png", model, spec, base, None, then)
    return {
        "ms_per_image": (time.perf_counter() - wall) * 1000,
        "cpu_ms_per_image": (time.process_time() - cpu) * 1000,
        "inferences": model.runs,
    }


def rerender_run(matte: Path, recipes: list, folder: Path) -> dict:
    from bgremover.job import renders

    def write(number: int, member: str, data: bytes) -> None:
        (folder / f"again{number}").write_bytes(data)

    wall, cpu = time.perf_counter(), time.process_time()
    rgba, icc = renders.read_matte(matte)
    renders.render_each(rgba, icc, recipes, renders.Naming("image.png"), write)
    return {
        "ms_per_image": (time.perf_counter() - wall) * 1000,
        "cpu_ms_per_image": (time.process_time() - cpu) * 1000,
        "inferences": 0,
    }


def medians(rows: list[dict]) -> dict:
    return {
        key: None if rows[0][key] is None else round(statistics.median(row[key] for row in rows), 1) for key in rows[0]
    }


def edges_section(corpus: list[Path], spec, session) -> dict:
    """How far clean and refine move the alpha from the raw mask, on and off the boundary band."""
    per_mode: dict[str, list[dict]] = {"clean": [], "refine": []}
    for path in corpus:
        image, _, _ = matting.decode(path)
        raw = np.asarray(
            matting.postprocess(matting.infer(session, matting.preprocess(image, spec), spec), image.size, spec)
        )
        rgb = np.asarray(image.convert("RGB"))
        boundary = edges.band(raw, edges.band_width(raw.shape))
        for mode, found in per_mode.items():
            start = time.perf_counter()
            treated = edges.apply(mode, raw, rgb)
            found.append({"ms": (time.perf_counter() - start) * 1000, **alpha_change(raw, treated, boundary)})
    return {
        mode: {key: round(statistics.median(row[key] for row in rows), 3) for key in rows[0]}
        for mode, rows in per_mode.items()
    }


def alpha_change(raw: np.ndarray, treated: np.ndarray, boundary: np.ndarray) -> dict:
    """Mean absolute change in alpha levels and the share of pixels changed, inside and outside the band."""
    moved = np.abs(treated.astype(np.int16) - raw.astype(np.int16))
    inside, outside = moved[boundary], moved[~boundary]
    return {
        "band_pixels_percent": 100 * float(boundary.mean()),
        "band_mean_change": float(inside.mean()) if inside.size else 0.0,
        "band_changed_percent": 100 * float((inside >= CHANGED).mean()) if inside.size else 0.0,
        "outside_mean_change": float(outside.mean()) if outside.size else 0.0,
        "outside_changed_percent": 100 * float((outside >= CHANGED).mean()) if outside.size else 0.0,
    }
