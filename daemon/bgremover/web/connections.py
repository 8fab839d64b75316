"""Connections a client cannot hold on to: uvicorn's HTTP protocol with a deadline and a size for headers.

uvicorn arms no timer on a new connection, and stops its keep-alive timer at
the first byte of the next request, so a client that sends half a request
line and stalls (slowloris) holds its connection, and a file descriptor, for
ever, before the token is ever checked; about a thousand of them and the page
accepts no one (systemd's default soft limit on open files is 1024). Here:

- each request's headers must be whole within HEADER_SECONDS of the
  connection opening or the previous response ending, else it is closed;
- headers over HEADER_BYTES are refused with 431;
- at most WAITING_LIMIT connections may wait for a request: a new one beyond
  that closes the one that has waited longest (nginx reuses idle keep-alive
  connections the same way when it runs short), so a flood of stalled
  connections delays a real client by no more than its own connect.

uvicorn's limit_concurrency (REQUESTS_LIMIT) then answers 503 at once to
requests beyond what the page will work on together. A request body is not
timed: only a signed-in client gets past the guard to send one, and an
upload over a slow link is allowed to take its time.
"""

from __future__ import annotations

import asyncio
import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from bgremover.web.security import RESPONSE_HEADERS

HEADER_SECONDS = 10.0
HEADER_BYTES = 64 * 1024  # a browser sends a few KB; cookies are small here
WAITING_LIMIT = 400  # 200 browsers polling the page keep about 200 connections open
REQUESTS_LIMIT = 500  # connections plus requests in progress, uvicorn's limit_concurrency
KEEP_ALIVE_SECONDS = 5  # an idle connection between two requests


class GuardedHttp(HttpToolsProtocol):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.waiting_since: float | None = None  # monotonic; None while a request is being worked on
        self.header_bytes = 0
        self.header_deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport) -> None:  # type: ignore[override]
        make_room(self.connections)
        super().connection_made(transport)
        self.wait_for_request()

    def connection_lost(self, exc: Exception | None) -> None:
        self.cancel_deadline()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.waiting_since is not None:
            self.header_bytes += len(data)
        super().data_received(data)
        # Counted only while the headers are still not whole: the bytes that finish them may carry a body too.
        if self.waiting_since is not None and self.header_bytes > HEADER_BYTES and not self.transport.is_closing():
            self.refuse_headers()

    def on_headers_complete(self) -> None:
        self.waiting_since = None
        self.cancel_deadline()
        super().on_headers_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if self.timeout_keep_alive_task is not None:  # uvicorn waits for another request on this connection
            self.wait_for_request()

    def wait_for_request(self) -> None:
        self.waiting_since, self.header_bytes = time.monotonic(), 0
        self.cancel_deadline()
        self.header_deadline = self.loop.call_later(HEADER_SECONDS, self.drop)

    def cancel_deadline(self) -> None:
        if self.header_deadline is not None:
            self.header_deadline.cancel()
            self.header_deadline = None

    def drop(self) -> None:
        """Close a connection that is waiting for a request: too slow, or making room for a new one."""
        self.waiting_since = None
        self.cancel_deadline()
        if not self.transport.is_closing():
            self.transport.close()

    def refuse_headers(self) -> None:
        message = f"request headers over {HEADER_BYTES // 1024} KB\n".encode()
        head = [b"HTTP/1.1 431 Request Header Fields Too Large"]
        head += [b"content-type: text/plain; charset=utf-8", b"content-length: %d" % len(message)]
        head += [b"connection: close"] + [name + b": " + value for name, value in RESPONSE_HEADERS]
        self.transport.write(b"\r\n".join(head) + b"\r\n\r\n" + message)
        self.drop()


def make_room(connections: set) -> None:
    """Close the connection that has waited longest for a request, if WAITING_LIMIT of them wait."""
    waiting = [c for c in connections if getattr(c, "waiting_since", None) is not None]
    if len(waiting) >= WAITING_LIMIT:
        min(waiting, key=lambda c: c.waiting_since).drop()
