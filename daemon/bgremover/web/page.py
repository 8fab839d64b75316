"""What the page shows, taken from the view `bgremover status` reads: the same figures, by the same code.

status.view.read gives the sessions, their counts, rate and ETA; this module
only turns them into what a template needs (text for people, raw numbers in
data- attributes for scripts and tests), newest session first, and finds the
files each item's pictures are made from.
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path

from bgremover.formats import FORMAT_EXTENSIONS
from bgremover.queue.spool import Spool
from bgremover.queue.states import RETRYABLE, SessionState, Status
from bgremover.queue.store import Item, Session
from bgremover.review import record
from bgremover.status import progress
from bgremover.status.view import SessionView, View, refused_recipes
from bgremover.web.thumbnails import Source


@dataclass(frozen=True)
class ItemCard:
    id: int
    name: str
    status: str
    error: str | None
    note: str | None
    member: str | None  # its name in the ZIP once done
    attempts: int
    retryable: bool
    ext: str
    before: bool  # whether there is a picture to show
    after: bool
    refused: tuple[str, ...] = ()  # "RECIPE: why", for each recipe file of a done item a channel would refuse
    flagged: tuple[str, ...] = ()  # why a quality signal flagged its cutout, while it waits for a review


@dataclass(frozen=True)
class SessionCard:
    name: str
    state: str
    state_word: str  # what the page calls its state: a complete session with cancelled items was cancelled
    total: int
    finished: int
    counts: dict[str, int]
    percent: int
    rate_per_s: float | None
    eta_s: float | None
    rate: str
    eta: str
    zip: str | None  # the ZIP to offer: only a complete session's, never one a retry is about to replace
    rebuilding: bool  # a retry reopened the session: its last ZIP lacks the retried photos
    error: str | None
    cancellable: bool
    retryable: int
    items: list[ItemCard]  # those read (an opened batch's), failed first, then by name
    flagged: int  # done items a quality signal flagged that wait for a person's review
    created_at: float
    queue_rate: str  # the rate the ETA counts on: the whole queue's, since batches share the job slots
    non_compliant: int = 0  # recipe files of its done items a channel would refuse

    @property
    def remaining(self) -> int:
        return self.total - self.finished


@dataclass(frozen=True)
class Daemon:
    running: bool | None  # None: cannot be known here
    pid: int | None
    queued: int
    processing: int
    rate: str
    eta: str


def daemon(view: View | None) -> Daemon:
    if view is None:
        return Daemon(False, None, 0, 0, progress.UNKNOWN, progress.UNKNOWN)
    running = (view.daemon_pid is not None) if view.daemon_known else None
    return Daemon(
        running,
        view.daemon_pid,
        view.queued,
        view.processing,
        progress.rate_text(view.rate_per_s),
        progress.duration_text(view.eta_s),
    )


STATE_WORDS = {"open": "Receiving files", "processing": "In progress", "complete": "Complete"}


def session_cards(view: View | None, spool: Spool, outbox: Path) -> list[SessionCard]:
    """The cards of the sessions the view shows (those under way and one page of the settled), newest first."""
    if view is None:
        return []
    newest = sorted(view.sessions, key=lambda s: (s.session.created_at, s.session.name), reverse=True)
    queue_rate = progress.rate_text(view.rate_per_s)
    return [session_card(s, spool, outbox, queue_rate) for s in newest]


def state_word(view: SessionView) -> str:
    if view.session.state is SessionState.COMPLETE and view.counts.get("cancelled"):
        return "Cancelled"
    return STATE_WORDS[view.session.state.value]


def session_card(view: SessionView, spool: Spool, outbox: Path, queue_rate: str = progress.UNKNOWN) -> SessionCard:
    session, total = view.session, view.total
    complete = session.state is SessionState.COMPLETE
    zip_name = session.zip if complete and session.zip and regular_file(outbox / session.zip) else None
    return SessionCard(
        name=session.name,
        state=session.state.value,
        state_word=state_word(view),
        total=total,
        finished=view.finished,
        counts=view.counts,
        percent=view.finished * 100 // total if total else 0,
        rate_per_s=view.rate_per_s,
        eta_s=view.eta_s,
        rate=progress.rate_text(view.rate_per_s),
        eta=progress.duration_text(view.eta_s),
        zip=zip_name,
        rebuilding=not complete and bool(session.zip),
        error=session.error,
        cancellable=session.state is not SessionState.COMPLETE and view.remaining > 0,
        retryable=sum(view.counts[status.value] for status in RETRYABLE),
        # Failed first, then by name, as a folder shows them; the daemon's own order (oldest first)
        # is in `bgremover status`.
        items=[item_card(item, session, spool, outbox) for item in sorted(view.items, key=shown_first)],
        created_at=session.created_at,
        queue_rate=queue_rate,
        flagged=len(view.flagged),
        non_compliant=view.non_compliant,
    )


def item_card(item: Item, session: Session, spool: Spool, outbox: Path) -> ItemCard:
    before, after = sources(item, session, spool, outbox)
    return ItemCard(
        item.id,
        item.name,
        item.status.value,
        item.error,
        item.note,
        item.member if item.status is Status.DONE else None,
        item.attempts,
        item.status in RETRYABLE,
        item.ext,
        any(regular_file(s.path) for s in before),
        any(regular_file(s.path) for s in after),
        flagged=flagged_reasons(item),
        refused=tuple(f"{one['recipe']}: {one['reason']}" for one in refused_recipes(item)),
    )


def flagged_reasons(item: Item) -> tuple[str, ...]:
    if item.status is not Status.DONE or not record.pending(item.review):
        return ()
    return tuple(reason["reason"] for reason in record.loaded(item.review)["reasons"])


def sources(item: Item, session: Session, spool: Spool, outbox: Path) -> tuple[list[Source], list[Source]]:
    """Where the item's before and after pictures can be made from, in the order its files move.

    A session completing moves the original from the store to the archive and
    the cutout from the results into the ZIP, and it may do so between the
    moment a file is chosen and the moment it is read; so each picture has
    every place its file may be, and the reader tries them in turn.
    """
    before = [Source(spool.stored(item)), Source(spool.archived(item))]
    if item.status is not Status.DONE:
        return before, []
    after = [Source(spool.result(item, FORMAT_EXTENSIONS.get(session.format, ".png")))]
    if session.zip:
        after.append(Source(outbox / session.zip, item.member))
    return before, after


def shown_first(item: Item) -> tuple:
    """What needs a look comes first: the failed photos and those waiting for a review, then the others by name."""
    return (item.status is not Status.FAILED and not record.pending(item.review), natural(item.name))


def natural(name: str) -> list:
    """IMG_2 before IMG_10, as a file manager sorts."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def regular_file(path: Path) -> bool:
    """A file that is there and is no link: a link could point anywhere on the machine."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False
