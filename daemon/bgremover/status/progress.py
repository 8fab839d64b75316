"""The arithmetic of a progress report: rate, ETA, bar, and how they read.

Pure functions with the time passed in, so tests pin them with fixed clocks.
None means "unknown" throughout and reads as "—".
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable

RATE_WINDOW_SECONDS = 300.0
BAR_WIDTH = 20
UNKNOWN = "—"


def rate_per_second(finished_at: Iterable[float], now: float, window: float = RATE_WINDOW_SECONDS) -> float | None:
    """Items finished per second over the last `window` seconds; None until two finishes say anything.

    The clock starts at the first finish inside the window, not at the window's
    start: before that finish the session may not have been worked on at all
    (queued behind another session, or the daemon stopped), and counting that
    time would understate the rate. It ends at `now`, not at the last finish,
    so a stall shows as a falling rate instead of the last good one.
    """
    recent = sorted(t for t in finished_at if now - window <= t <= now)
    if len(recent) < 2 or now <= recent[0]:
        return None
    return (len(recent) - 1) / (now - recent[0])


def eta_seconds(remaining: int, rate: float | None) -> float | None:
    """Seconds until `remaining` items are finished at `rate`; 0 when none remain."""
    if remaining == 0:
        return 0.0
    if not rate:
        return None
    return remaining / rate


def pending_up_to(pending_ids: list[int], last_id: int) -> int:
    """How many of the sorted `pending_ids` are finished by the time `last_id` is (the daemon takes the lowest first)."""
    return bisect.bisect_right(pending_ids, last_id)


def bar(finished: int, total: int, width: int = BAR_WIDTH) -> str:
    """`[#####...............]`: full only when every item is finished, never before."""
    filled = finished * width // total if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"


def duration_text(seconds: float | None) -> str:
    """`42s`, `3m05s`, `2h07m`; rounded up, so an ETA never reads 0s while work remains."""
    if seconds is None:
        return UNKNOWN
    whole = math.ceil(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def rate_text(rate: float | None) -> str:
    """Two significant digits, per second while that reads well, else per minute (`0.93/s`, `4.5/min`)."""
    if rate is None:
        return UNKNOWN
    if rate >= 10:
        return f"{rate:.0f}/s"
    if rate >= 0.1:
        return f"{rate:.2g}/s"
    per_minute = rate * 60
    return f"{per_minute:.0f}/min" if per_minute >= 10 else f"{per_minute:.2g}/min"
