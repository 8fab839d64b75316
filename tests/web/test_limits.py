"""What a client can make the page hold: connections, parts of a form, a sign-in's life, a picture's worker."""

from __future__ import annotations

import http.client
import io
import os
import re
import resource
import selectors
import shutil
import signal
import socket
import threading
import time
import uuid
from pathlib import Path

import numpy as np
from PIL import Image

from bgremover.address import parse_listen
from bgremover.web.security import Guard
from tests.support.harness import Daemon, wait_for
from tests.support.heic import heic_bytes
from tests.support.images import photo
from tests.support.web import TOKEN, WebPage, files_under, form, multipart


def raw_multipart(parts: list[bytes]) -> tuple[bytes, str]:
    """A multipart body of the given parts, each already its headers, blank line and data."""
    boundary = uuid.uuid4().hex
    body = b"".join(f"--{boundary}\r\n".encode() + part + b"\r\n" for part in parts)
    return body + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def photo_part(name: str) -> bytes:
    return f'Content-Disposition: form-data; name="file"; filename="{name}"\r\n\r\nok'.encode()


def upload(web: WebPage, body_and_type: tuple[bytes, str]):
    body, content_type = body_and_type
    return web.request("POST", "/upload", body, {**web.same_origin(), "Content-Type": content_type})


# ---------------------------------------------------------------- forms


def test_a_form_of_thousands_of_tiny_parts_is_refused_and_nothing_is_written(root):
    fields = [f'Content-Disposition: form-data; name="f{n}"\r\n\r\nx'.encode() for n in range(5000)]
    files = [photo_part(f"many/{n}.jpg") for n in range(5000)]
    with WebPage(root) as web:
        for parts in (fields + [photo_part("many/last.jpg")], files):
            code, _, answer = upload(web, raw_multipart(parts))
            assert code == 413 and b"nothing was uploaded" in answer, (code, answer[:300])
            assert files_under(root / "inbox") == []
        code, _, answer = upload(web, raw_multipart(files[:20]))
        assert code == 200, answer


def test_a_part_with_a_huge_header_is_refused_and_nothing_is_written(root):
    huge_value = photo_part("big/a.jpg").replace(b"\r\n\r\n", b"\r\nX-Padding: " + b"p" * 1_000_000 + b"\r\n\r\n")
    many_headers = photo_part("big/b.jpg").replace(
        b"\r\n\r\n", b"".join(b"\r\nX-H%d: v" % n for n in range(20_000)) + b"\r\n\r\n"
    )
    with WebPage(root) as web:
        for part in (huge_value, many_headers):
            code, _, answer = upload(web, raw_multipart([part]))
            assert code == 413 and b"headers" in answer and b"nothing was uploaded" in answer, (code, answer[:300])
            assert files_under(root / "inbox") == []


# ---------------------------------------------------------------- the sign-in


def sign_in(web: WebPage, token: str = TOKEN) -> dict:
    body, kind = form({"token": token})
    code, headers, _ = web.request("POST", "/login", body, {"Content-Type": kind})
    assert code == 303, code
    return {"Cookie": headers["set-cookie"].split(";", 1)[0], "Accept": "application/json"}


def test_a_sign_in_expires_after_web_session_hours(root):
    with WebPage(root, "0.0.0.0:0", web_token=TOKEN, web_session_hours=3 / 3600) as web:
        cookie = sign_in(web)
        assert web.get("/api/status", headers=cookie)[0] == 200
        time.sleep(4)
        code, _, answer = web.get("/api/status", headers=cookie)
        assert code == 401 and b"sign in" in answer, "the cookie outlived its sign-in"
        assert web.get("/api/status", headers=sign_in(web))[0] == 200, "signing in again opens the page"


def test_a_cookie_with_an_old_or_forged_issue_time_is_refused():
    guard = Guard(parse_listen("0.0.0.0:0"), TOKEN, b"k" * 32, session_seconds=3600)
    now = 1_000_000.0
    fresh = guard.cookie_value(now)
    assert guard.signed_in(fresh, None, now + 3599)
    assert not guard.signed_in(fresh, None, now + 3601), "an expired cookie opens the page"
    issued, _, signature = fresh.partition(".")
    moved = f"{int(issued) + 7200}.{signature}"
    assert not guard.signed_in(moved, None, now + 3601), "a cookie whose time was moved still opens the page"
    assert not guard.signed_in(guard.cookie_value(now + 600), None, now), "a cookie from the future opens the page"


def test_a_new_token_signs_every_browser_out(root):
    with WebPage(root, "0.0.0.0:0", web_token=TOKEN) as web:
        cookie = sign_in(web)
        assert web.get("/api/status", headers=cookie)[0] == 200
    web.log_path.unlink()  # the next page's address is then the only one in its log
    other = "another-studio-token-987654"
    with WebPage(root, "0.0.0.0:0", web_token=other) as web:
        assert web.get("/api/status", headers=cookie)[0] == 401, "a cookie of the old token opens the page"
        assert web.get("/api/status", headers=sign_in(web, other))[0] == 200


# ---------------------------------------------------------------- the pictures' worker


def picture_worker(web: WebPage) -> int:
    """The pid of the page's picture worker: its child started by multiprocessing's spawn."""
    pid = web.process.pid
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    workers = [int(c) for c in children if b"spawn_main" in Path(f"/proc/{c}/cmdline").read_bytes()]
    assert len(workers) == 1, workers
    return workers[0]


def item_id(web: WebPage, name: str) -> str:
    return (
        re.search(rf'id="item-(\d+)" data-name="{re.escape(name)}"'.encode(), web.get("/sessions")[2]).group(1).decode()
    )


def test_a_picture_worker_killed_mid_life_is_replaced_and_pictures_still_come(root):
    shutil.copy(photo("astronaut"), root / "archive" / "shoot" / "ok.jpg")
    with WebPage(root) as web:
        item = item_id(web, "ok.jpg")
        assert web.get(f"/thumbnails/{item}/before")[0] == 200
        first = picture_worker(web)
        os.kill(first, signal.SIGKILL)
        wait_for(
            lambda: not Path(f"/proc/{first}").exists() or b"Z" in Path(f"/proc/{first}/stat").read_bytes().split()[2],
            what="the worker gone",
        )
        for cached in (root / "state" / "web" / "thumbnails").glob("*.webp"):
            cached.unlink()  # so the picture is made again, by a worker
        code, headers, _ = web.get(f"/thumbnails/{item}/before")
        assert code == 200 and headers["content-type"] == "image/webp", code
        assert picture_worker(web) != first


def worker_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def test_a_page_stopped_while_its_worker_makes_a_picture_stops_at_once_and_leaves_no_worker(root):
    """Stopping never waits for a picture: under load the worker may need a minute for one (here: for ever)."""
    shutil.copy(photo("astronaut"), root / "archive" / "shoot" / "ok.jpg")
    # The failed item's original becomes some 80 megapixels of PNG: seconds of decoding, and PNG has no draft mode.
    gradient = np.linspace(0, 255, 9000, dtype=np.uint8)
    Image.fromarray(np.stack([np.tile(gradient, (9000, 1))] * 3, axis=-1)).save(
        root / "archive" / "shoot" / "broken.jpg", "PNG", compress_level=1
    )
    cache = root / "state" / "web" / "thumbnails"
    with WebPage(root) as web:
        assert web.get(f"/thumbnails/{item_id(web, 'ok.jpg')}/before")[0] == 200  # the worker is up
        worker = picture_worker(web)
        before = worker_cpu_seconds(worker)
        made = len(list(cache.glob("*.webp")))
        asking = threading.Thread(
            target=lambda: web.get(f"/thumbnails/{item_id(web, 'broken.jpg')}/before"), daemon=True
        )
        asking.start()
        wait_for(lambda: worker_cpu_seconds(worker) > before + 0.2, what="the worker at the huge picture")
        os.kill(worker, signal.SIGSTOP)  # a picture that will not be done before the page is stopped
        web.stop()  # raises if the page is still there 15 s after SIGTERM
        assert not Path(f"/proc/{worker}").exists(), "the picture worker outlived the page"
        assert len(list(cache.glob("*.webp"))) == made, "the page waited for the picture before it stopped"


def test_a_heic_upload_gets_a_picture(tmp_path):
    root = tmp_path / "root"
    from PIL import Image

    heic = heic_bytes(Image.open(photo("astronaut")).convert("RGB"))
    with Daemon(root), WebPage(root) as web:
        body, kind = multipart([("phone/IMG_0001.heic", heic)])
        code, _, answer = web.request("POST", "/upload", body, {**web.same_origin(), "Content-Type": kind})
        assert code == 200, answer
        wait_for(lambda: b'data-name="IMG_0001.heic"' in web.get("/sessions")[2], timeout=60, what="the upload queued")
        item = item_id(web, "IMG_0001.heic")
        code, headers, picture = wait_for(
            lambda: (answer := web.get(f"/thumbnails/{item}/before"))[0] == 200 and answer,
            timeout=30,
            what="a picture of the HEIC photo",
        )
        assert headers["content-type"] == "image/webp"
    with Image.open(io.BytesIO(picture)) as made:
        assert max(made.size) == 256


# ---------------------------------------------------------------- connections

HEADER_SECONDS = 10  # the page's deadline for a request's headers (bgremover.web.connections)


def answered_within(web: WebPage, seconds: float) -> int | None:
    """The status of GET /login on a fresh connection, or None if it takes longer than `seconds`."""
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=seconds)
    try:
        connection.request("GET", "/login", headers={"Host": f"127.0.0.1:{web.port}"})
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def closed_by_the_page(sockets: list[socket.socket], within: float) -> int:
    """How many of `sockets` the page closed before `within` seconds passed."""
    open_ones, deadline = set(sockets), time.monotonic() + within
    with selectors.DefaultSelector() as selector:
        for sock in sockets:
            selector.register(sock, selectors.EVENT_READ)
        while open_ones and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                try:
                    ended = key.fileobj.recv(4096) == b""
                except OSError:
                    ended = True
                if ended:
                    selector.unregister(key.fileobj)
                    open_ones.discard(key.fileobj)
    return len(sockets) - len(open_ones)


def test_stalled_connections_neither_keep_others_out_nor_stay_open(root):
    with WebPage(root, "0.0.0.0:0", web_token=TOKEN) as web:
        _, hard = resource.prlimit(web.process.pid, resource.RLIMIT_NOFILE)
        resource.prlimit(web.process.pid, resource.RLIMIT_NOFILE, (1024, hard))  # systemd's default soft limit
        stalled = []
        try:
            for _ in range(1100):  # slowloris: half a request line each, then nothing
                sock = socket.create_connection(("127.0.0.1", web.port))
                sock.sendall(b"GET /api/sta")
                stalled.append(sock)
            started = time.monotonic()
            assert answered_within(web, 5) == 200, "the page kept a client out while others stalled"
            assert time.monotonic() - started < 5
            assert closed_by_the_page(stalled, HEADER_SECONDS + 5) == len(stalled)
        finally:
            for sock in stalled:
                sock.close()
        assert answered_within(web, 5) == 200


def test_headers_that_never_end_are_refused(root):
    with WebPage(root) as web, socket.create_connection(("127.0.0.1", web.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        answer = b""
        try:
            for n in range(2000):
                sock.sendall(b"X-Padding-%d: %s\r\n" % (n, b"p" * 1000))
        except OSError:
            pass  # closed by the page: what it answered is read below
        sock.settimeout(5)
        try:
            answer = sock.recv(4096)
        except OSError:
            pass
        assert answer.startswith(b"HTTP/1.1 431"), answer[:200]
