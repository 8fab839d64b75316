"""One look at the queue, shared by every request that arrives while it is being taken.

Two hundred browsers polling at once cost about one read of the database and
one rendering, not two hundred: a request that finds a look under way waits
for it instead of starting its own. Each answer is still a look taken after
the request arrived, or while it waited, so it is never older than the request.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio.to_thread
from jinja2 import Environment, FileSystemLoader, select_autoescape

from bgremover.cli import statusview
from bgremover.intake.watcher import is_image_name, is_temporary_name
from bgremover.queue.spool import Spool
from bgremover.queue.store import iso
from bgremover.settings import Settings
from bgremover.web import page

TEMPLATES = Path(__file__).parent / "templates"
STATUS_WORDS = {"queued": "Waiting", "processing": "Working on it", "done": "Done", "failed": "Failed",
                "cancelled": "Cancelled"}
STATE_WORDS = {"open": "Receiving files", "processing": "In progress", "complete": "Complete"}


def templates() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(default=True),
                      trim_blocks=True, lstrip_blocks=True)
    env.filters["q"] = lambda text: quote(text, safe="")
    env.globals.update(status_words=STATUS_WORDS, state_words=STATE_WORDS)
    return env


class SharedLooks:
    """At most one computation per kind under way; latecomers wait for it and get its result."""

    def __init__(self) -> None:
        self.under_way: dict[str, asyncio.Future] = {}

    async def get(self, kind: str, compute: Callable[[], Any]) -> Any:
        future = self.under_way.get(kind)
        if future is None:
            future = asyncio.ensure_future(anyio.to_thread.run_sync(compute))
            self.under_way[kind] = future
            future.add_done_callback(lambda _: self.under_way.pop(kind, None))
        return await asyncio.shield(future)


class Reader:
    def __init__(self, settings: Settings, env: Environment, context: Callable[[], dict]) -> None:
        self.settings = settings
        self.spool = Spool(settings.root)
        self.env = env
        self.context = context  # what every rendering needs: the CSRF token, the limits
        self.shared = SharedLooks()

    def look(self) -> tuple[statusview.View | None, str | None]:
        """The view now, or the sentence saying why the database cannot be read."""
        try:
            return statusview.read(self.settings, time.time()), None
        except sqlite3.Error as exc:
            return None, f"cannot read the queue ({exc}); trying again"

    def fragment_now(self) -> str:
        view, problem = self.look()
        sessions, hidden = page.session_cards(view, self.spool, self.settings.outbox)
        return self.env.get_template("sessions.html").render(
            daemon=page.daemon(view), sessions=sessions, hidden=hidden, problem=problem,
            waiting=files_waiting(self.settings.inbox), at=view.at if view else time.time(), **self.context())

    def status_now(self) -> str:
        now = time.time()
        view, problem = self.look()
        if problem:
            return json.dumps({"root": str(self.settings.root), "at": iso(now), "error": problem})
        return json.dumps(statusview.render_json(view, self.settings.root, now, every_item=True))

    async def fragment(self) -> str:
        return await self.shared.get("fragment", self.fragment_now)

    async def status(self) -> str:
        return await self.shared.get("status", self.status_now)


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
