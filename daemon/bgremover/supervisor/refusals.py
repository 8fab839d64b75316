"""A full or read-only disk: which folders refuse writes now, and saying so once.

Two folders matter: the state folder (the database, taken originals, job
results) and the outbox (status JSONs, ZIPs). While one refuses writes, what
writes there waits behind a backoff; nothing is failed for it, and the log has
one error line when it starts and one line when it ends.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from bgremover import durable
from bgremover.backoff import Backoff, describe
from bgremover.queue.spool import Spool
from bgremover.settings import Settings

log = structlog.get_logger()

PROBE_BYTES = 64 * 1024  # what a state folder must take before jobs start again


class Refusals:
    def __init__(self, settings: Settings, spool: Spool) -> None:
        self.settings = settings
        self.spool = spool
        self.outbox = Backoff()  # the outbox refused a status JSON or a ZIP
        self.state = Backoff()  # the state folder refused the database, a take or a job's result

    def state_refused(self, exc: BaseException, now: float, tried_at: float | None = None) -> None:
        """The state folder refused a write (begun at tried_at): hold everything that writes there, and say so once."""
        refused(
            self.state,
            "state",
            self.settings.state_dir,
            "the state folder",
            exc,
            now,
            "nothing new is taken or started until it takes writes again, and nothing is lost or failed meanwhile",
            tried_at,
        )

    def state_accepted(self, now: float) -> None:
        accepted(self.state, "state", self.settings.state_dir, now)

    def probe_state(self, now: float) -> None:
        """A small real write where jobs put their results: does the state folder take writes again?"""
        probe = self.spool.results / f"{durable.TEMP_PREFIX}probe"
        try:
            durable.atomic_write(probe, bytes(PROBE_BYTES))
            probe.unlink()
        except OSError as exc:
            self.state_refused(exc, now)

    def outbox_refused(self, exc: BaseException, now: float, tried_at: float | None = None) -> None:
        refused(
            self.outbox,
            "outbox",
            self.settings.outbox,
            "the outbox",
            exc,
            now,
            "status files and ZIPs are written as soon as it takes writes again, and no item is failed for it",
            tried_at,
        )

    def outbox_accepted(self, now: float, tried_at: float | None = None) -> None:
        accepted(self.outbox, "outbox", self.settings.outbox, now, tried_at)


def refused(
    backoff: Backoff,
    area: str,
    folder: Path,
    called: str,
    exc: BaseException,
    now: float,
    meanwhile: str,
    tried_at: float | None = None,
) -> None:
    """One error line when a folder starts refusing writes; its retries after that stay at debug level.

    tried_at: when the refused write began, if before now (a ZIP build, a job).
    """
    if backoff.failed(now, tried_at):
        log.error(
            f"{area}_unwritable",
            folder=str(folder),
            retry_in_s=backoff.delay,
            error=f"{called} refused a write ({describe(exc)}); {meanwhile}",
        )
    elif backoff.failing:
        log.debug(f"{area}_still_unwritable", error=describe(exc), retry_in_s=backoff.delay)
    else:  # begun before the folder took a write again: it says nothing about the folder now
        log.debug(f"{area}_refusal_outdated", error=describe(exc))


def accepted(backoff: Backoff, area: str, folder: Path, now: float, tried_at: float | None = None) -> None:
    """One line when a folder that refused writes takes them again."""
    outage = backoff.succeeded(now, tried_at)
    if outage is not None:
        log.info(f"{area}_writable_again", folder=str(folder), after_s=round(outage, 1))
