"""Two hundred clients asking the page for the status at once, while the daemon works.

`load(web, stop)` runs the clients until `stop` is set and returns what they
got. Run as a script, it measures the daemon's throughput with and without
them, on the real model, rounds alternating, and prints the medians:

    .venv/bin/python -m tests.support.web_load --rounds 5 --images 30
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import os
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

    Each keeps its connection open between polls, as a browser does. They
    share one event loop on plain sockets, so that the clients themselves,
    which on a LAN would run on other machines, take as little of this one's
    CPU as they can: the load is on the page, not on the load.
    """
    outcomes: Counter = Counter()
    request = f"GET /api/status HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode()

    async def client(offset: float) -> None:
        await asyncio.sleep(offset)  # spread over the interval, as pages opened at different moments
        connection = None
        while not stop.is_set():
            started = time.monotonic()
            try:
                connection = connection or await asyncio.open_connection("127.0.0.1", port)
                outcome = await asyncio.wait_for(exchange(*connection, request), 60)
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
                outcome = type(exc).__name__
            if not isinstance(outcome, int) and connection is not None:
                connection[1].close()
                connection = None
            outcomes[outcome] += 1
            await asyncio.sleep(max(0.0, every - (time.monotonic() - started)))
        if connection is not None:
            connection[1].close()

    async def everyone() -> None:
        await asyncio.gather(*(client(every * n / clients) for n in range(clients)))

    # The clients stand for browsers on other machines: on this one they take only CPU nothing else wants.
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))  # this thread only
    asyncio.run(everyone())
    return outcomes


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int | str:
    """One GET on an open connection: the status, or "empty" for an answer without a body."""
    writer.write(request)
    await writer.drain()
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    body = await reader.readexactly(length)
    return status if body else "empty"


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
            cpu = {"page_cpu_s": cpu_seconds(web.process.pid) - web_cpu, "clients_cpu_s": time.process_time() - own_cpu,
                   "elapsed_s": elapsed}
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
                shares = (f"; CPU over {cpu['elapsed_s']:.1f} s: the page {cpu['page_cpu_s']:.2f} s, "
                          f"the clients {cpu['clients_cpu_s']:.2f} s")
                print(f"round {n + 1} {'with' if loaded else 'without'} {CLIENTS} clients: {rate:.3f} images/s"
                      + (f", {sum(outcomes.values())} requests, {dict(outcomes)}" if loaded else "") + shares, flush=True)
    quiet, busy = statistics.median(rates[False]), statistics.median(rates[True])
    # The noise to judge the change by: how far apart the quiet rounds alone fall, and each round's own change.
    spread = (max(rates[False]) - min(rates[False])) / quiet * 100
    paired = statistics.median(b / q - 1 for q, b in zip(rates[False], rates[True])) * 100
    print(f"median without clients {quiet:.3f} images/s, with {CLIENTS} clients {busy:.3f} images/s "
          f"({(busy / quiet - 1) * 100:+.1f} %; round by round {paired:+.1f} %); the quiet rounds alone spread over "
          f"{spread:.1f} % of their median; failed requests: {dict(failed) or 'none'}")

if __name__ == "__main__":
    main()
