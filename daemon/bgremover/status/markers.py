"""What a client asks of the daemon: the items a retry names, and the marker files that ask for a retry, a cancel
or an upload's sessions closed.

The clients (cli/, web/) never change the queue themselves: they read it, then
touch a marker the daemon watches, so a request works the same whether the
daemon runs now or starts later. Each client says what was not found in its
own words (a session or a batch, an item or a photo); which items a retry
names is decided here, once.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import NamedTuple

from bgremover.queue.states import RETRYABLE
from bgremover.queue.store import Item, Session, Store
from bgremover.settings import Settings


class RetryTargets(NamedTuple):
    session: Session | None  # None: no session has that name
    items: list[Item] | None  # the items to retry; None: the session has no item of the name given


def retry_targets(store: Store, session_name: str, name: str | None) -> RetryTargets:
    """One item (a name given), or every failed and cancelled item of the session; only those that can be retried."""
    session = store.session(session_name)
    if session is None:
        return RetryTargets(None, None)
    if name is not None:
        item = store.item_named(session_name, name)
        if item is None:
            return RetryTargets(session, None)
        items = [item]
    else:
        items = store.items(session_name, *RETRYABLE)
    return RetryTargets(session, [item for item in items if item.status in RETRYABLE])


def retry_marker(settings: Settings, item: Item) -> Path:
    """retry/SESSION/NAME: touched, the daemon queues the item again."""
    return settings.retry_dir / item.session / item.name


def cancel_marker(settings: Settings, session: str) -> Path:
    """cancel/SESSION: touched, the daemon cancels what of the session is not finished."""
    return settings.cancel_dir / session


def touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def mark_uploaded(settings: Settings, names: list[str]) -> Path:
    """uploaded/ID listing the inbox paths of an upload now whole: once all are taken, their sessions close.

    Written under a dot-name and renamed, so the daemon never reads half a list.
    """
    folder = settings.uploaded_dir
    folder.mkdir(parents=True, exist_ok=True)
    name = secrets.token_hex(8)
    temp, marker = folder / f".{name}", folder / name
    temp.write_text("".join(f"{n}\n" for n in names), encoding="utf-8", errors="surrogateescape")
    os.rename(temp, marker)
    return marker
