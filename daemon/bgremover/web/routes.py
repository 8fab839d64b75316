"""The requests that only read: the page, its live part, the status document, the pictures, the ZIPs, the static files.

A name in a URL is only ever looked up in the queue, never joined to a path:
a session's ZIP is the file the queue names in the outbox, and an item's
pictures are found by its number. Whatever a URL holds (`..`, an absolute
path, percent-encoded tricks), the answer is the session or item of exactly
that name, or 404. A link where a file should be is a 404 too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response, StreamingResponse

from bgremover.queue.store import Item, Session, Store
from bgremover.web import page
from bgremover.web.context import Web
from bgremover.web.thumbnails import LARGE_SIDE, MEDIA_TYPE, SIDE

STATIC = Path(__file__).parent / "static"
STATIC_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
}
NO_STORE = {"cache-control": "no-store"}
KINDS = ("before", "after")
CHUNK = 256 * 1024


def static_files() -> dict[str, tuple[bytes, str]]:
    """Read once at start: only these names are ever served, so no path can be asked for."""
    return {
        path.name: (path.read_bytes(), STATIC_TYPES[path.suffix])
        for path in sorted(STATIC.iterdir())
        if path.suffix in STATIC_TYPES
    }


# More digits than this is no page a root can have; refused before it reaches SQLite's OFFSET.
PAGE_DIGITS = 9


def page_asked(request: Request) -> int | None:
    """`?page=N`: which settled sessions to show beside those under way (0, the newest, by default); None if not a number."""
    text = request.query_params.get("page", "0")
    return int(text) if text.isdigit() and len(text) <= PAGE_DIGITS else None


def bad_page() -> Response:
    return Response("page must be a whole number of at least 0\n", 400, media_type="text/plain")


async def index(web: Web, request: Request) -> Response:
    if (number := page_asked(request)) is None:
        return bad_page()
    fragment = await web.reader.fragment(number)
    html = web.env.get_template("page.html").render(
        live=fragment, signed_in_with_token=web.guard.token is not None, **web.common()
    )
    return HTMLResponse(html, headers=NO_STORE)


# At most this many names in each of a poll's lists: a page shows a few dozen batches.
LISTED = 200


async def sessions(web: Web, request: Request) -> Response:
    """The live part. The page's script says which batches it has open (`open`), which it shows whole (`all`),
    and the tag of each batch it has (`have`): a batch unchanged since is sent as a bare placeholder."""
    if (number := page_asked(request)) is None:
        return bad_page()
    query = request.query_params
    opened = frozenset(query.getlist("open")[:LISTED]) if "live" in query else None
    full = frozenset(query.getlist("all")[:LISTED])
    have = frozenset(query.getlist("have")[:LISTED])
    return HTMLResponse(await web.reader.fragment(number, opened, full, have), headers=NO_STORE)


async def status(web: Web, request: Request) -> Response:
    if (number := page_asked(request)) is None:
        return bad_page()
    return Response(await web.reader.status(number), media_type="application/json", headers=NO_STORE)


def not_found() -> Response:
    return Response("not found\n", 404, media_type="text/plain")


async def thumbnail(web: Web, request: Request) -> Response:
    return await picture(web, request, SIDE)


async def large_picture(web: Web, request: Request) -> Response:
    """The review's before or after, large enough to judge an edge by."""
    return await picture(web, request, LARGE_SIDE)


async def picture(web: Web, request: Request, side: int) -> Response:
    item_id, kind = request.path_params["item"], request.path_params["kind"]
    if kind not in KINDS:
        return not_found()
    # A file that moved on between choosing it and reading it (its session completing) is
    # looked for again, once, where the queue then says it is.
    for _ in range(2):
        found = item_and_session(web, item_id)
        if found is None:
            return not_found()
        before, after = page.sources(*found, web.spool, web.settings.outbox)
        for source in before if kind == "before" else after:
            made = await web.thumbnails.picture(source, side)
            if made is not None:
                return Response(
                    made.read_bytes(), media_type=MEDIA_TYPE, headers={"cache-control": "private, max-age=3600"}
                )
    return not_found()


def item_and_session(web: Web, item_id: str) -> tuple[Item, Session] | None:
    store = open_store(web)
    if store is None:
        return None
    try:
        item = store.item(item_id)
        session = store.session(item.session) if item else None
    finally:
        store.close()
    return (item, session) if item is not None and session is not None else None


async def download(web: Web, request: Request) -> Response:
    name = request.path_params["session"]
    store = open_store(web)
    if store is None:
        return not_found()
    try:
        session = store.session(name)
    finally:
        store.close()
    if session is None or not session.zip or "/" in session.zip or session.zip.startswith("."):
        return not_found()
    try:
        fd = os.open(web.settings.outbox / session.zip, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError:  # not there yet, swept, or a link
        return not_found()
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        return not_found()
    disposition = f"attachment; filename*=UTF-8''{quote(session.zip, safe='')}"
    return StreamingResponse(
        chunks(fd),
        media_type="application/zip",
        headers={"content-disposition": disposition, "content-length": str(info.st_size), **NO_STORE},
    )


async def chunks(fd: int):
    """The open ZIP, read as it is sent: a newer ZIP renamed over it meanwhile does not mix into it."""
    with open(fd, "rb") as file:
        while data := file.read(CHUNK):
            yield data


def open_store(web: Web) -> Store | None:
    if not web.settings.database.exists():
        return None
    return Store(web.settings.database, readonly=True)


def static(files: dict[str, tuple[bytes, str]]):
    async def serve(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            return not_found()
        data, media_type = found
        return Response(data, media_type=media_type, headers={"cache-control": "no-cache"})

    return serve
