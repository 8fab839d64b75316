"""The requests that change something, each only the way a user can: a marker touched, a file put in the inbox.

The guard (app.py, security.py) has already checked the token and that the
request comes from the page itself. Here each request is checked against the
queue, read-only: a retry names an item that can be retried, a cancel a
session that is still running. A marker's path is built from the names the
queue holds, never from what was sent.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from urllib.parse import parse_qs

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from bgremover.queue.states import SessionState
from bgremover.queue.store import Item, Session
from bgremover.status.markers import cancel_marker, mark_uploaded, retry_marker, retry_targets, touch
from bgremover.web.context import Web, wants_json
from bgremover.web.forms import FIELD_LIMIT, FormRefused, read_form
from bgremover.web.routes import open_store
from bgremover.web.security import COOKIE
from bgremover.web.uploads import NOWHERE, Placed, Replacement, Staging

RENAMED_SHOWN = 10  # renamed uploads named in the message; the JSON answer lists every one
WRONG_TOKEN_PAUSE = 1.0  # seconds: guessing a 16-character token one request at a time is hopeless


async def upload(web: Web, request: Request) -> Response:
    web.settings.inbox.mkdir(parents=True, exist_ok=True)
    staging = Staging(web.settings.inbox)
    try:
        await read_form(
            request.headers.get("content-type", ""), request.stream(), staging.open, web.limits, content_length(request)
        )
        if not staging.files:
            raise FormRefused(400, "choose at least one photo to upload")
        placed = staging.place()
        # The upload is whole: its batches need not wait out the idle time for more files.
        mark_uploaded(web.settings, [p.name for p in placed])
    except FormRefused as refused:
        return await refuse(web, request, refused)
    finally:
        staging.discard()
    where = "they appear below as their batch" if len(placed) > 1 else "it appears below as its batch"
    message = f"Uploaded {len(placed)} photo{'s' if len(placed) != 1 else ''}: {where} starts."
    return done(web, request, message + renamed_text(placed), renamed=[[p.sent, p.name] for p in placed if p.renamed])


def renamed_text(placed: list[Placed]) -> str:
    """Each photo stored under another name than it was sent with, so the user knows what to look for."""
    renamed = [p for p in placed if p.renamed]
    if not renamed:
        return ""
    shown = "; ".join(f"{p.sent} as {p.name}" for p in renamed[:RENAMED_SHOWN])
    more = f"; and {len(renamed) - RENAMED_SHOWN} more" if len(renamed) > RENAMED_SHOWN else ""
    return f" Stored under another name (the name was taken, or not one the inbox allows): {shown}{more}."


async def retry(web: Web, request: Request) -> Response:
    """One item (session and name), or every failed and cancelled item of a session (session alone)."""
    fields, fixed = await retry_form(web, request)
    if isinstance(fields, Response):
        return fields
    session, items = look_up_retry(web, fields.get("session", ""), fields.get("name"))
    if isinstance(items, str):
        if fixed is not None:
            fixed.discard()
        return web.message(request, 404 if session is None else 409, "Cannot retry", items)
    try:
        if fixed is not None and fixed.received:
            fixed.place()  # the marker itself, with content: the daemon runs the item again on this file
        else:
            for item in items:
                touch(marker_path(web, item))
    except FormRefused as refused:
        return await refuse(web, request, refused)
    names = items[0].name if len(items) == 1 else f"{len(items)} photos"
    return done(web, request, f"Retrying {names} in {session.name}.")


async def retry_form(web: Web, request: Request) -> tuple[dict | Response, Replacement | None]:
    """The retry's fields; from a multipart form, its fixed file staged beside the item's marker."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return await small_form(web, request), None
    staged: list[Replacement] = []

    def open_file(field: str, sent: str, fields: dict[str, str]):
        if not sent:  # the file input left empty: a plain retry
            return NOWHERE
        if staged:
            raise FormRefused(400, "a retry takes at most one fixed file")
        # The page's form sends the session and the name before the file, so the item is known here.
        item = single_item(web, fields.get("session", ""), fields.get("name"))
        if item is None:
            raise FormRefused(409, "a fixed file needs a failed or cancelled photo to replace")
        staged.append(Replacement(marker_path(web, item), item.ext))
        return staged[0].open(field, sent)

    try:
        fields = await read_form(
            request.headers.get("content-type", ""), request.stream(), open_file, web.limits, content_length(request)
        )
    except FormRefused as refused:
        for replacement in staged:
            replacement.discard()
        return await refuse(web, request, refused), None
    return fields, staged[0] if staged else None


def single_item(web: Web, session: str, name: str | None) -> Item | None:
    if not name:
        return None
    found_session, items = look_up_retry(web, session, name)
    return items[0] if found_session is not None and not isinstance(items, str) else None


def look_up_retry(web: Web, session_name: str, name: str | None) -> tuple[Session | None, list[Item] | str]:
    """The session and the items to retry, or the sentence saying why there are none."""
    store = open_store(web)
    if store is None:
        return None, "there are no batches yet"
    try:
        session, items = retry_targets(store, session_name, name or None)  # an empty name field: the whole batch
    finally:
        store.close()
    if session is None:
        return None, f"there is no batch named '{session_name}'"
    if items is None:
        return None, f"{session_name} has no photo named '{name}'"  # None: answered as not found
    if not items:
        return session, "nothing to retry: only failed or cancelled photos can be retried"
    return session, items


async def cancel(web: Web, request: Request) -> Response:
    fields = await small_form(web, request)
    if isinstance(fields, Response):
        return fields
    name = fields.get("session", "")
    store = open_store(web)
    session = store.session(name) if store is not None else None
    if store is not None:
        store.close()
    if session is None:
        return web.message(request, 404, "Cannot cancel", f"there is no batch named '{name}'")
    if session.state is SessionState.COMPLETE:
        return web.message(request, 409, "Cannot cancel", f"{name} is complete already: there is nothing to cancel")
    touch(cancel_marker(web.settings, session.name))
    return done(web, request, f"Cancelling {session.name}: photos not finished yet will be left out.")


async def login(web: Web, request: Request) -> Response:
    fields = await small_form(web, request)
    if isinstance(fields, Response):
        return fields
    if not web.guard.token_matches(fields.get("token", "")):
        await asyncio.sleep(WRONG_TOKEN_PAUSE)
        return web.message(request, 401, "Sign in", "That access code is not right.", login=True)
    response = RedirectResponse("/", 303)
    response.set_cookie(
        COOKIE,
        web.guard.cookie_value(),
        max_age=int(web.guard.session_seconds),  # the browser forgets it when the page would refuse it
        httponly=True,
        samesite="strict",
        path="/",
    )
    return response


async def logout(web: Web, request: Request) -> Response:
    response = RedirectResponse("/login", 303)
    response.delete_cookie(COOKIE, path="/")
    return response


async def small_form(web: Web, request: Request) -> dict[str, str] | Response:
    """An urlencoded form of a few fields; anything larger is refused before it is read whole."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > FIELD_LIMIT:
            return web.message(request, 413, "Too large", "the form is too large")
    return {key: values[-1] for key, values in parse_qs(body.decode("utf-8", "replace")).items()}


async def refuse(web: Web, request: Request, refused: FormRefused) -> Response:
    titles = {413: "Too large", 415: "Not an image"}
    response = web.message(request, refused.status, titles.get(refused.status, "Cannot upload"), str(refused))
    if refused.status == 413:
        response.headers["connection"] = "close"  # the rest of the body is not read
    return response


def done(web: Web, request: Request, message: str, **extra) -> Response:
    if wants_json(request):
        return web.message(request, 200, "Done", message, **extra)
    return RedirectResponse("/", 303)  # a browser without the script: back to the page, which shows the change


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "")
    return int(value) if value.isdigit() else None


def marker_path(web: Web, item: Item) -> Path:
    """retry/SESSION/NAME from the queue's own names; no name the queue makes can leave the folder."""
    marker = retry_marker(web.settings, item)
    if not marker.resolve().is_relative_to(web.settings.retry_dir.resolve()):
        raise FormRefused(404, "no such photo")
    return marker
