"""The review view: a batch's photos, those a quality signal flagged first, each large before and after, and the
decisions on them (approve; reject and run again with another model or other edges, or with a corrected mask).

What it shows is read through status/view.py, as the page's batches are; what
it asks is written by review/requests.py as a marker the daemon reads, exactly
as `bgremover review` writes it, so the page never changes the queue itself.
Every request passes the guard first (app.py): the token, and for the three
that change something, the page's own origin and its CSRF token.
"""

from __future__ import annotations

import io
import sqlite3
import time
from dataclasses import dataclass
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from bgremover.models.manifest import ModelError, load_model_spec, models_dir, read_manifest
from bgremover.options import declared
from bgremover.queue.states import Status
from bgremover.queue.store import Item
from bgremover.review import record, requests
from bgremover.settings import Settings
from bgremover.status import view as statusview
from bgremover.web import page
from bgremover.web.actions import content_length, done, refuse, small_form
from bgremover.web.context import Web
from bgremover.web.forms import FormRefused, read_form
from bgremover.web.routes import NO_STORE, not_found, open_store

EDGES = next(option.choices for option in declared() if option.name == "edges")
REVIEW_STATES = {
    "flagged": "Flagged",
    "clean": "Run again: nothing flagged",
    "approved": "Approved",
    "retried": "Rejected: run again",
    "corrected": "Corrected with a mask",
}


@dataclass(frozen=True)
class ReviewCard:
    card: page.ItemCard
    state: str | None  # its review state (review/record.py), None: nothing was ever flagged
    reasons: list[str]  # the sentences of the signals its last result raised
    decisions: list[dict]
    options: dict  # what a review changed for its runs

    @property
    def waiting(self) -> bool:
        return self.state == "flagged" and self.card.status == Status.DONE.value


def review_card(item: Item, card: page.ItemCard) -> ReviewCard:
    found = record.loaded(item.review) or {}
    reasons = [reason["reason"] for reason in found.get("reasons", [])]
    return ReviewCard(card, found.get("state"), reasons, found.get("decisions", []), item.own_options)


def shown_first(review: ReviewCard) -> tuple:
    """Those waiting for a look first, then any other with a review record, then the rest; by name within each."""
    rank = 0 if review.waiting else 1 if review.state else 2
    return (rank, page.natural(review.card.name))


def installed_models(settings: Settings) -> list[str]:
    """The models a photo can be run again with: each manifest entry whose file is here (the models folder first)."""
    names = set()
    for folder in (settings.models_folder, models_dir()):
        for name in read_manifest(folder, missing_ok=True):
            try:
                load_model_spec(name, folder, verify=False)
            except ModelError:
                continue
            names.add(name)
    return sorted(names)


def look(web: Web, session: str) -> tuple[statusview.SessionView | None, str | None]:
    try:
        view = statusview.read(web.settings, time.time(), only=session)
    except statusview.UnknownSession:
        return None, None
    except sqlite3.Error as exc:
        return None, f"cannot read the queue ({exc}); trying again"
    return (view.sessions[0] if view and view.sessions else None), None


def fragment(web: Web, session: str) -> str | None:
    found, problem = look(web, session)
    if found is None and problem is None:
        return None
    cards = []
    if found is not None:
        made = {i.id: page.item_card(i, found.session, web.spool, web.settings.outbox) for i in found.items}
        cards = sorted((review_card(i, made[i.id]) for i in found.items), key=shown_first)
    return web.env.get_template("review_items.html").render(
        session=session,
        view=found,
        reviews=cards,
        waiting=sum(1 for c in cards if c.waiting),
        models=installed_models(web.settings),
        model=web.settings.model,
        edges=EDGES,
        review_states=REVIEW_STATES,
        problem=problem,
        **web.common(),
    )


async def view(web: Web, request: Request) -> Response:
    session = request.path_params["session"]
    live = fragment(web, session)
    if live is None:
        return not_found()
    html = web.env.get_template("review.html").render(
        session=session, live=live, live_url=f"/review/{quote(session, safe='')}/items", **web.common()
    )
    return HTMLResponse(html, headers=NO_STORE)


async def items(web: Web, request: Request) -> Response:
    live = fragment(web, request.path_params["session"])
    return not_found() if live is None else HTMLResponse(live, headers=NO_STORE)


# -- the decisions -----------------------------------------------------------------------


def decide(web: Web, request: Request, fields: dict, write) -> Response:
    """Check the item against the queue and write the decision's marker; one sentence either way."""
    session, name = fields.get("session", ""), fields.get("name", "")
    store = open_store(web)
    if store is None:
        return web.message(request, 404, "Cannot review", "there are no batches yet")
    try:
        write(store, session, name)
    except requests.ReviewRefused as refused:
        return web.message(request, 409, "Cannot review", str(refused))
    finally:
        store.close()
    return None


async def approve(web: Web, request: Request) -> Response:
    fields = await small_form(web, request)
    if isinstance(fields, Response):
        return fields
    refused = decide(web, request, fields, lambda store, s, n: requests.approve(web.settings, store, s, n))
    return refused or done(web, request, f"Approved {fields.get('name')}.")


async def retry(web: Web, request: Request) -> Response:
    """Rejected: run again with another model and/or other edges than the session's."""
    fields = await small_form(web, request)
    if isinstance(fields, Response):
        return fields
    options = {key: fields[key] for key in ("model", "edges") if fields.get(key)}
    refused = decide(web, request, fields, lambda store, s, n: requests.retry(web.settings, store, s, n, options))
    asked = ", ".join(f"{key} {value}" for key, value in options.items())
    return refused or done(web, request, f"Running {fields.get('name')} again with {asked}.")


async def mask(web: Web, request: Request) -> Response:
    """Rejected, and fixed by hand: the uploaded mask becomes the item's alpha."""
    received: list[Collected] = []

    def open_file(field: str, sent: str, fields: dict[str, str]):
        if received:
            raise FormRefused(400, "a correction takes one mask file")
        received.append(Collected(requests.MAX_MASK_BYTES))
        return received[0]

    try:
        fields = await read_form(
            request.headers.get("content-type", ""), request.stream(), open_file, web.limits, content_length(request)
        )
    except FormRefused as refused_form:
        return await refuse(web, request, refused_form)
    data = received[0].data.getvalue() if received else b""
    refused = decide(web, request, fields, lambda store, s, n: requests.correct(web.settings, store, s, n, data))
    return refused or done(web, request, f"Running {fields.get('name')} again with your mask.")


class Collected:
    """A mask file's bytes, kept in memory up to `limit` (a mask is small beside the photo)."""

    def __init__(self, limit: int) -> None:
        self.data = io.BytesIO()
        self.limit = limit

    def write(self, chunk: bytes) -> int:
        if self.data.tell() + len(chunk) > self.limit:
            raise FormRefused(413, f"the mask file is over {self.limit >> 20} MiB")
        return self.data.write(chunk)

    def close(self) -> None:
        pass
