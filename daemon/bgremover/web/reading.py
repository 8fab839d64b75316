"""One look at the queue, shared by every request that arrives while it is taken or soon after.

Two hundred browsers polling every second would otherwise cost two hundred
reads of the database and renderings a second. A request that finds a look
under way waits for it; one that finds a finished look younger than
`REUSE_S`, taken when the database was as it is now, gets that look. So an
answer's counts are never behind the queue's last commit, and its moment (its
`at`, from which rate and ETA are figured) is at most `REUSE_S` old.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from jinja2 import Environment, FileSystemLoader, select_autoescape

from bgremover.intake.watcher import is_image_name, is_temporary_name
from bgremover.queue.spool import Spool
from bgremover.queue.store import iso
from bgremover.settings import Settings
from bgremover.status import view as statusview
from bgremover.web import page

TEMPLATES = Path(__file__).parent / "templates"
STATUS_WORDS = {
    "queued": "Waiting",
    "processing": "Working on it",
    "done": "Done",
    "failed": "Failed",
    "cancelled": "Cancelled",
}
ITEMS_SHOWN = 24  # photos an opened batch shows until "Show all" is pressed; failed ones first


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["q"] = lambda text: quote(text, safe="")
    env.filters["iso"] = lambda epoch: datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    env.globals.update(status_words=STATUS_WORDS)
    return env


REUSE_S = 0.25


class SharedLooks:
    """At most one computation per kind under way; latecomers wait for it, and soon-comers reuse it."""

    def __init__(self, stamp: Callable[[], object]) -> None:
        self.stamp = stamp  # what changes whenever the database does
        self.under_way: dict[str, asyncio.Future] = {}
        self.kept: dict[str, tuple[float, object, Any]] = {}  # kind -> (taken at, stamp then, result)

    async def get(self, kind: str, compute: Callable[[], Any]) -> Any:
        stamp = self.stamp()
        kept = self.kept.get(kind)
        if kept is not None and time.monotonic() - kept[0] < REUSE_S and kept[1] == stamp:
            return kept[2]
        future = self.under_way.get(kind)
        if future is None:
            started = time.monotonic()
            future = asyncio.ensure_future(anyio.to_thread.run_sync(compute))
            self.under_way[kind] = future
            future.add_done_callback(lambda done: self.finished(kind, done, started, stamp))
        return await asyncio.shield(future)

    def finished(self, kind: str, done: asyncio.Future, started: float, stamp: object) -> None:
        self.under_way.pop(kind, None)
        # Looks past their reuse go, so that asking for every page in turn does not keep every page.
        now = time.monotonic()
        self.kept = {k: kept for k, kept in self.kept.items() if now - kept[0] < REUSE_S}
        if not done.cancelled() and done.exception() is None:
            self.kept[kind] = (started, stamp, done.result())


def database_stamp(database: Path) -> tuple:
    """The database file's and its write-ahead log's size and modification time: a commit changes one of them."""
    stamp = []
    for path in (database, database.with_name(database.name + "-wal")):
        try:
            info = os.stat(path)
            stamp.append((info.st_ino, info.st_size, info.st_mtime_ns))
        except OSError:
            stamp.append(None)
    return tuple(stamp)


class Reader:
    def __init__(self, settings: Settings, env: Environment, context: Callable[[], dict]) -> None:
        self.settings = settings
        self.spool = Spool(settings.root)
        self.env = env
        self.context = context  # what every rendering needs: the CSRF token, the limits
        self.shared = SharedLooks(lambda: database_stamp(settings.database))

    def look(self, page_number: int, opened: frozenset[str] | None = None) -> tuple[statusview.View | None, str | None]:
        """The view now, with every item of the opened sessions, or the sentence saying why the database cannot be read.

        `page_number` picks the settled sessions shown beside those under way (0: the newest).
        """
        try:
            return statusview.read(self.settings, time.time(), page=page_number, items_of=opened or ()), None
        except sqlite3.Error as exc:
            return None, f"cannot read the queue ({exc}); trying again"

    def look_now(self, page_number: int, opened: frozenset[str] | None, full: frozenset[str]) -> Look:
        """The live part's pieces: each batch's HTML with its tag, and what the rest of the fragment shows.

        `opened`: the batches whose photos are shown (None: a first look, which opens the newest);
        `full`: those shown whole rather than their first ITEMS_SHOWN photos.
        """
        view, problem = self.look(page_number, opened)
        if opened is None and view is not None and view.sessions:
            newest = max(view.sessions, key=lambda s: (s.session.created_at, s.session.name))
            opened = frozenset({newest.session.name})
            view, problem = self.look(page_number, opened)
        cards = page.session_cards(view, self.spool, self.settings.outbox)
        context = self.context()
        article = self.env.get_template("article.html")
        articles = []
        for card in cards:
            is_open = card.name in (opened or ())
            shown = len(card.items) if card.name in full else ITEMS_SHOWN
            html = article.render(s=card, opened=is_open, shown=shown, **context)
            tag = hashlib.blake2b(html.encode(), digest_size=8).hexdigest()
            articles.append((card.name, tag, html.replace("<article ", f'<article data-tag="{tag}" ', 1)))
        return Look(
            articles,
            {
                "daemon": page.daemon(view),
                "older": view.older if view else 0,
                "page": page_number,
                "problem": problem,
                "waiting": files_waiting(self.settings.inbox),
                "at": view.at if view else time.time(),
            },
        )

    def fragment_now(
        self, page_number: int = 0, opened: frozenset[str] | None = None, full: frozenset[str] = frozenset()
    ) -> str:
        return self.render(self.look_now(page_number, opened, full))

    def render(self, look: Look, have: frozenset[str] = frozenset()) -> str:
        """The fragment, with each batch the browser has as it is now (its tag in `have`) sent as a bare placeholder."""
        articles = [
            f'<article id="session-{quote(name, safe="")}" data-tag="{tag}" data-same></article>'
            if tag in have
            else html
            for name, tag, html in look.articles
        ]
        return self.env.get_template("sessions.html").render(articles=articles, **look.rest, **self.context())

    def status_now(self, page_number: int = 0) -> str:
        now = time.time()
        try:
            view = statusview.read(self.settings, now, page=page_number, every_item=True)
        except sqlite3.Error as exc:
            problem = f"cannot read the queue ({exc}); trying again"
            return json.dumps({"root": str(self.settings.root), "at": iso(now), "error": problem})
        return json.dumps(statusview.render_json(view, self.settings.root, now, every_item=True))

    async def fragment(
        self,
        page_number: int = 0,
        opened: frozenset[str] | None = None,
        full: frozenset[str] = frozenset(),
        have: frozenset[str] = frozenset(),
    ) -> str:
        key = f"fragment {page_number} {sorted(opened) if opened is not None else None} {sorted(full)}"
        look = await self.shared.get(key, lambda: self.look_now(page_number, opened, full))
        return self.render(look, have)

    async def status(self, page_number: int = 0) -> str:
        return await self.shared.get(f"status {page_number}", lambda: self.status_now(page_number))


@dataclass(frozen=True)
class Look:
    articles: list[tuple[str, str, str]]  # (batch name, tag, HTML), newest first
    rest: dict  # what the fragment shows around them


def files_waiting(inbox: Path, most: int = 10000) -> int:
    """Images in the inbox the daemon has not taken yet (temporary names and dot-folders aside)."""
    count, folders = 0, [inbox]
    while folders and count < most:
        try:
            entries = list(folders.pop().iterdir())
        except OSError:
            continue
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and not entry.is_symlink():
                folders.append(entry)
            elif is_image_name(entry.name) and not is_temporary_name(entry.name):
                count += 1
    return count
