"""The page can change things, so it is guarded: each rule checked with real HTTP requests to a real process."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.support.web import TOKEN, WebPage, files_under, form, multipart

CHANGES = [
    ("/retry", form({"session": "shoot", "name": "broken.jpg"})),
    ("/retry", form({"session": "shoot"})),
    ("/cancel", form({"session": "shoot"})),
    ("/upload", multipart([("new/photo.jpg", b"ok")])),
    ("/review/approve", form({"session": "shoot", "name": "ok.jpg"})),
    ("/review/retry", form({"session": "shoot", "name": "ok.jpg", "edges": "clean"})),
    ("/review/mask", multipart([("mask.png", b"a mask")], {"session": "shoot", "name": "ok.jpg"})),
]


def outside_the_page_folder(root):
    """Everything under the root but the page's own folder (its signing key, its pictures) and SQLite's
    shared-memory index, which any reader of a WAL database (`bgremover status` too) may create."""
    return [
        path for path in files_under(root) if not path.startswith("state/web") and not path.endswith(("-shm", "-wal"))
    ]


def post(web: WebPage, path: str, body_and_type: tuple[bytes, str], headers: dict):
    body, content_type = body_and_type
    return web.request("POST", path, body, {**headers, "Content-Type": content_type})


# ---------------------------------------------------------------- the token


def test_on_a_lan_address_without_a_token_the_page_refuses_to_start_in_one_line_with_exit_code_2(tmp_path):
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    for listen, extra, words in [
        ("0.0.0.0:0", {}, "set web_token"),
        ("0.0.0.0:0", {"BGREMOVER_WEB_TOKEN": "short"}, "at least 16 characters"),
        ("nonsense", {}, "expected HOST:PORT"),
    ]:
        result = subprocess.run(
            [sys.executable, "-m", "bgremover", "web", "--root", str(tmp_path), "--listen", listen],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and words in result.stderr, result.stderr
    assert not (tmp_path / "inbox").exists()


def test_a_missing_or_wrong_token_on_a_lan_listener_is_401_and_changes_nothing_on_disk(root):
    with WebPage(root, "0.0.0.0:0", web_token=TOKEN) as web:
        before = outside_the_page_folder(root)
        for credentials in [
            {},
            {"Authorization": "Bearer wrong-token-0123456789"},
            {"Authorization": f"Basic {TOKEN}"},
            {"Cookie": "bgremover_signed_in=forged"},
            {"Cookie": f"bgremover_signed_in={TOKEN}"},
        ]:
            for path, body in CHANGES:
                code, _, answer = post(web, path, body, {"Accept": "application/json", **credentials})
                assert code == 401, (path, credentials, answer)
            code, _, page = web.get("/", headers=credentials)
            assert code == 401 and b'name="token"' in page, "a browser is shown the sign-in form"
            for path in ("/review/shoot", "/review/shoot/items", "/pictures/1/after", "/sessions?live=1"):
                assert web.get(path, headers=credentials)[0] == 401, path
        assert outside_the_page_folder(root) == before

        # The same request with the token does change things: the refusals above were the guard's.
        code, _, answer = post(
            web,
            "/cancel",
            form({"session": "shoot"}),
            {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
        )
        assert code == 409 and b"complete already" in answer  # checked against the queue, past the guard
        code, _, answer = post(
            web,
            "/retry",
            form({"session": "shoot", "name": "broken.jpg"}),
            {"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
        )
        assert code == 200, answer
        assert (root / "retry" / "shoot" / "broken.jpg").is_file()


def test_signing_in_with_the_token_sets_a_cookie_that_opens_the_page(root):
    with WebPage(root, "0.0.0.0:0", web_token=TOKEN) as web:
        origin = {"Origin": f"http://127.0.0.1:{web.port}"}
        body, kind = form({"token": "not-the-token-at-all"})
        code, _, _ = web.request("POST", "/login", body, {**origin, "Content-Type": kind})
        assert code == 401
        body, kind = form({"token": TOKEN})
        code, headers, _ = web.request("POST", "/login", body, {**origin, "Content-Type": kind})
        assert (
            code == 303
            and "httponly" in headers["set-cookie"].lower()
            and "samesite=strict" in headers["set-cookie"].lower()
        )
        assert TOKEN not in headers["set-cookie"], "the cookie must not carry the token itself"
        cookie = headers["set-cookie"].split(";", 1)[0]
        code, _, page = web.get("/", headers={"Cookie": cookie})
        assert code == 200 and b"shoot" in page


# ---------------------------------------------------------------- cross-site requests


def test_a_cross_site_post_is_refused_and_changes_nothing(root):
    with WebPage(root) as web:
        csrf = web.csrf()
        before = outside_the_page_folder(root)
        forged = [
            {"Origin": "http://evil.example", "X-CSRF-Token": csrf},  # even with the token, from another site
            {"Sec-Fetch-Site": "cross-site", "X-CSRF-Token": csrf},
            {"Origin": "null", "X-CSRF-Token": csrf},
            {"Origin": f"http://127.0.0.1:{web.port}"},  # from the page's origin but without the page's token
            {"X-CSRF-Token": "0" * 64},
        ]
        for headers in forged:
            for path, body in CHANGES:
                code, _, answer = post(web, path, body, {"Accept": "application/json", **headers})
                assert code == 403, (path, headers, answer)
        # DNS rebinding: another site's name pointed at 127.0.0.1 is another host, and gets nothing at all.
        for path in ("/", "/api/status"):
            code, _, _ = web.get(path, host=f"evil.example:{web.port}")
            assert code == 421
        assert outside_the_page_folder(root) == before

        code, _, answer = post(web, "/retry", form({"session": "shoot", "name": "broken.jpg"}), web.same_origin())
        assert code == 200, answer
        assert (root / "retry" / "shoot" / "broken.jpg").is_file()
        code, _, answer = post(web, "/review/approve", form({"session": "shoot", "name": "ok.jpg"}), web.same_origin())
        assert code == 200, answer
        assert (root / "review" / "approve" / "shoot" / "ok.jpg").is_file()


def test_a_signed_in_browser_is_still_refused_a_cross_site_post(root):
    with WebPage(root, "0.0.0.0:0", web_token=TOKEN) as web:
        body, kind = form({"token": TOKEN})
        _, headers, _ = web.request("POST", "/login", body, {"Content-Type": kind})
        cookie = {"Cookie": headers["set-cookie"].split(";", 1)[0]}
        csrf = web.csrf(cookie)
        code, _, _ = post(
            web, "/retry", form({"session": "shoot"}), {**cookie, "Origin": "http://evil.example", "X-CSRF-Token": csrf}
        )
        assert code == 403
        code, _, _ = post(web, "/retry", form({"session": "shoot"}), {**cookie})  # no CSRF token
        assert code == 403
        assert not (root / "retry" / "shoot" / "broken.jpg").exists()


# ---------------------------------------------------------------- names in URLs


TRAVERSALS = [
    "/download/..",
    "/download/..%2F..%2Fetc%2Fpasswd",
    "/download/%2e%2e%2f%2e%2e%2fetc%2fpasswd",
    "/download/../state/bgremover.sqlite3",
    "/download//etc/passwd",
    "/download/%2Fetc%2Fpasswd",
    "/download/shoot%00",
    "/download/shoot%2F..%2F..%2Fstate",
    "/download/%252e%252e",
    "/static/..%2Fapp.py",
    "/static/%2e%2e%2fapp.py",
    "/static/../app.py",
    "/static/..",
    "/static/%2Fetc%2Fpasswd",
    "/static/page.js%00.txt",
    "/static/__init__.py",
    "/thumbnails/1/..%2F..%2Fstate",
    "/thumbnails/..%2F1/before",
    "/thumbnails/-1/before",
    "/thumbnails/1/../before",
    "/thumbnails/1/%2e%2e",
    "/thumbnails/99999/before",
    "/thumbnails/1/before%2F..%2F..",
]


def test_path_traversal_in_every_url_that_takes_a_name_is_404(root):
    with WebPage(root) as web:
        assert web.get("/download/shoot")[0] == 200 and web.get("/static/page.js")[0] == 200
        for path in TRAVERSALS:
            code, _, body = web.get(path)
            assert code == 404, (path, code, body[:200])
            assert b"root:" not in body and b"SQLite" not in body


def test_a_symlink_where_a_zip_or_an_original_should_be_is_404(root, tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes((REPO / "daemon" / "bgremover" / "bench" / "photos" / "coffee.jpg").read_bytes())
    zip_path = root / "outbox" / "shoot.zip"
    zip_path.unlink()
    zip_path.symlink_to(secret)
    for original in (root / "archive" / "shoot").iterdir():
        original.unlink()
        original.symlink_to(secret)
    with WebPage(root) as web:
        assert web.get("/download/shoot")[0] == 404
        for item in (1, 2):
            assert web.get(f"/thumbnails/{item}/before")[0] == 404
        code, _, page = web.get("/sessions")
        assert code == 200 and b'class="before"' not in page, "a link is shown as no picture"


def test_marker_names_sent_in_a_form_never_leave_the_marker_folders(root):
    with WebPage(root) as web:
        before = outside_the_page_folder(root)
        for fields in [
            {"session": "../inbox", "name": "x.jpg"},
            {"session": "shoot", "name": "../../inbox/x.jpg"},
            {"session": "/etc", "name": "passwd"},
            {"session": "shoot/../../inbox"},
            {"session": "shoot", "name": "%2e%2e/%2e%2e/x.jpg"},
        ]:
            for path in ("/retry", "/cancel") if fields["session"] != "shoot" else ("/retry",):
                code, _, answer = post(web, path, form(fields), web.same_origin())
                assert code == 404, (path, fields, answer)
        assert outside_the_page_folder(root) == before


# ---------------------------------------------------------------- uploads


def test_an_upload_over_a_limit_is_413_and_leaves_nothing_in_the_inbox(root):
    with WebPage(root, web_upload_file_mb=0.01, web_upload_request_mb=0.05) as web:  # 10 KB a file, 50 KB a request
        inbox = root / "inbox"
        assert files_under(inbox) == []
        one_too_large = multipart([("shoot2/a.jpg", b"x" * 5000), ("shoot2/big.jpg", b"x" * 20_000)])
        too_many = multipart([(f"shoot3/{n}.jpg", b"x" * 9000) for n in range(7)])
        for body in (one_too_large, too_many):
            code, headers, answer = post(web, "/upload", body, web.same_origin())
            assert code == 413, answer
            assert b"limit" in answer and b"nothing was uploaded" in answer
            assert files_under(inbox) == []
        # Sent in chunks with no Content-Length, the request's limit still holds as the bytes arrive.
        code = chunked_post(web, "/upload", too_many)
        assert code == 413
        assert files_under(inbox) == []
        code, _, answer = post(web, "/upload", multipart([("notes.txt", b"hello")]), web.same_origin())
        assert code == 415 and b"not an image" in answer
        assert files_under(inbox) == []

        code, _, answer = post(web, "/upload", multipart([("shoot4/small.jpg", b"x" * 9000)]), web.same_origin())
        assert code == 200, answer
        assert files_under(inbox) == ["shoot4", "shoot4/small.jpg"]


def chunked_post(web: WebPage, path: str, body_and_type: tuple[bytes, str]) -> int:
    body, content_type = body_and_type
    connection = http.client.HTTPConnection("127.0.0.1", web.port, timeout=30)
    try:
        headers = {**web.same_origin(), "Content-Type": content_type}
        connection.request(
            "POST",
            path,
            body=iter([body[i : i + 4096] for i in range(0, len(body), 4096)]),
            headers=headers,
            encode_chunked=True,
        )
        return connection.getresponse().status
    except (BrokenPipeError, ConnectionResetError):
        pytest.fail("the page closed the connection instead of answering 413")
    finally:
        connection.close()


HOSTILE = [
    "../../escaped.jpg",
    "/etc/cron.d/absolute.jpg",
    "..\\..\\windows.jpg",
    ".hidden.jpg",
    "~$lock.jpg",
    "shoot/../../../climb.jpg",
    "C:\\Users\\me\\drive.jpg",
    "%2e%2e%2fencoded.jpg",
    "new\nline.jpg",
    "a" * 300 + ".jpg",
    "..",
    "./dot/./name.jpg",
    "tab\there.jpg",
    'quote".jpg',
]


def test_an_upload_with_a_hostile_name_is_stored_under_a_safe_name_inside_the_inbox(root):
    def elsewhere() -> list[str]:
        return [p for p in outside_the_page_folder(root) if not p.startswith(("inbox", "uploaded"))]

    outside = elsewhere()
    with WebPage(root) as web:
        stored = 0
        for name in HOSTILE:
            code, _, answer = post(web, "/upload", multipart([(name, b"ok")]), web.same_origin())
            if name == "..":
                assert code == 400 and b"no name" in answer
                continue
            assert code == 200, (name, answer)
            renamed = json.loads(answer)["renamed"]
            assert renamed == [] or renamed[0][0] == name and renamed[0][1] in json.loads(answer)["message"], answer
            stored += 1
    inbox = root / "inbox"
    files = [path for path in inbox.rglob("*") if path.is_file()]
    assert len(files) == stored, [str(f) for f in files]
    for path in files:
        parts = path.relative_to(inbox).parts
        assert not any(part.startswith((".", "~$")) or part in ("..", ".") for part in parts), parts
        assert all(len(part.encode()) <= 255 for part in parts) and path.suffix == ".jpg"
        assert path.resolve().is_relative_to(inbox.resolve())
    assert elsewhere() == outside
    # Each upload's marker names the file as the inbox holds it: the daemon finds it where it was put.
    listed = sorted(line for marker in (root / "uploaded").iterdir() for line in marker.read_text().splitlines())
    assert listed == sorted(str(path.relative_to(inbox)) for path in files)


# ---------------------------------------------------------------- every response


def test_every_response_carries_a_content_security_policy(root):
    with WebPage(root) as web:
        for path in ("/", "/sessions", "/api/status", "/static/page.js", "/download/shoot", "/nowhere", "/login"):
            _, headers, _ = web.get(path)
            policy = headers.get("content-security-policy", "")
            assert (
                "default-src 'none'" in policy and "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
            ), path
            assert headers.get("x-content-type-options") == "nosniff"
        _, headers, _ = post(web, "/cancel", form({"session": "shoot"}), {"Origin": "http://evil.example"})
        assert "default-src 'none'" in headers.get("content-security-policy", "")
