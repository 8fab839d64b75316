"""What the Python API's Session saves: the model loaded once and reused, against one-shot `remove()` calls.

Each one-shot call loads the model again; a Session pays that once. The figures
are medians per image on the bench's small probe images, so the difference is
mostly the model's load.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from bgremover.bench.figures import median_of, ms, ratio


def session_reuse(model: str, pictures: list[Path]) -> dict:
    """The same pictures through one reused Session, then through one-shot calls; medians and their ratio."""
    from bgremover.api import Session, remove  # the API loads numpy and onnxruntime: only when measured

    data = [path.read_bytes() for path in pictures]
    started = time.perf_counter()
    shared = Session(model)
    load_ms = ms(time.perf_counter() - started)
    reused = timed(lambda picture: remove(picture, session=shared), data)
    one_shot = timed(lambda picture: remove(picture, model=model), data)
    return {
        "images": len(data),
        "session_load_ms": load_ms,
        "reused_ms": median_of(reused),
        "one_shot_ms": median_of(one_shot),
        "one_shot_over_reused_ratio": ratio(median_of(one_shot), median_of(reused)),
    }


def timed(call: Callable[[bytes], object], data: list[bytes]) -> list[float]:
    times = []
    for picture in data:
        started = time.perf_counter()
        call(picture)
        times.append(ms(time.perf_counter() - started))
    return times
