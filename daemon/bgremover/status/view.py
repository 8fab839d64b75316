"""What `bgremover status` and the web page show: the database and the lock read into a view, as text or JSON.

Reading never gets in the daemon's way: the database is opened read-only and
only for the moment of one read (in WAL mode a reader never blocks the writer),
and whether a daemon runs is read from the kernel's lock table, never by trying
the lock, which would make a daemon starting at that instant refuse to run.

A read costs the work under way, not the history behind it: it shows the
sessions not yet settled (open, processing, complete but not yet settled) and
one page of the settled ones, newest first; SQLite counts their items, and the
rate comes from the items finished in the last minutes. Items themselves are
read only for the sessions shown, and only the failed ones unless every item
is asked for. `status SESSION` shows that one session whole, whatever its age.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from bgremover.intake.tickets import makes_masks
from bgremover.outbox.status import item_documents, recipe_document, retry_marker, status_counts
from bgremover.queue.states import RETRYABLE, Status
from bgremover.queue.store import Item, Session, Store, iso
from bgremover.review import record
from bgremover.service.facts import read_facts
from bgremover.service.rootlock import LOCK_NAME
from bgremover.settings import Settings
from bgremover.status import progress
from bgremover.status.progress import RATE_WINDOW_SECONDS
from bgremover.status.workers import lines as worker_lines
from bgremover.status.workers import seen as seen_workers

RATE_STATUSES = (Status.DONE, Status.FAILED)  # work the daemon did; a cancel finishes many items at once
PENDING = (Status.QUEUED, Status.PROCESSING)
PAGE_SIZE = 20  # settled sessions a read shows, newest first; `--page` and `?page=` go further back
STATE_WIDTH = len("processing")
# On a terminal: cursor home, clear the screen, clear to the end of a line, clear below the cursor.
HOME, CLEAR_SCREEN, CLEAR_LINE, CLEAR_BELOW = "\x1b[H", "\x1b[2J", "\x1b[K", "\x1b[J"
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0 (ESC among them), DEL and C1


class UnknownSession(LookupError):
    """`status SESSION` named a session the database does not have."""


@dataclass(frozen=True)
class Figures:
    """What SQLite counted of one session, so that its items need not all be read."""

    counts: dict[str, int]  # its items in each status
    finished_at: list[float]  # when its recently finished items finished (the rate's window)
    pending: list[int]  # the ids of its queued and processing items

    @classmethod
    def of(cls, items: list[Item]) -> Figures:
        """The same figures from every item of the session, read."""
        return cls(status_counts(items), finish_times(items), [item.id for item in items if item.status in PENDING])


@dataclass(frozen=True)
class SessionView:
    session: Session
    items: list[Item]  # those read: every item of the session when asked for, else its failed and flagged ones
    rate_per_s: float | None
    eta_s: float | None
    with_masks: bool = False  # output "both": each done item has a mask member beside its cutout
    counts: dict[str, int] = field(default_factory=dict)  # every status named, zero included
    non_compliant: int = 0  # its done items' recipe files a channel would refuse (see Store.non_compliant_of)
    review_folder: bool = False  # flagged items' outputs are under _review/ in its ZIP

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def finished(self) -> int:
        counts = self.counts
        return counts["done"] + counts["failed"] + counts["cancelled"]

    @property
    def remaining(self) -> int:
        return self.total - self.finished

    @property
    def failed(self) -> list[Item]:
        return [item for item in self.items if item.status is Status.FAILED]

    @property
    def flagged(self) -> list[Item]:
        """Its done items a quality signal flagged, that wait for a person's review."""
        return [item for item in self.items if item.status is Status.DONE and record.pending(item.review)]


@dataclass(frozen=True)
class View:
    root: Path
    at: float
    daemon_pid: int | None  # None: no daemon holds the root's lock
    daemon_known: bool  # False where the kernel's lock table cannot be read (not Linux)
    queued: int  # these four are the whole queue's, whichever sessions are shown
    processing: int
    rate_per_s: float | None
    eta_s: float | None  # until the whole queue is finished
    sessions: list[SessionView]
    job_slots: int | None = None  # the running daemon's, from state/daemon.json
    page: int = 0  # which page of the settled sessions is shown: 0 the newest
    older: int = 0  # settled sessions older than the page shown, left for the pages after it
    spare_slots: int = 0  # of job_slots, tasks sent ahead to wait in the broker for a free worker slot


def frame(settings: Settings, only: str | None, as_json: bool, every: float | None, now: float, page: int = 0) -> str:
    """One look at the database as text or one JSON document; `every` (seconds) when following.

    Following, a read that fails (a disk error, a lock held past the busy timeout)
    is shown in the frame and the next frame tries again; once, it raises.
    """
    try:
        view = read(settings, now, only, page)
    except sqlite3.Error as exc:
        if every is None:
            raise
        problem = f"cannot read {settings.database}: {exc}; trying again"
        if as_json:
            return json.dumps({"root": str(settings.root), "at": iso(now), "error": problem}) + "\n"
        return printable(f"{iso(now)}  {problem}") + "\n"
    every_item = only is not None
    workers = seen_workers(settings, view.daemon_pid if view else None)  # past one machine only
    if as_json:
        document = render_json(view, settings.root, now, every_item)
        if workers is not None:
            document["workers"], document["workers_error"] = workers
        return json.dumps(document, indent=None if every else 2) + "\n"
    lines = empty_text(settings.root) if view is None else render_text(view, settings, every_item)
    if workers is not None:
        lines[1:1] = worker_lines(*workers)
    if every is not None:
        lines.insert(0, f"{iso(now)}  every {every:g} s; Ctrl-C stops")
    return "\n".join(printable(line) for line in lines) + "\n"


def printable(text: str) -> str:
    """Text with every control character shown as an escape ("\\x1b"), never sent to the terminal.

    File names and error texts come from users: an ANSI sequence in one would
    recolour, move or retitle the reader's terminal (C1's CSI \\x9b too). The
    JSON form keeps them exact; only the text form is escaped.
    """
    return CONTROL.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


# -- reading -----------------------------------------------------------------------


@dataclass(frozen=True)
class Records:
    """What one read took from the database, all at one moment of it."""

    sessions: list[Session]  # those shown, oldest first
    counts: dict[str, dict[str, int]]  # each shown session's items in each status
    items: list[Item]  # of the sessions shown: every one, or only the failed
    pending: list[tuple[int, str, str]]  # (id, session, status) of the whole queue's queued and processing items
    finished: list[tuple[str, float]]  # (session, when) of the items finished within the rate's window
    older: int  # settled sessions older than the page shown
    non_compliant: dict[str, int] = field(default_factory=dict)  # by session, those with any


def read(
    settings: Settings,
    now: float,
    only: str | None = None,
    page: int = 0,
    every_item: bool = False,
    items_of: Collection[str] | None = None,
) -> View | None:
    """The view at `now`; None while there is no database yet (no daemon ever ran, or one is creating it).

    `page` picks which settled sessions are shown beside the unsettled ones;
    `every_item` reads every item of the sessions shown, not only the failed;
    `items_of` every item of those sessions only (the page's opened batches), none of the others.
    """
    wanted: bool | frozenset[str] = every_item or only is not None
    if not wanted and items_of is not None:
        wanted = frozenset(items_of)
    records = read_records(settings.database, now, only, page, wanted)
    if records is None:
        return None
    if only is not None and not records.sessions:
        raise UnknownSession(f"no session named '{only}'")
    pid, known = daemon_pid(settings.state_dir / LOCK_NAME)
    running = pid is not None or not known  # where nobody can tell, assume the work goes on
    rate = progress.rate_per_second([at for _, at in records.finished], now)
    pending = [item_id for item_id, _, _ in records.pending]
    processing = sum(1 for _, _, status in records.pending if status == Status.PROCESSING.value)
    views = [
        dataclasses.replace(
            session_view(
                s,
                [item for item in records.items if item.session == s.name],
                now,
                pending,
                rate if running else None,
                makes_masks(settings, s.ticket, s.output),
                figures(records, s.name),
                records.non_compliant.get(s.name, 0),
            ),
            review_folder=settings.review_folder,
        )
        for s in records.sessions
    ]
    eta = progress.eta_seconds(len(pending), rate if running else None)
    facts = read_facts(settings.state_dir, pid)
    slots, spare = facts.get("job_slots"), facts.get("spare_slots")
    return View(
        settings.root,
        now,
        pid,
        known,
        len(pending) - processing,
        processing,
        rate,
        eta,
        views,
        slots if isinstance(slots, int) else None,
        page,
        records.older,
        spare if isinstance(spare, int) else 0,
    )


def figures(records: Records, name: str) -> Figures:
    return Figures(
        records.counts[name],
        [at for session, at in records.finished if session == name],
        [item_id for item_id, session, _ in records.pending if session == name],
    )


def read_records(
    database: Path, now: float, only: str | None, page: int, every_item: bool | frozenset[str]
) -> Records | None:
    # Checked first because a read-only open of a missing file fails anyway,
    # and a read must never create the database the daemon is about to.
    if not database.exists():
        return None
    store = Store(database, readonly=True)
    try:
        with store.snapshot():
            return take_records(store, now, only, page, every_item)
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # the daemon created the file and has not written the schema yet
            return None
        raise
    finally:
        store.close()


def take_records(store: Store, now: float, only: str | None, page: int, every_item: bool | frozenset[str]) -> Records:
    """`every_item`: True, every item of the sessions shown; a set of names, those sessions' only; else the failed."""
    if only is not None:
        sessions, older = [s for s in [store.session(only)] if s is not None], 0
    else:
        settled = store.settled_sessions(PAGE_SIZE, page * PAGE_SIZE)
        sessions = sorted(store.unsettled_sessions() + settled, key=lambda s: (s.created_at, s.name))
        older = max(0, store.settled_count() - (page + 1) * PAGE_SIZE)
    names = [s.name for s in sessions]
    if isinstance(every_item, frozenset):
        # The opened sessions' every item; of the others, those that wait for a review, to be counted.
        others = [name for name in names if name not in every_item]
        opened = [name for name in names if name in every_item]
        items = sorted(store.items_of(opened) + store.flagged_items(others), key=lambda item: item.id)
    elif every_item:
        items = store.items_of(names)
    else:
        items = sorted(store.items_of(names, Status.FAILED) + store.flagged_items(names), key=lambda item: item.id)
    return Records(
        sessions,
        store.counts_of(names),
        items,
        [
            tuple(row) for row in store.pending()
        ],  # every pending item, whichever sessions are shown: an ETA counts those ahead
        [tuple(row) for row in store.finished_since(now - RATE_WINDOW_SECONDS)],
        older,
        store.non_compliant_of(names),
    )


def finish_times(items: list[Item]) -> list[float]:
    return [item.updated_at for item in items if item.status in RATE_STATUSES]


def session_view(
    session: Session,
    items: list[Item],
    now: float,
    pending: list[int],
    daemon_rate: float | None,
    with_masks: bool = False,
    counted: Figures | None = None,
    non_compliant: int = 0,
) -> SessionView:
    """`daemon_rate` is None when the daemon is stopped: it finishes nothing, so no ETA can be kept.

    `counted`: the session's figures as SQLite counted them; without, `items` is every item and they come from it.
    """
    counted = counted or Figures.of(items)
    # One image at a time, lowest id first: this session is finished once every
    # pending item up to its own last one is, whichever session those belong to.
    to_finish = progress.pending_up_to(pending, max(counted.pending)) if counted.pending else 0
    return SessionView(
        session,
        items,
        progress.rate_per_second(counted.finished_at, now),
        progress.eta_seconds(to_finish, daemon_rate),
        with_masks,
        counted.counts,
        non_compliant,
    )


def daemon_pid(lock: Path) -> tuple[int | None, bool]:
    """(pid of the daemon holding `lock` or None, whether that could be known at all).

    /proc/locks lists every flock with its holder's pid and the locked file's
    inode; the lock dies with its process, so this cannot be stale.
    """
    try:
        inode = lock.stat().st_ino
    except FileNotFoundError:
        return None, True
    try:
        table = Path("/proc/locks").read_text()
    except OSError:
        return None, False
    for line in table.splitlines():
        fields = line.split()
        # "1: FLOCK  ADVISORY  WRITE 4242 fe:00:2148047 0 EOF"; blocked waiters are marked "->" and skipped.
        if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5].rsplit(":", 1)[-1] == str(inode):
            return int(fields[4]), True
    return None, True


# -- text ------------------------------------------------------------------------


def render_text(view: View, settings: Settings, every_item: bool = False) -> list[str]:
    """The daemon's line, then each session's line and below it its failed items (with `every_item`, all of them)."""
    lines = [daemon_line(view)]
    width = max(len(s.session.name) for s in view.sessions) if view.sessions else 0
    for session in view.sessions:
        lines.append(session_line(session, width))
        error = session.session.error  # a session refused as a whole (an invalid job ticket)
        if error:
            lines.append(f"  refused: {error}")
        shown = session.items if every_item else session.failed + session.flagged
        lines += ["  " + item_line(settings, item) for item in shown]
    if view.older:
        lines.append(older_line(view))
    return lines


def older_line(view: View) -> str:
    return (
        f"{view.older} older complete session{'' if view.older == 1 else 's'} not shown;"
        f" `bgremover status --page {view.page + 1}` shows the next {min(view.older, PAGE_SIZE)}"
    )


def daemon_line(view: View) -> str:
    """`daemon: running (pid 4242, 3 job slots); 62 queued, 2 processing; rate 1.2/s, ETA 52s`: the whole queue."""
    if view.daemon_pid is not None:
        slots = f", {view.job_slots} job slot{'' if view.job_slots == 1 else 's'}" if view.job_slots else ""
        if view.job_slots and view.spare_slots:
            slots += (
                f": {view.job_slots - view.spare_slots} on the workers, {view.spare_slots} task"
                f"{'' if view.spare_slots == 1 else 's'} waiting in the broker for the next free one"
            )
        state = f"running (pid {view.daemon_pid}{slots})"
    else:
        state = "not running" if view.daemon_known else "unknown"
    line = f"daemon: {state}; {view.queued} queued, {view.processing} processing"
    if view.queued or view.processing:
        line += f"; rate {progress.rate_text(view.rate_per_s)}, ETA {progress.duration_text(view.eta_s)}"
    return line


def session_line(view: SessionView, width: int) -> str:
    total = view.total
    counts = view.counts
    parts = [f"{counts['done']} done"] + [
        f"{counts[s]} {s}" for s in ("failed", "cancelled", "processing", "queued") if counts[s]
    ]
    if view.non_compliant:
        parts.append(f"{view.non_compliant} recipe file{'' if view.non_compliant == 1 else 's'} not compliant")
    fields = [
        view.session.name.ljust(width),
        view.session.state.value.ljust(STATE_WIDTH),
        progress.bar(view.finished, total),
        f"{view.finished}/{total}",
        ", ".join(parts),
    ]
    if view.remaining:
        fields += [f"rate {progress.rate_text(view.rate_per_s)}", f"ETA {progress.duration_text(view.eta_s)}"]
    fields.append(view.session.zip or "no ZIP yet")
    return "  ".join(fields)


def item_line(settings: Settings, item: Item) -> str:
    line = f"{item.status.value:<10} {item.name}"
    if item.status is Status.DONE:
        line += f" -> {item.member}"
    if item.error:
        line += f": {item.error}"
    if item.status is Status.DONE:
        line += "".join(f"; {one['recipe']} not compliant: {one['reason']}" for one in refused_recipes(item))
    if item.status in RETRYABLE:
        line += f" (retry: touch {settings.retry_dir / item.session / item.name})"
    if record.pending(item.review):
        reasons = "; ".join(reason["reason"] for reason in record.loaded(item.review)["reasons"])
        line += f" flagged: {reasons} (bgremover review approve|retry|mask {item.session} {item.name})"
    return line


def refused_recipes(item: Item) -> list[dict]:
    """A done item's recipe entries a channel would refuse, as its status JSON shows them."""
    return [one for one in map(recipe_document, item.recipes) if not one["compliant"]]


def empty_text(root: Path) -> list[str]:
    return [f"no sessions yet under {root}"]


# -- JSON ------------------------------------------------------------------------


def render_json(view: View | None, root: Path, now: float, every_item: bool = False) -> dict:
    """One document for scripts; the same shape with or without a database (then with no sessions)."""
    if view is None:
        view = View(root, now, None, True, 0, 0, None, 0.0, [])
    return {
        "root": str(root),
        "at": iso(now),
        "daemon": {
            "running": (view.daemon_pid is not None) if view.daemon_known else None,
            "pid": view.daemon_pid,
            "job_slots": view.job_slots,
            "spare_slots": view.spare_slots,
        },
        "queued": view.queued,
        "processing": view.processing,
        "rate_per_s": rounded(view.rate_per_s, 4),
        "eta_s": rounded(view.eta_s, 1),
        "sessions": [session_document(s, every_item) for s in view.sessions],
        # The settled sessions are shown a page at a time, newest first; the unsettled always.
        "page": view.page,
        "page_size": PAGE_SIZE,
        "older_sessions": view.older,
    }


def rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def session_document(view: SessionView, every_item: bool) -> dict:
    session = view.session
    doc = {
        "name": session.name,
        "state": session.state.value,
        "format": session.format,
        "created_at": iso(session.created_at),
        "total": view.total,
        "finished": view.finished,
        "counts": view.counts,
        "rate_per_s": rounded(view.rate_per_s, 4),
        "eta_s": rounded(view.eta_s, 1),
        "zip": session.zip,
        "error": session.error,  # why the whole session was refused (an invalid job ticket)
        "finish_error": session.finish_error,  # why its ZIP or archive is not done yet; tried again later
        "non_compliant": view.non_compliant,  # recipe files of its done items a channel would refuse
        "failed": [
            {"name": item.name, "error": item.error, "retry_marker": retry_marker(item)} for item in view.failed
        ],
        "flagged": [{"name": item.name, "review": record.loaded(item.review)} for item in view.flagged],
    }
    if every_item:
        doc["items"] = item_documents(view.items, view.with_masks, view.review_folder)  # as the status JSON has them
    return doc


# -- following -------------------------------------------------------------------


def follow(
    frame: Callable[[], str],
    out: TextIO,
    interval: float,
    *,
    redraw: bool,
    separator: str = "\n",
    screen: Callable[[], os.terminal_size] = lambda: os.terminal_size((80, 24)),
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Write a fresh frame every `interval` seconds until interrupted (KeyboardInterrupt propagates).

    With `redraw` (a terminal) each frame is drawn over the last: cursor home,
    every line cleared to its end, then the rest of the screen; there is no
    blank flash between frames as a full clear would give. Otherwise (a pipe, a
    file, a test) frames follow one another with `separator` between them.
    """
    first = True
    while True:
        text = frame()
        if redraw:
            size = screen()
            out.write((CLEAR_SCREEN if first else "") + HOME + fitted(text, size.lines, size.columns) + CLEAR_BELOW)
        else:
            out.write(text if first else separator + text)
        out.flush()  # a pipe is block-buffered: a reader would see nothing until the buffer filled
        first = False
        sleep(interval)


def fitted(text: str, rows: int, columns: int = 80) -> str:
    """The frame cut to the screen, each line clearing what the last frame left to its right.

    A frame taller than the screen would scroll, and homing the cursor would then
    draw over the middle of the last frame instead of its top. A line wider than
    the screen wraps onto more rows, and is counted so.
    """
    lines, budget, columns = text.rstrip("\n").split("\n"), max(rows, 3) - 1, max(columns, 1)
    heights = [max(1, -(-len(line) // columns)) for line in lines]
    if sum(heights) > budget:
        kept, used = 0, 0
        while used + heights[kept] <= budget - 1:  # one row for the note below
            used += heights[kept]
            kept += 1
        lines = lines[:kept] + [f"… {len(lines) - kept} more lines; `bgremover status SESSION` shows one session"]
    return "".join(line + CLEAR_LINE + "\n" for line in lines)
