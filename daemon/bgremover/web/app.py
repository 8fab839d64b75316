"""The web application: its routes, the guard in front of them, and what starts and stops with it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bgremover.address import Listen
from bgremover.queue.spool import Spool
from bgremover.settings import Settings
from bgremover.web import actions, review, routes
from bgremover.web.context import Web, wants_json
from bgremover.web.forms import Limits
from bgremover.web.reading import Reader, templates
from bgremover.web.security import COOKIE, CSRF_HEADER, OPEN_PATHS, RESPONSE_HEADERS, Guard, load_secret
from bgremover.web.thumbnails import Thumbnails
from bgremover.web.uploads import remove_stale_staging

CHANGES = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def web_folder(settings: Settings):
    return settings.state_dir / "web"


def build(settings: Settings, listen: Listen, token: str | None) -> tuple[Starlette, Guard]:
    session_seconds = settings.web_session_hours * 3600
    guard = Guard(listen, token, load_secret(web_folder(settings)), session_seconds)
    env = templates()
    web = Web(
        settings,
        guard,
        None,
        Thumbnails(web_folder(settings) / "thumbnails"),
        env,  # type: ignore[arg-type]
        Limits.in_mb(settings.web_upload_file_mb, settings.web_upload_request_mb),
        Spool(settings.root),
    )
    web.reader = Reader(settings, env, web.common)

    def bound(handler):
        async def endpoint(request: Request) -> Response:
            return await handler(web, request)

        return endpoint

    app = Starlette(
        routes=[
            Route("/", bound(routes.index)),
            Route("/sessions", bound(routes.sessions)),
            Route("/api/status", bound(routes.status)),
            Route("/thumbnails/{item:int}/{kind}", bound(routes.thumbnail)),
            Route("/pictures/{item:int}/{kind}", bound(routes.large_picture)),
            Route("/review/{session}", bound(review.view)),
            Route("/review/{session}/items", bound(review.items)),
            Route("/review/approve", bound(review.approve), methods=["POST"]),
            Route("/review/retry", bound(review.retry), methods=["POST"]),
            Route("/review/mask", bound(review.mask), methods=["POST"]),
            Route("/download/{session}", bound(routes.download)),
            Route("/static/{name}", routes.static(routes.static_files())),
            Route("/upload", bound(actions.upload), methods=["POST"]),
            Route("/retry", bound(actions.retry), methods=["POST"]),
            Route("/cancel", bound(actions.cancel), methods=["POST"]),
            Route("/login", bound(login_page), methods=["GET"]),
            Route("/login", bound(actions.login), methods=["POST"]),
            Route("/logout", bound(actions.logout), methods=["POST"]),
        ],
        lifespan=lifespan(web),
    )
    return GuardMiddleware(app, web), guard  # type: ignore[return-value]


async def login_page(web: Web, request: Request) -> Response:
    if web.guard.token is None:
        return web.message(request, 200, "No sign-in needed", "This page asks for no access code.")
    return web.message(request, 200, "Sign in", "This page is protected by an access code.", login=True)


def lifespan(web: Web):
    @contextlib.asynccontextmanager
    async def running(app: Starlette) -> AsyncIterator[None]:
        remove_stale_staging(web.settings.inbox, time.time())
        remove_stale_staging(web.settings.retry_dir, time.time())
        web.thumbnails.start()
        try:
            yield
        finally:
            web.thumbnails.close()

    return running


class GuardMiddleware:
    """Every request passes security.Guard's three checks; every response gets its security headers."""

    def __init__(self, app: ASGIApp, web: Web) -> None:
        self.app = app
        self.web = web

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = list(message.get("headers", [])) + RESPONSE_HEADERS
            await send(message)

        request = Request(scope)
        refusal = self.refusal(request)
        if refusal is not None:
            await refusal(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def refusal(self, request: Request) -> Response | None:
        guard, web, headers = self.web.guard, self.web, request.headers
        if not guard.host_allowed(headers.get("host")):
            return Response(
                "this page answers only to the loopback address it listens on\n", 421, media_type="text/plain"
            )
        path, changing = request.url.path, request.method in CHANGES
        if changing and guard.cross_site(headers.get("origin"), headers.get("sec-fetch-site"), headers.get("host")):
            return web.message(request, 403, "Refused", "refused: this request was sent by another site")
        if path.startswith(OPEN_PATHS):
            return None
        if not guard.signed_in(request.cookies.get(COOKIE), headers.get("authorization")):
            if wants_json(request) or changing:
                return web.message(request, 401, "Sign in", "sign in first: this page needs its access code")
            return web.message(request, 401, "Sign in", "This page is protected by an access code.", login=True)
        if changing and not guard.bearer(headers.get("authorization")):
            given = headers.get(CSRF_HEADER) or request.query_params.get("csrf")
            if not guard.csrf_matches(given):
                return web.message(
                    request,
                    403,
                    "Refused",
                    "refused: the page is out of date or the request did not come from it; reload the page",
                )
        return None
