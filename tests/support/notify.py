"""A fake service manager on a NOTIFY_SOCKET, and the status line it must be sent.

Shared by tests/unit/test_notify.py and tests/daemon/test_notify.py.
"""

from __future__ import annotations

import re
import socket
import time

import pytest

STATUS_LINE = re.compile(
    r"idle, \d+ sessions? complete|"
    r"(\S+ \d+/\d+(, \d+ failed)?; )*\S+ \d+/\d+(, \d+ failed)?, \d+ queued(, \d+/\d+ jobs running)?"
)


class ServiceManager:
    """The receiving end of NOTIFY_SOCKET: a bound datagram socket that notes when each message came."""

    def __init__(self, address: str) -> None:
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.socket.bind(address)
        self.messages: list[tuple[float, str]] = []

    def close(self) -> None:
        self.socket.close()

    def listen(self, seconds: float) -> list[str]:
        """Receive for `seconds`; returns what arrived meanwhile."""
        before = len(self.messages)
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            self.socket.settimeout(left)
            try:
                data = self.socket.recv(4096)
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), data.decode()))
        return [message for _, message in self.messages[before:]]

    def pending(self) -> list[str]:
        """What has arrived already: a local datagram is queued by the time sendto returns."""
        before = len(self.messages)
        self.socket.setblocking(False)
        while True:
            try:
                data = self.socket.recv(4096)
            except BlockingIOError:
                return [message for _, message in self.messages[before:]]
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, predicate, timeout: float = 30.0, what: str = "a message") -> str:
        deadline = time.monotonic() + timeout
        start = len(self.messages)
        while time.monotonic() < deadline:
            self.listen(0.1)
            for _, message in self.messages[start:]:
                if predicate(message):
                    return message
        raise AssertionError(f"no {what} within {timeout} s; got {[m for _, m in self.messages]}")

    def statuses(self) -> list[str]:
        return [
            line[len("STATUS=") :]
            for _, message in self.messages
            for line in message.split("\n")
            if line.startswith("STATUS=")
        ]

    def pings(self) -> list[float]:
        return [at for at, message in self.messages if message == "WATCHDOG=1"]

    def wedged(self, watchdog_seconds: float) -> bool:
        """What systemd decides when WatchdogSec= passes without a WATCHDOG=1."""
        pings = self.pings()
        return not pings or time.monotonic() - pings[-1] > watchdog_seconds


@pytest.fixture
def manager(tmp_path):
    path = tmp_path / "notify"
    assert len(str(path)) < 100, "an AF_UNIX path holds at most 107 bytes"
    manager = ServiceManager(str(path))
    yield manager
    manager.close()
