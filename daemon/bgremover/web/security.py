"""Who may use the page, and what every response carries.

Three checks, in this order, on every request:
- On a loopback listener the Host header must name the loopback: a page on
  another site whose name an attacker points at 127.0.0.1 (DNS rebinding) is
  then a different host, and gets nothing.
- With a `web_token`, a request must carry it: as a sign-in cookie (set by the
  login form) or as `Authorization: Bearer TOKEN` (scripts). Without one (only
  allowed on the loopback) everyone on this machine may use the page.
- A request that changes something (any POST but the login) must come from the
  page itself: a browser's Origin and Sec-Fetch-Site must say same origin, and
  it must carry the page's CSRF token (header or `csrf` query parameter), which
  another site cannot read. A Bearer request needs no CSRF token: a browser
  never adds that header to a cross-site request on its own.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time
from pathlib import Path
from urllib.parse import urlsplit

from bgremover.address import Listen

COOKIE = "bgremover_signed_in"
CSRF_HEADER = "x-csrf-token"
OPEN_PATHS = ("/login", "/static/")  # what an unsigned visitor may fetch: the form and its style
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
RESPONSE_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    # same-origin, not no-referrer: with no-referrer Chrome sends "Origin: null" on a form's POST.
    (b"referrer-policy", b"same-origin"),
]
CLOCK_SKEW_SECONDS = 300  # a cookie issued this far ahead of our clock is still taken (an NTP step back)
SAME_SITE_FETCHES = frozenset({"same-origin", "none"})  # "none": typed or bookmarked, not sent by another page


def load_secret(folder: Path) -> bytes:
    """The root's own signing key, made once: sign-ins and CSRF tokens outlive a restart of the page."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "secret"
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        secret = path.read_bytes()
        if len(secret) >= 32:
            return secret
        path.unlink()  # cut short by a crash while it was written: make another
        return load_secret(folder)
    with os.fdopen(fd, "wb") as out:
        out.write(secrets.token_bytes(32))
        out.flush()
        os.fsync(out.fileno())
    return path.read_bytes()


class Guard:
    def __init__(self, listen: Listen, token: str | None, secret: bytes, session_seconds: float = 7 * 86400) -> None:
        self.listen = listen
        self.token = token
        self.secret = secret
        self.session_seconds = session_seconds
        self.port = listen.port  # the bound port, once known (listen.port may be 0)

    def sign(self, purpose: bytes) -> str:
        return hmac.new(self.secret, purpose, hashlib.sha256).hexdigest()

    @property
    def csrf_token(self) -> str:
        return self.sign(b"csrf")

    def cookie_value(self, now: float | None = None) -> str:
        """ISSUED.SIGNATURE: when the sign-in happened, signed with the token it was made with.

        Never the token itself: a cookie may end up in a place the token must not.
        The signature covers the issue time, so it cannot be moved forward, and
        the token, so a new token refuses every cookie made with the old one.
        """
        issued = int(time.time() if now is None else now)
        return f"{issued}.{self.cookie_signature(issued)}"

    def cookie_signature(self, issued: int) -> str:
        return self.sign(b"signed in with " + (self.token or "").encode() + b" at " + str(issued).encode())

    def cookie_valid(self, cookie: str, now: float | None = None) -> bool:
        issued_text, _, signature = cookie.partition(".")
        if not issued_text.isdigit() or len(issued_text) > 12:
            return False
        issued = int(issued_text)
        if not hmac.compare_digest(signature.encode(), self.cookie_signature(issued).encode()):
            return False
        age = (time.time() if now is None else now) - issued
        return -CLOCK_SKEW_SECONDS <= age <= self.session_seconds

    def host_allowed(self, host: str | None) -> bool:
        if not self.listen.loopback:
            return True  # any name or address of this machine on the LAN; the token guards it
        if host is None:
            return False
        if host.startswith("["):
            name, _, rest = host[1:].partition("]")
            port = rest.removeprefix(":")
        else:
            name, _, port = host.partition(":")
        return name.lower() in ("127.0.0.1", "localhost", "::1") and port in ("", str(self.port))

    def token_matches(self, given: str) -> bool:
        return self.token is not None and hmac.compare_digest(given.encode(), self.token.encode())

    def bearer(self, authorization: str | None) -> bool:
        scheme, _, value = (authorization or "").partition(" ")
        return scheme.lower() == "bearer" and self.token_matches(value.strip())

    def signed_in(self, cookie: str | None, authorization: str | None, now: float | None = None) -> bool:
        if self.token is None:
            return True
        if self.bearer(authorization):
            return True
        return cookie is not None and self.cookie_valid(cookie, now)

    def cross_site(self, origin: str | None, fetch_site: str | None, host: str | None) -> bool:
        """Whether a browser says this request was sent by another site's page."""
        if fetch_site is not None and fetch_site not in SAME_SITE_FETCHES:
            return True
        if origin is None:
            return False  # not a browser, or a very old one: the CSRF token still has to match
        parts = urlsplit(origin)
        return origin == "null" or parts.netloc.lower() != (host or "").lower()

    def csrf_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.csrf_token.encode())
