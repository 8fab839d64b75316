"""The bench's arithmetic: medians, ratios and differences that carry None through, and its one error."""

from __future__ import annotations

import statistics
from collections.abc import Iterable


class BenchError(Exception):
    """The bench could not measure what it set out to; one sentence saying why."""


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


def median_of(values: Iterable[float | None]) -> float | None:
    present = [float(value) for value in values if isinstance(value, (int, float))]
    return round(statistics.median(present), 2) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    if numerator is None or not denominator:
        return None
    return round(numerator / denominator, 2)


def percent(part: float | None, whole: float | None) -> float | None:
    share = ratio(part, whole)
    return None if share is None else round(100 * part / whole, 1)


def difference(value: float | None, less: float | None) -> float | None:
    if value is None or less is None:
        return None
    return round(value - less, 2)


def stage_medians(timings: Iterable[dict[str, float]]) -> dict[str, float]:
    """{"decode_ms": median, ...} over the stages the timings name, in the order first seen."""
    by_stage: dict[str, list[float]] = {}
    for timing in timings:
        for stage, value in timing.items():
            by_stage.setdefault(stage, []).append(float(value))
    return {f"{stage}_ms": round(statistics.median(values), 2) for stage, values in by_stage.items()}
