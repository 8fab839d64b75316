"""The CPU time of one inference of each model, as docs/models.md quotes it.

    .venv/bin/python docs/model_cpu.py MODELS_DIR u2netp u2net modnet isnet-medium

Each model gets one onnxruntime session with one intra-op thread, made as a job
makes it; each of the three photos the project ships (astronaut, chelsea,
coffee) is preprocessed by the model's own recipe, run once to warm up, then
five times. The figure is the process's CPU time around the model run alone
(no decoding, resizing or encoding), median of the five: CPU time rather than
the clock, so that other work on a shared machine lengthens it less.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "daemon"))

from bgremover.imaging import matting  # noqa: E402 - after the path above
from bgremover.models import runtime  # noqa: E402
from bgremover.models.manifest import find_model_spec  # noqa: E402

PHOTOS = REPO / "daemon" / "bgremover" / "bench" / "photos"
RUNS = 5


def cpu_ms(run, *args) -> tuple[float, object]:
    """The CPU time of run(*args) in ms, and what it returned."""
    started = time.process_time()
    result = run(*args)
    return (time.process_time() - started) * 1000, result


def measure(name: str, folder: Path) -> str:
    spec = find_model_spec(name, folder)
    made, session = cpu_ms(runtime.create_session, spec, 1)
    medians = []
    for photo in ("astronaut", "chelsea", "coffee"):
        tensor = matting.preprocess(Image.open(PHOTOS / f"{photo}.jpg").convert("RGB"), spec)
        matting.infer(session, tensor, spec)  # the first run allocates; it is not the one we quote
        runs = [cpu_ms(matting.infer, session, tensor, spec)[0] for _ in range(RUNS)]
        medians.append(statistics.median(runs))
    per_photo = ", ".join(f"{ms:.0f}" for ms in medians)
    return (
        f"{name}: session {made:.0f} ms CPU; one inference {per_photo} ms CPU (astronaut, chelsea, coffee), "
        f"median {statistics.median(medians):.0f} ms"
    )


def main() -> None:
    folder, names = Path(sys.argv[1]), sys.argv[2:]
    for name in names:
        print(measure(name, folder), flush=True)


if __name__ == "__main__":
    main()
