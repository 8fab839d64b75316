"""`bgremover bench --rerender`: what `rerender` costs against running the session again.

A session of 100 images goes through the real daemon with one recipe (the
mattes are kept), and its time is the drop to its completion. Then
`bgremover rerender` renders a second recipe for the whole session from those
mattes, as a user runs it, in a process of its own; its time is the command's
wall time, start-up included. No model runs in it: the command's own summary
says so, and the bench checks that every image was rendered.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from bgremover.bench.daemon import BENCH_SESSION, daemon_environment, run_daemon
from bgremover.bench.figures import BenchError
from bgremover.settings import Settings

SESSION_IMAGES = 100


# The session's recipe, then the recipes it is rendered again with: a JPEG on white like the session's own,
# and a 2048-px WebP, the dearest of the presets to encode.
SESSION_RECIPE = "amazon"
AGAIN = ("ebay", "shopify-square")


def rerender_against_session(settings: Settings, corpus: list[Path], workdir: Path) -> dict:
    sections, _ = run_daemon(settings, "png", corpus, workdir, [], environment={"BGREMOVER_RECIPES": SESSION_RECIPE})
    session = sections["daemon"]
    found = {
        "session": {
            "recipe": SESSION_RECIPE,
            "images": session["images"],
            "done": session["done"],
            "elapsed_s": session["elapsed_s"],
            "ms_per_image": session["ms_per_image"],
        }
    }
    for recipe in AGAIN:
        found[f"rerender {recipe}"] = rerender(settings, workdir / "root", recipe, len(corpus), session["elapsed_s"])
    return found


def rerender(settings: Settings, root: Path, recipe: str, images: int, session_s: float) -> dict:
    """`bgremover rerender` of the bench's session with `recipe`, as a user runs it: wall time, start-up included."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bgremover", "rerender", BENCH_SESSION, "--root", str(root), "--recipe", recipe],
        env=daemon_environment(settings, "png"),
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0 or f"rerendered {images} images" not in done.stdout:
        raise BenchError(f"rerender failed (exit code {done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return {
        "images": images,
        "elapsed_s": round(seconds, 2),
        "ms_per_image": round(seconds * 1000 / images, 1),
        "against the session": round(seconds / session_s, 3),
        "said": done.stdout.strip().splitlines()[-1],
    }
