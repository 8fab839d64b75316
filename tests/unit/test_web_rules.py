"""The web page's rules on their own: listen addresses, upload names, and the guard's decisions."""

from __future__ import annotations

import pytest

from bgremover.address import parse_listen
from bgremover.web.forms import FormRefused
from bgremover.web.security import Guard
from bgremover.web.uploads import safe_name


@pytest.mark.parametrize(
    "text, host, port, loopback",
    [
        ("127.0.0.1:8765", "127.0.0.1", 8765, True),
        ("localhost:80", "localhost", 80, True),
        ("[::1]:8765", "::1", 8765, True),
        ("127.9.9.9:1", "127.9.9.9", 1, True),
        ("0.0.0.0:8765", "0.0.0.0", 8765, False),
        ("[::]:0", "::", 0, False),
        ("studio-pc:8765", "studio-pc", 8765, False),
    ],
)
def test_a_listen_address_is_read_and_only_the_loopback_counts_as_this_machine_alone(text, host, port, loopback):
    listen = parse_listen(text)
    assert (listen.host, listen.port, listen.loopback) == (host, port, loopback)


@pytest.mark.parametrize("text", ["8765", "127.0.0.1", ":8765", "127.0.0.1:99999", "::1:8765", "[::1:8765", "a:b"])
def test_a_malformed_listen_address_is_refused_in_one_sentence(text):
    with pytest.raises(ValueError) as refused:
        parse_listen(text)
    assert "\n" not in str(refused.value)


@pytest.mark.parametrize(
    "sent, stored",
    [
        ("photo.jpg", "photo.jpg"),
        ("shoot/red.JPG", "shoot/red.JPG"),
        ("../../up.jpg", "up.jpg"),
        ("/etc/abs.png", "etc/abs.png"),
        ("..\\..\\win.jpg", "win.jpg"),
        (".hidden.jpg", "hidden.jpg"),
        ("~$lock.jpg", "lock.jpg"),
        ("a/./b/../c.jpg", "a/b/c.jpg"),
        ("C:\\me\\d.jpg", "me/d.jpg"),
        ("new\nline.jpg", "newline.jpg"),
        ("shoot/.git/x.jpg", "shoot/git/x.jpg"),
    ],
)
def test_an_uploaded_name_becomes_one_the_inbox_keeps_inside_itself(sent, stored):
    assert safe_name(sent) == stored


def test_an_uploaded_name_is_fitted_to_255_bytes_a_part_keeping_its_extension():
    name = safe_name("é" * 200 + ".jpeg")
    assert len(name.encode()) <= 255 and name.endswith(".jpeg")


@pytest.mark.parametrize(
    "sent, status", [("notes.txt", 415), ("photo.jpg.part", 415), ("..", 400), ("/", 400), ("archive.zip", 415)]
)
def test_an_upload_that_is_no_image_or_has_no_name_is_refused(sent, status):
    with pytest.raises(FormRefused) as refused:
        safe_name(sent)
    assert refused.value.status == status


def guard(listen: str, token: str | None = None) -> Guard:
    return Guard(parse_listen(listen), token, b"k" * 32)


def test_on_the_loopback_only_loopback_host_names_are_answered():
    g = guard("127.0.0.1:8765")
    for host in ("127.0.0.1:8765", "localhost:8765", "[::1]:8765", "localhost"):
        assert g.host_allowed(host), host
    for host in ("evil.example:8765", "127.0.0.1:9999", "127.0.0.1.evil.example:8765", None, ""):
        assert not g.host_allowed(host), host
    assert guard("0.0.0.0:8765", "t" * 16).host_allowed("studio-pc:8765")


def test_a_token_is_needed_once_set_and_the_cookie_never_holds_it():
    g = guard("0.0.0.0:8765", "s3cret-token-0123")
    assert not g.signed_in(None, None) and not g.signed_in("s3cret-token-0123", None)
    assert g.signed_in(g.cookie_value(), None) and g.signed_in(None, "Bearer s3cret-token-0123")
    assert "s3cret" not in g.cookie_value()
    assert guard("127.0.0.1:8765").signed_in(None, None), "no token: this machine's users need none"


def test_a_request_from_another_site_is_told_apart_from_the_pages_own():
    g = guard("127.0.0.1:8765")
    host = "127.0.0.1:8765"
    assert not g.cross_site("http://127.0.0.1:8765", "same-origin", host)
    assert not g.cross_site(None, None, host)  # curl: the CSRF token decides
    assert g.cross_site("http://evil.example", None, host)
    assert g.cross_site(None, "cross-site", host) and g.cross_site(None, "same-site", host)
    assert g.cross_site("null", None, host)
    assert g.csrf_matches(g.csrf_token) and not g.csrf_matches("0" * 64) and not g.csrf_matches(None)
