"""A real `bgremover web` in a real process on a temporary root, and plain HTTP requests to it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

from tests.conftest import REPO
from tests.support.harness import wait_for

TOKEN = "a-studio-token-0123456789"


class WebPage:
    """`bgremover web --root ROOT --listen LISTEN`; `settings` become BGREMOVER_* variables."""

    def __init__(self, root: Path, listen: str = "127.0.0.1:0", **settings) -> None:
        self.root = root
        self.listen = listen
        self.env = {key: value for key, value in os.environ.items() if not key.startswith("BGREMOVER_")}
        self.env.update({"PYTHONPATH": str(REPO), "BGREMOVER_LOG_FORMAT": "json"})
        self.env.update({f"BGREMOVER_{key.upper()}": str(value) for key, value in settings.items()})
        self.log_path = root.parent / f"{root.name}-web.log"
        self.process: subprocess.Popen | None = None
        self.url = ""

    def start(self) -> WebPage:
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - kept open for the process; closed when it is stopped
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bgremover", "web", "--root", str(self.root), "--listen", self.listen],
            cwd=REPO,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self.log_file,
            stderr=self.log_file,
        )
        found = wait_for(
            lambda: re.search(r"the web page is at (\S+)", self.log()) or self.process.poll() is not None,
            timeout=30,
            what="the web page's address",
        )
        assert self.process.poll() is None, self.log()
        self.url = found.group(1).rstrip("/")
        return self

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.kill_all()  # this test fails; the ones after it must not find the page still running
            raise
        finally:
            self.log_file.close()

    def kill_all(self) -> None:
        """SIGKILL to the page and its own children (the picture worker, multiprocessing's tracker)."""
        pid = self.process.pid
        children = Path(f"/proc/{pid}/task/{pid}/children")
        for child in children.read_text().split() if children.exists() else []:
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(child), signal.SIGKILL)
        self.process.kill()
        self.process.wait()

    def __enter__(self) -> WebPage:
        return self.start()

    def __exit__(self, *exc) -> None:
        if self.process and self.process.poll() is None:
            self.stop()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port

    # -- requests ---------------------------------------------------------------------

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict | None = None, host: str | None = None
    ) -> tuple[int, dict, bytes]:
        """One real HTTP request on a fresh connection: (status, headers in lower case, body)."""
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            connection.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            connection.putheader("Host", host or f"127.0.0.1:{self.port}")
            for key, value in (headers or {}).items():
                connection.putheader(key, value)
            connection.putheader("Content-Length", str(len(body)))
            connection.endheaders(body)
            response = connection.getresponse()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
        finally:
            connection.close()

    def get(self, path: str, **kwargs) -> tuple[int, dict, bytes]:
        return self.request("GET", path, **kwargs)

    def status(self) -> dict:
        code, _, body = self.get("/api/status")
        assert code == 200, body
        return json.loads(body)

    def csrf(self, headers: dict | None = None) -> str:
        code, _, body = self.get("/", headers=headers)
        assert code == 200, body[:500]
        return re.search(rb'data-csrf="([0-9a-f]+)"', body).group(1).decode()

    def same_origin(self) -> dict:
        """What a browser sends with a request from the page itself."""
        return {
            "Origin": f"http://127.0.0.1:{self.port}",
            "Sec-Fetch-Site": "same-origin",
            "Accept": "application/json",
            "X-CSRF-Token": self.csrf(),
        }


def multipart(files: list[tuple[str, bytes]], fields: dict[str, str] | None = None) -> tuple[bytes, str]:
    """A multipart/form-data body, as a browser builds it: (body, content type)."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in (fields or {}).items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for filename, data in files:
        quoted = filename.replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")
        head = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{quoted}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        )
        parts.append(head.encode("utf-8", "surrogateescape") + data + b"\r\n")
    parts.append(f"--{boundary}--\r\n".encode())
    return b"".join(parts), f"multipart/form-data; boundary={boundary}"


def form(fields: dict[str, str]) -> tuple[bytes, str]:
    from urllib.parse import urlencode

    return urlencode(fields).encode(), "application/x-www-form-urlencoded"


def files_under(folder: Path) -> list[str]:
    """Every entry under `folder`, relative, folders included, sorted: what "nothing changed" compares."""
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))
