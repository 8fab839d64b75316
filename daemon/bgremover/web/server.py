"""`bgremover web`: check the address and the token, bind, and serve until SIGTERM or Ctrl-C.

The socket is bound here, before uvicorn starts, so a port in use or an
address this machine does not have is one line and exit code 2, and a port
of 0 is known before the address is printed.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys

from bgremover.address import Listen, parse_listen
from bgremover.exits import EXIT_OK, EXIT_USAGE, fail
from bgremover.settings import Settings

TOKEN_MIN = 16  # characters
PRIORITY = 5  # nice: the daemon's jobs come before the page
HELP = "serve the web page: batches, pictures, retry, upload"


def add_web_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="the address to listen on (setting: web_listen, default 127.0.0.1:8765); any but the "
        "loopback needs web_token",
    )


def start(settings: Settings, args: argparse.Namespace) -> int:
    return serve(settings, args.listen)


def refusal(listen: Listen, token: str | None) -> str | None:
    """Why the page must not start on this address with this token, or None."""
    if token is not None and len(token) < TOKEN_MIN:
        return (
            f"web_token must be at least {TOKEN_MIN} characters; make one with "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    if token is None and not listen.loopback:
        return (
            f"listening on {listen.host} lets other machines in: set web_token "
            "(BGREMOVER_WEB_TOKEN) first, or listen on 127.0.0.1"
        )
    return None


def bind(listen: Listen) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen.host else socket.AF_INET
    infos = socket.getaddrinfo(listen.host, listen.port, family, socket.SOCK_STREAM)
    sock = socket.socket(infos[0][0], socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(infos[0][4])
        sock.listen(2048)  # 200 browsers arriving at once must all be let in
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


def serve(settings: Settings, listen_text: str | None) -> int:
    try:
        import uvicorn

        from bgremover.web.app import build
        from bgremover.web.connections import KEEP_ALIVE_SECONDS, REQUESTS_LIMIT, GuardedHttp
    except ImportError as exc:
        return fail(f"bgremover web needs its extra ({exc.name} is missing): pip install 'bgremover[web]'", EXIT_USAGE)
    try:
        listen = parse_listen(listen_text or settings.web_listen)
    except ValueError as exc:
        return fail(f"bad --listen: {exc}", EXIT_USAGE)
    token = settings.web_token.get_secret_value() if settings.web_token else None
    problem = refusal(listen, token)
    if problem:
        return fail(problem, EXIT_USAGE)
    try:
        sock = bind(listen)
    except OSError as exc:
        return fail(f"cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}", EXIT_USAGE)
    app, guard = build(settings, listen, token)
    guard.port = sock.getsockname()[1]
    os.nice(PRIORITY)
    print(f"bgremover: the web page is at {listen.url(guard.port)} (root {settings.root})", file=sys.stderr, flush=True)
    # proxy_headers off: the page trusts no X-Forwarded-For (a proxy in front passes Host, which is checked).
    config = uvicorn.Config(
        app,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
        server_header=False,
        proxy_headers=False,
        http=GuardedHttp,  # httptools, with a deadline for headers and room made for new connections
        limit_concurrency=REQUESTS_LIMIT,
        timeout_keep_alive=KEEP_ALIVE_SECONDS,
    )
    uvicorn.Server(config).run(sockets=[sock])
    return EXIT_OK
