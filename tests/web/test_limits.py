"""What a client can make the page hold: connections, parts of a form, a sign-in's life, a picture's worker."""

from __future__ import annotations

import time
import uuid

from bgremover.address import parse_listen
from bgremover.web.security import Guard
from tests.support.web import TOKEN, WebPage, files_under, form


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
