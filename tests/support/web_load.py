"""Two hundred clients asking the page for the status at once, while the daemon works.

`load(web, stop)` runs the clients until `stop` is set and returns what they
got. Run as a script, it measures the daemon's throughput with and without
them, on the real model, rounds alternating, and prints the medians:

    .venv/bin/python -m tests.support.web_load --rounds 5 --images 30
"""

from __future__ import annotations

import argparse
import heapq
import http.client
import os
import re
import selectors
import socket
import statistics
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

CLIENTS = 200


def one_request(port: int, path: str) -> int | str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", path, headers={"Host": f"127.0.0.1:{port}"})
        response = connection.getresponse()
        body = response.read()
        return response.status if body else "empty"
    except OSError as exc:
        return type(exc).__name__
    finally:
        connection.close()


def burst(port: int, clients: int = CLIENTS, path: str = "/api/status") -> Counter:
    """`clients` requests released at the same instant, each on its own connection; their outcomes counted."""
    gate = threading.Barrier(clients)
    outcomes: Counter = Counter()
    lock = threading.Lock()

    def client() -> None:
        gate.wait()
        outcome = one_request(port, path)
        with lock:
            outcomes[outcome] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return outcomes


def load(port: int, stop: threading.Event, clients: int = CLIENTS, every: float = 1.0) -> Counter:
    """`clients` pages each polling the status every `every` seconds (0: as fast as answered) until `stop`.

    Each keeps its connection open between polls, as a browser does, and the
    clients start spread over the interval, as pages opened at different
    moments. They stand for browsers on other machines, so they are made to
    cost this one little: plain non-blocking sockets, one selector, one thread.
    """
    request = f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()
    selector = selectors.DefaultSelector()
    outcomes: Counter = Counter()
    start = time.monotonic()
    due = [(start + every * n / clients, n) for n in range(clients)]  # (when, client): polls to send
    sockets: dict[int, socket.socket] = {}
    received: dict[int, bytearray] = {}
    sent_at: dict[int, float] = {}
    try:
        while not stop.is_set():
            now = time.monotonic()
            while due and due[0][0] <= now:
                _, n = heapq.heappop(due)
                sent_at[n] = now
                if not send(sockets, n, port, request, selector):
                    outcomes["ConnectionError"] += 1
                    heapq.heappush(due, (now + every, n))
            wait = min(0.05, max(0.0, due[0][0] - now)) if due else 0.05
            for key, _ in selector.select(wait):
                n = key.data
                outcome = read(sockets[n], received.setdefault(n, bytearray()))
                if outcome is None:
                    continue
                outcomes[outcome] += 1
                received[n].clear()
                if not isinstance(outcome, int):  # opened afresh for its next poll
                    selector.unregister(sockets[n])
                    sockets.pop(n).close()
                heapq.heappush(due, (max(sent_at[n] + every, time.monotonic()), n))
    finally:
        for connection in sockets.values():
            connection.close()
        selector.close()
    return outcomes


def send(sockets: dict, n: int, port: int, request: bytes, selector) -> bool:
    """Send one poll on client `n`'s connection, opening it first where it has none."""
    try:
        if n not in sockets:
            connection = socket.create_connection(("127.0.0.1", port), timeout=10)
            connection.setblocking(False)
            sockets[n] = connection
            selector.register(connection, selectors.EVENT_READ, n)
        sockets[n].sendall(request)  # a few dozen bytes: the socket's buffer takes them at once
        return True
    except OSError:
        if n in sockets:
            selector.unregister(sockets[n])
            sockets.pop(n).close()
        return False


def read(connection: socket.socket, buffer: bytearray) -> int | str | None:
    """What arrived on a connection: the status once the whole answer is in, None while it is not."""
    try:
        chunk = connection.recv(1 << 16)
    except BlockingIOError:
        return None
    except OSError as exc:
        return type(exc).__name__
    if not chunk:
        return "closed"
    buffer += chunk
    head_end = buffer.find(b"\r\n\r\n")
    if head_end < 0:
        return None
    head = bytes(buffer[:head_end]).lower()
    length = re.search(rb"content-length: *(\d+)", head)
    if length is None:
        return "no length"
    if len(buffer) - head_end - 4 < int(length.group(1)):
        return None
    status = int(head.split(None, 2)[1])
    return status if int(length.group(1)) else "empty"


def cpu_seconds(pid: int) -> float:
    """A process's user and system CPU so far (its threads included), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def one_round(images: list[Path], loaded: bool, every: float, job_slots: str) -> tuple[float, Counter, dict]:
    """The daemon's images per second from the drop to the complete session, with or without the clients.

    Also the CPU seconds each party spent during the round, so that the page's
    own cost can be told apart from the clients', which share the machine.
    """
    from tests.support.harness import Daemon, drop
    from tests.support.web import WebPage

    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "root"
        with Daemon(root, fake_jobs=False, log_level="info", job_slots=job_slots) as daemon, WebPage(root) as web:
            stop, outcomes = threading.Event(), Counter()
            clients = threading.Thread(target=lambda: outcomes.update(load(web.port, stop, every=every)))
            if loaded:
                clients.start()
                time.sleep(2)  # all of them polling before the work starts
            started, web_cpu, own_cpu = time.monotonic(), cpu_seconds(web.process.pid), time.process_time()
            for image in images:
                drop(root / "inbox", f"round/{image.name}", image.read_bytes())
            daemon.wait_complete("round", timeout=600)
            elapsed = time.monotonic() - started
            cpu = {
                "page_cpu_s": cpu_seconds(web.process.pid) - web_cpu,
                "clients_cpu_s": time.process_time() - own_cpu,
                "elapsed_s": elapsed,
            }
            stop.set()
            if loaded:
                clients.join()
    return len(images) / elapsed, outcomes, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--images", type=int, default=30)
    parser.add_argument("--every", type=float, default=1.0, help="seconds between one client's polls (0: flat out)")
    parser.add_argument("--job-slots", default="auto", help="the daemon's job_slots (its default: auto)")
    args = parser.parse_args()
    from PIL import Image

    from tests.support.images import photo

    with tempfile.TemporaryDirectory() as folder:
        images = []
        for n in range(args.images):
            with Image.open(photo(("astronaut", "coffee", "chelsea")[n % 3])) as original:
                path = Path(folder) / f"{n:03d}.jpg"
                original.convert("RGB").resize((800, 800 * original.height // original.width)).save(path, quality=90)
                images.append(path)
        rates: dict[bool, list[float]] = {False: [], True: []}
        failed: Counter = Counter()
        for n in range(args.rounds):
            for loaded in (False, True) if n % 2 == 0 else (True, False):
                rate, outcomes, cpu = one_round(images, loaded, args.every, args.job_slots)
                rates[loaded].append(rate)
                failed.update({k: v for k, v in outcomes.items() if k != 200})
                shares = (
                    f"; CPU over {cpu['elapsed_s']:.1f} s: the page {cpu['page_cpu_s']:.2f} s, "
                    f"the clients {cpu['clients_cpu_s']:.2f} s"
                )
                print(
                    f"round {n + 1} {'with' if loaded else 'without'} {CLIENTS} clients: {rate:.3f} images/s"
                    + (f", {sum(outcomes.values())} requests, {dict(outcomes)}" if loaded else "")
                    + shares,
                    flush=True,
                )
    quiet, busy = statistics.median(rates[False]), statistics.median(rates[True])
    # The noise to judge the change by: how far apart the quiet rounds alone fall, and each round's own change.
    spread = (max(rates[False]) - min(rates[False])) / quiet * 100
    paired = statistics.median(b / q - 1 for q, b in zip(rates[False], rates[True])) * 100
    print(
        f"median without clients {quiet:.3f} images/s, with {CLIENTS} clients {busy:.3f} images/s "
        f"({(busy / quiet - 1) * 100:+.1f} %; round by round {paired:+.1f} %); the quiet rounds alone spread over "
        f"{spread:.1f} % of their median; failed requests: {dict(failed) or 'none'}"
    )


if __name__ == "__main__":
    main()
