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


def rerender_against_session(settings: Settings, corpus: list[Path], workdir: Path) -> dict:
    from bgremover.recipes import preset_names

    first, second = preset_names()[:2]
    sections, _ = run_daemon(settings, "png", corpus, workdir, [], environment={"BGREMOVER_RECIPES": first})
    session = sections["daemon"]
    root = workdir / "root"
    env = daemon_environment(settings, "png")
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "bgremover", "rerender", BENCH_SESSION, "--root", str(root), "--recipe", second],
        env=env,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0 or f"rerendered {len(corpus)} images" not in done.stdout:
        raise BenchError(f"rerender failed (exit code {done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    return {
        "session": {
            "recipe": first,
            "images": session["images"],
            "done": session["done"],
            "elapsed_s": session["elapsed_s"],
            "ms_per_image": session["ms_per_image"],
        },
        "rerender": {
            "recipe": second,
            "images": len(corpus),
            "elapsed_s": round(seconds, 2),
            "ms_per_image": round(seconds * 1000 / len(corpus), 1),
            "against the session": round(seconds / session["elapsed_s"], 3),
            "said": done.stdout.strip().splitlines()[-1],
        },
    }
