"""What a client can make the page hold: connections, parts of a form, a sign-in's life, a picture's worker."""

from __future__ import annotations

import uuid

from tests.support.web import WebPage, files_under


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
