"""The daemon's own files: taken originals, job results and logs, and the archive.

Where each file of an item lives is derived from the item itself (its id, its
attempt, its session and name), so no path is stored that could go stale: after
a crash the truth is simply what exists on disk. Every move is a rename within
one filesystem followed by an fsync of the folders involved, so a taken file is
always in exactly one place (a move to another filesystem copies first
and unlinks last, so it is in two places for a moment, never in none).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
from pathlib import Path

from bgremover import durable
from bgremover.durable import fsync_folder
from bgremover.queue.store import Item


class FileReplaced(OSError):
    """What the watcher saw is not what arrived: the file was swapped for another one."""


class NotSynced(OSError):
    """The file was moved, but the move may not survive a power cut: the take stands all the same."""


def move(src: Path, dst: Path) -> None:
    """Rename src to dst, creating dst's folder; durable on return. Across filesystems: copied, then unlinked."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(src, dst)
    except OSError as exc:
        if exc.errno != errno.EXDEV:  # the archive may be another disk or a NAS mount
            raise
        copy_then_unlink(src, dst)
        return
    fsync_folder(dst.parent)
    fsync_folder(src.parent)


def copy_then_unlink(src: Path, dst: Path) -> None:
    """The move a rename cannot make: dst appears whole by its own rename before src goes.

    A kill at any instant leaves the file in src, or in both places, never in
    neither: the copy is a temp beside dst, fsynced and renamed into place, and
    only then is src unlinked. A second try just copies it again.
    """
    with open(src, "rb") as source, durable.replacing(dst) as out:
        shutil.copyfileobj(source, out, 1024 * 1024)
    shutil.copystat(src, dst)  # the user's file keeps its times in the archive
    os.unlink(src)
    fsync_folder(src.parent)


def remove_empty_dirs(folder: Path, stop: Path, changed_before: float) -> None:
    """Remove empty folders in `folder`, then it and its empty parents up to, not including, `stop`.

    Only folders last changed before `changed_before` (wall-clock seconds, as
    mtimes are): a newer empty folder may be one a copy (rsync) has just made
    and is about to fill. Ages are read before anything is removed, since
    removing a child changes its parent's mtime.
    """
    inside = sorted((p for p in folder.rglob("*") if p.is_dir() and not p.is_symlink()), reverse=True)
    parents = [folder, *(p for p in folder.parents if stop in p.parents)] if stop in folder.parents else []
    settled = {path for path in inside + parents if _changed_before(path, changed_before)}
    for path in inside:
        if path in settled:
            with contextlib.suppress(OSError):
                path.rmdir()
    for path in parents:
        try:
            if path not in settled:
                return
            path.rmdir()
        except OSError:
            return


def _changed_before(path: Path, moment: float) -> bool:
    try:
        return os.lstat(path).st_mtime < moment
    except OSError:
        return False


class Spool:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.originals = root / "state" / "originals"
        self.results = root / "state" / "results"
        self.archive = root / "archive"

    def prepare(self) -> None:
        for folder in (self.originals, self.results, self.archive):
            folder.mkdir(parents=True, exist_ok=True)

    def stored(self, item: Item) -> Path:
        # Named by id, not by the dropped name: hostile names never reach our folders.
        return self.originals / f"{item.id}{item.ext}"

    def archived(self, item: Item) -> Path:
        return self.archive / item.session / item.name

    def dropped(self, item: Item) -> Path:
        return self.root / os.fsdecode(item.source)

    def original(self, item: Item) -> Path | None:
        """Where the item's original is now: the store, or the archive once its session completed."""
        for path in (self.stored(item), self.archived(item)):
            if path.is_file():
                return path
        return None

    def take(self, src: Path, item: Item) -> None:
        """Move a dropped file into the store, unless it was swapped for something else meanwhile.

        The watcher saw a regular file, but a link or a folder may take its name
        in the instant before the rename; a link moved in here would be followed
        by the job, so the same inode must arrive, or it goes back. Once the
        rename has happened the file is the item's: a failure to make it durable
        after that raises NotSynced, and the take stands.
        """
        seen = os.lstat(src)
        stored = self.stored(item)
        stored.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, stored)
        arrived = os.lstat(stored)
        if not (stat.S_ISREG(arrived.st_mode) and (arrived.st_dev, arrived.st_ino) == (seen.st_dev, seen.st_ino)):
            if not os.path.lexists(src):
                os.rename(stored, src)  # back where the user left it
            raise FileReplaced(f"{src} was replaced while it was being taken")
        try:
            fsync_folder(stored.parent)
            fsync_folder(src.parent)
        except OSError as exc:
            raise NotSynced(exc.errno, f"{src} was taken, but its folders could not be synced: {exc}") from exc

    def corrected_mask(self, item: Item) -> Path:
        """A person's mask for the item, given in a review: its next job uses it as the alpha, not the model's."""
        return self.originals / f"{item.id}.mask"

    def replace_mask(self, item: Item, given: Path) -> None:
        """The item's corrected mask becomes a copy of `given` (as replace_original)."""
        self.replace_original(item, given, self.corrected_mask(item))

    def replace_original(self, item: Item, fixed: Path, stored: Path | None = None) -> None:
        """The item's original becomes a copy of `fixed` (a file the user gave for its retry).

        Copied, not moved: the file may be on another mount than the store. It is
        opened without following a link, so a link put in its place is refused.
        """
        stored = stored or self.stored(item)
        stored.parent.mkdir(parents=True, exist_ok=True)
        with open(os.open(fixed, os.O_RDONLY | os.O_NOFOLLOW), "rb") as source:
            if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
                raise FileReplaced(f"{fixed} is not a regular file")
            with durable.replacing(stored) as out:
                shutil.copyfileobj(source, out, 1024 * 1024)

    @staticmethod
    def job_stem(item: Item, attempt: int | None = None) -> str:
        """What every file of one attempt's job is named after, up to its first dot: `<id>-<attempt>`."""
        return f"{item.id}-{attempt or item.attempts}"

    def result(self, item: Item, fmt_ext: str, attempt: int | None = None) -> Path:
        return self.results / f"{self.job_stem(item, attempt)}{fmt_ext}"

    def mask_result(self, item: Item) -> Path:
        """Where a job writes the mask beside its cutout (output "both")."""
        return self.results / f"{self.job_stem(item)}.mask.png"

    def report(self, item: Item) -> Path:
        return self.results / f"{self.job_stem(item)}.report.json"

    def job_log(self, item: Item) -> Path:
        return self.results / f"{self.job_stem(item)}.log"

    def discard(self, *paths: Path) -> None:
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def archive_original(self, item: Item) -> None:
        self.discard(self.corrected_mask(item))
        stored = self.stored(item)
        if stored.is_file():
            move(stored, self.archived(item))

    def delete_original(self, item: Item) -> None:
        self.discard(self.stored(item), self.corrected_mask(item))
