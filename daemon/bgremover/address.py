"""Where the page listens: HOST:PORT read once, and whether only this machine can reach it.

Standard library only, so the settings can check the address without the web extra installed.
"""

from __future__ import annotations

import ipaddress
from typing import NamedTuple

LOOPBACK_NAMES = frozenset({"localhost"})


class Listen(NamedTuple):
    host: str  # without the brackets an IPv6 address has in a URL
    port: int  # 0: any free port, told once bound

    @property
    def loopback(self) -> bool:
        """Whether only this machine can connect: 127.0.0.0/8, ::1 or localhost."""
        if self.host.lower() in LOOPBACK_NAMES:
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:  # a host name: it may resolve to any address
            return False

    def url(self, port: int | None = None) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port if port is None else port}/"


def parse_listen(text: str) -> Listen:
    """`127.0.0.1:8765`, `0.0.0.0:80`, `[::1]:8765`, `studio-pc:8765`; ValueError with one sentence otherwise."""
    host, sep, port = text.strip().rpartition(":")
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535 or "[" in host or "]" in host:
        raise ValueError("expected HOST:PORT such as 127.0.0.1:8765 (an IPv6 address in brackets: [::1]:8765)")
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise ValueError(f"{host!r} is not an IPv6 address") from None
        if not bracketed:  # "::1:8765" could be an address without a port, or ::1 with one
            raise ValueError(f"write an IPv6 address in brackets, as [{host}]:{port}")
    return Listen(host, int(port))
