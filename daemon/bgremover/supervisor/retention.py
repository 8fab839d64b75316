"""Bounded history: complete sessions forgotten after keep_sessions_days, their delivered files after keep_outbox_days.

One of the loop's steps, run at most every few seconds on a few sessions,
oldest first, so that working off a long history never makes a long pass.
Each step is ordered so that a kill -9 at any instant leaves only what the
next step (in this life or the next) finishes, and never deletes a file a
user dropped:

- A session leaves the database last. First each original still in
  state/originals (a failed or cancelled item's, kept for its retry) moves to
  archive/SESSION/, its job files leave state/results and its retry folder
  goes if no marker is in it; then its rows go, in one transaction. Before
  that transaction it is still a complete session whose originals a retry
  finds in the archive, so stopping anywhere above is harmless.
- A delivered file in outbox/ goes by one unlink. An archive folder, or a
  session's loose tree in outbox/, is first renamed into archive/.pruning/ or
  outbox/.pruning/, which every step empties before it looks for more: a
  folder half deleted is never mistaken for a session's.

Outbox and archive files are judged by their own age, not by a database row,
which may be gone already. Only names the daemon writes are touched:
outbox/NAME.zip, outbox/NAME.json and outbox/NAME/, and archive/NAME/; a
forgotten session's kept mattes (state/mattes/) go with its job files. A session that still
needs them (unfinished, or with an item left to retry) keeps them.
"""

from __future__ import annotations

import math
import os
import shutil
import time
from pathlib import Path

import structlog

from bgremover.backoff import describe
from bgremover.formats import FORMAT_EXTENSIONS
from bgremover.outbox import zips
from bgremover.outbox.status import forgotten_document
from bgremover.queue.spool import Spool
from bgremover.queue.store import Session, Store, iso
from bgremover.settings import Settings
from bgremover.supervisor.items import ItemMoves
from bgremover.supervisor.sessions import Sessions

log = structlog.get_logger()

DAY_SECONDS = 86400.0
SESSIONS_PER_STEP = 20  # a step's work stays a few milliseconds, however long the history behind it
MOST_SECONDS_BETWEEN_STEPS = 60.0
REFUSED_WAIT_SECONDS = 600.0  # a session whose originals the archive refused is tried again after this
PRUNING = ".pruning"  # archive/.pruning/NAME: an archive folder on its way out
DELIVERED = (".zip", ".json")


class Retention:
    def __init__(self, settings: Settings, store: Store, spool: Spool, sessions: Sessions, moves: ItemMoves) -> None:
        self.settings = settings
        self.store = store
        self.spool = spool
        self.sessions = sessions
        self.publisher = sessions.publisher
        self.moves = moves
        self.keep_sessions = settings.keep_sessions_days * DAY_SECONDS
        self.keep_outbox = settings.keep_outbox_days * DAY_SECONDS
        shortest = min(filter(None, (self.keep_sessions, self.keep_outbox)), default=0.0)
        # A tenth of the shortest retention, so nothing outlives it by much (seconds-scale ones included).
        self.interval = min(MOST_SECONDS_BETWEEN_STEPS, max(shortest / 10, 0.5))
        self.next_step = 0.0  # monotonic
        self.refused: dict[str, float] = {}  # session -> when (wall clock) it may be tried again

    def prune(self, now: float) -> None:
        """The loop's step: at most every `interval` seconds, a bounded batch of each kind."""
        if now < self.next_step or not (self.keep_sessions or self.keep_outbox):
            return
        self.next_step = now + self.interval
        wall = time.time()
        if self.keep_sessions:
            self.forget_sessions(wall)
        if self.keep_outbox:
            self.prune_delivered(wall)

    # -- the database and state/ ----------------------------------------------------

    def forget_sessions(self, wall: float) -> None:
        busy = self.sessions.unfinished | self.publisher.stale  # their ZIP or JSON is still to be written
        candidates = self.store.complete_before(wall - self.keep_sessions, SESSIONS_PER_STEP + len(self.refused))
        due = [s for s in candidates if s.name not in busy and self.refused.get(s.name, 0.0) <= wall]
        for session in due[:SESSIONS_PER_STEP]:
            self.forget(session, wall)

    def forget(self, session: Session, wall: float) -> None:
        """Files first, rows last: see the module's docstring for why this order survives a kill."""
        try:
            archived = self.clear_state(session)
            self.publish_forgotten(session, archived)
        except OSError as exc:
            self.refused[session.name] = wall + REFUSED_WAIT_SECONDS
            log.warning(
                "session_not_forgotten",
                session=session.name,
                reason=f"its originals could not be moved to the archive ({describe(exc)})",
                retry_in_s=REFUSED_WAIT_SECONDS,
            )
            return
        self.refused.pop(session.name, None)
        self.moves.drop_retry_folder(session.name)
        items = self.store.forget_session(session.name)
        if items is not None:
            log.info("session_forgotten", session=session.name, items=items, completed_at=iso(session.updated_at))

    def clear_state(self, session: Session) -> set[str]:
        """A session's files in state/: originals to the archive (never deleted), job files removed.

        Returns the names of the items whose original is now in the archive.
        """
        ext = FORMAT_EXTENSIONS[session.format]
        archived = set()
        for item in self.store.items(session.name):
            if self.spool.stored(item).is_file():
                self.spool.archive_original(item)
                archived.add(item.name)
                log.info(
                    "original_archived",
                    session=item.session,
                    item=item.name,
                    status=item.status.value,
                    reason="its session is forgotten",
                )
            spool = self.spool
            spool.discard(spool.result(item, ext), spool.mask_result(item), spool.report(item), spool.job_log(item))
            spool.discard(*spool.render_files(item), spool.matte(item))  # the matte lives as long as its session
        return archived

    def publish_forgotten(self, session: Session, archived: set[str]) -> None:
        """Its status JSON, where still delivered, stops naming retry markers that will mean nothing.

        Written before the rows go: a kill in between leaves a session the next step forgets again.
        """
        path = self.settings.outbox / f"{session.name}.json"
        if path.is_file():
            document = self.publisher.status_document(session)
            zips.write_status(path, forgotten_document(document, archived))

    # -- outbox/ and archive/ ---------------------------------------------------------

    def prune_delivered(self, wall: float) -> None:
        """The oldest delivered sessions past keep_outbox_days: ZIP, archive folder, then JSON."""
        self.finish_pruning()
        before = wall - self.keep_outbox
        outbox, archive = old_delivered(self.settings.outbox, before), old_archives(self.spool.archive, before)
        ages = {name: min(outbox.get(name, wall), archive.get(name, wall)) for name in outbox.keys() | archive.keys()}
        oldest = sorted(ages, key=lambda name: (ages[name], name))[:SESSIONS_PER_STEP]
        held = self.store.holding_files(oldest) | self.sessions.unfinished | self.publisher.stale
        for name in oldest:
            if name in held:
                continue
            # The JSON last: while it is there, the name stays in use (Taking.session_for).
            self.unlink(self.settings.outbox / f"{name}.zip", before)
            self.remove_loose_tree(name)
            if name in archive:
                self.remove_archive(name)
            self.unlink(self.settings.outbox / f"{name}.json", before)
            log.info("session_files_deleted", session=name, reason="older than keep_outbox_days")

    def unlink(self, path: Path, before: float) -> None:
        try:
            if path.lstat().st_mtime < before:  # rewritten since it was found: it stays
                path.unlink()
        except FileNotFoundError:
            pass

    def remove_loose_tree(self, name: str) -> None:
        """outbox/NAME/, the session's loose files (loose_files), goes with its ZIP: renamed away, then deleted."""
        tree = self.settings.outbox / name
        if tree.is_dir() and not tree.is_symlink():
            pruning = self.settings.outbox / PRUNING
            pruning.mkdir(exist_ok=True)
            os.rename(tree, pruning / name)  # one step: a sync tool sees the whole tree go at once
            self.finish_pruning()

    def remove_archive(self, name: str) -> None:
        pruning = self.spool.archive / PRUNING
        pruning.mkdir(exist_ok=True)
        os.rename(self.spool.archive / name, pruning / name)  # one step: from here on it is only rubbish
        self.finish_pruning()

    def finish_pruning(self) -> None:
        """Archive folders and loose trees a step (or a killed daemon) renamed away, deleted whole."""
        for pruning in (self.spool.archive / PRUNING, self.settings.outbox / PRUNING):
            if pruning.is_dir():
                for entry in list(pruning.iterdir()):
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.rmtree(entry)
                    else:
                        entry.unlink()


def kept_since(settings: Settings, wall: float) -> float:
    """The oldest completion time of a session retention keeps in the database (all of them: -inf)."""
    keep = settings.keep_sessions_days * DAY_SECONDS
    return wall - keep if keep else -math.inf


def old_delivered(outbox: Path, before: float) -> dict[str, float]:
    """Sessions with a ZIP or status JSON in the outbox last written before `before`, with that time."""
    found: dict[str, float] = {}
    with os.scandir(outbox) as entries:
        for entry in entries:
            stem, suffix = os.path.splitext(entry.name)
            if suffix not in DELIVERED or entry.name.startswith(".") or not entry.is_file(follow_symlinks=False):
                continue
            mtime = entry.stat(follow_symlinks=False).st_mtime
            if mtime < before:
                found[stem] = min(mtime, found.get(stem, mtime))
    return found


def old_archives(archive: Path, before: float) -> dict[str, float]:
    """Archive folders into which nothing was moved since `before`, with their newest folder's time."""
    found: dict[str, float] = {}
    with os.scandir(archive) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not entry.is_dir(follow_symlinks=False):
                continue
            # A folder's time changes when a file is moved into it; the files keep the user's own times.
            if entry.stat(follow_symlinks=False).st_mtime < before:
                newest = last_moved_into(Path(entry.path))
                if newest < before:
                    found[entry.name] = newest
    return found


def last_moved_into(folder: Path) -> float:
    """The newest modification time of `folder` and the folders below it."""
    return max(os.lstat(parent).st_mtime for parent, _, _ in os.walk(folder))
