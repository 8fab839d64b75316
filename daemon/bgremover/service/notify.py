"""What we tell systemd: readiness, a one-line status, watchdog pings and that we are stopping.

The sd_notify protocol spoken directly, standard library only: one datagram
of `KEY=value` lines to the AF_UNIX socket named by $NOTIFY_SOCKET. Without
that variable every call is a no-op, so the daemon runs the same under a
terminal, under tests and under systemd.

The supervisor calls `update` on every pass of its loop. A wedged loop stops
calling it, the pings stop, and systemd (WatchdogSec= in the unit) kills and
restarts the daemon. So nothing here may block or raise into the loop: the
socket is non-blocking, a datagram the socket refuses is dropped, and the first
failure is logged once.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping

import structlog

from bgremover.queue.states import SessionState, Status
from bgremover.queue.store import Store

log = structlog.get_logger()

STATUS_INTERVAL_SECONDS = 1.0  # systemctl status need not change faster than a person reads it
SESSIONS_SHOWN = 3  # the rest of the open sessions become "+N more"
NAME_CHARS = 40  # a session name may be 255 bytes; the status line stays one short line


class Notifier:
    """sd_notify for one process; silent when systemd did not ask for notifications."""

    def __init__(
        self, address: str | None, watchdog_seconds: float | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.address = address
        self.watchdog_seconds = watchdog_seconds
        self.clock = clock
        self.socket: socket.socket | None = None
        self.last_ping: float | None = None
        self.last_status: str | None = None
        self.next_status_at = float("-inf")
        self.reported: set[str] = set()  # failures logged once already; their repeats stay quiet

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] = os.environ, **kwargs) -> Notifier:
        return cls(socket_address(environ.get("NOTIFY_SOCKET", "")), watchdog_seconds(environ), **kwargs)

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def ready(self, describe: Callable[[], str]) -> None:
        """Start-up is done: systemd lets units ordered after us start, and arms the watchdog."""
        if not self.enabled:
            return
        self.last_status = self.summary(describe)
        self.next_status_at = self.clock() + STATUS_INTERVAL_SECONDS
        self.send("READY=1" + (f"\nSTATUS={self.last_status}" if self.last_status is not None else ""))

    def update(self, describe: Callable[[], str]) -> None:
        """Once per loop pass: ping the watchdog when due; send the status line when it changed.

        `describe` is only called when a status line may be sent (about once a
        second), since it reads the database.
        """
        if not self.enabled:
            return
        now = self.clock()
        if self.watchdog_seconds and (self.last_ping is None or now - self.last_ping >= self.watchdog_seconds / 2):
            # Half the timeout, as sd_watchdog_enabled(3) advises: one late pass is not yet a wedge.
            self.last_ping = now
            self.send("WATCHDOG=1")
        if now >= self.next_status_at:
            self.next_status_at = now + STATUS_INTERVAL_SECONDS
            self.status(describe)

    def status(self, describe: Callable[[], str]) -> None:
        text = self.summary(describe)
        if text is not None and text != self.last_status:
            self.last_status = text
            self.send(f"STATUS={text}")

    def summary(self, describe: Callable[[], str]) -> str | None:
        try:
            return one_line(describe())
        except Exception as exc:  # noqa: BLE001 - a status line is never worth stopping the loop for
            self.failed_once("status_summary_failed", exc)
            return None

    def stopping(self) -> None:
        """The loop has ended: systemd shows the unit as deactivating and stops watching it."""
        self.send("STOPPING=1")
        self.close()

    def close(self) -> None:
        if self.socket is not None:
            self.socket.close()
            self.socket = None

    def send(self, message: str) -> None:
        if not self.enabled:
            return
        try:
            if self.socket is None:
                self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                # A full receive queue (a stuck systemd) must drop the message, not block the loop.
                self.socket.setblocking(False)
            self.socket.sendto(message.encode(), self.address)
        except OSError as exc:
            self.failed_once("notify_failed", exc)

    def failed_once(self, event: str, exc: BaseException) -> None:
        if event not in self.reported:
            self.reported.add(event)
            log.warning(
                event, socket=printable(self.address or ""), error=str(exc), note="further failures are not logged"
            )


def socket_address(value: str) -> str | None:
    """$NOTIFY_SOCKET as a socket address: a path, or '@name' for a name in the abstract namespace."""
    if value.startswith("/"):
        return value
    if value.startswith("@") and len(value) > 1:
        return "\0" + value[1:]
    return None  # unset, empty, or a kind we do not speak (vsock:): notifications stay off


def watchdog_seconds(environ: Mapping[str, str]) -> float | None:
    """The watchdog timeout systemd set for this process, or None when there is none for us."""
    try:
        usec = int(environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    pid = environ.get("WATCHDOG_PID")
    # A child that inherited our environment must not ping on our behalf.
    if usec <= 0 or (pid is not None and pid != str(os.getpid())):
        return None
    return usec / 1_000_000


def one_line(text: str) -> str:
    # A newline would start a new KEY=value line: a folder named "x\nWATCHDOG=1" must not ping.
    return "".join(c if c.isprintable() else "?" for c in text)


def printable(address: str) -> str:
    return "@" + address[1:] if address.startswith("\0") else address


def progress_summary(store: Store, job_slots: int | None = None) -> str:
    """One line of where the work stands: `catalog 37/100, 2 failed, 140 queued, 2/3 jobs running`, or `idle, ...`.

    The jobs part needs `job_slots`, which only the daemon knows.
    """
    active = store.sessions(SessionState.OPEN, SessionState.PROCESSING)
    if not active:
        complete = store.sessions_in_each_state()[SessionState.COMPLETE.value]  # counted: there may be a year of them
        return f"idle, {complete} session{'' if complete == 1 else 's'} complete"
    parts, queued, running = [], 0, 0
    for index, session in enumerate(active):
        counts = store.counts(session.name)
        queued += counts[Status.QUEUED.value]
        running += counts[Status.PROCESSING.value]
        if index < SESSIONS_SHOWN:
            parts.append(session_progress(session.name, counts))
    if len(active) > SESSIONS_SHOWN:
        parts.append(f"+{len(active) - SESSIONS_SHOWN} more")
    jobs = f", {running}/{job_slots} jobs running" if job_slots else ""
    return "; ".join(parts) + f", {queued} queued" + jobs


def session_progress(name: str, counts: Mapping[str, int]) -> str:
    shown = name if len(name) <= NAME_CHARS else name[: NAME_CHARS - 1] + "…"
    text = f"{shown} {counts[Status.DONE.value]}/{sum(counts.values())}"
    failed = counts[Status.FAILED.value]
    return text + (f", {failed} failed" if failed else "")
