"""Uploads put where a careful copy tool would put them: written under a temporary name, then renamed.

A file is written inside a dot-folder of the inbox, which intake never looks
into, and only once the whole request has been read and every file is within
its limits is each one linked to its place, under the name the inbox rules
allow. Intake's stable-file rule then takes it whole. A request that fails
half-way leaves nothing in the inbox: its dot-folder is removed.

The staging folder is inside the inbox, not beside it, because a rename cannot
cross a mount, and under systemd the inbox may be a mount of its own.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
from pathlib import Path
from typing import BinaryIO, NamedTuple

from bgremover.durable import fsync_folder
from bgremover.intake.names import display, fitted, twin
from bgremover.intake.watcher import IMAGE_EXTENSIONS, is_image_name
from bgremover.web.forms import FormRefused

STAGING_PREFIX = ".bgremover-upload-"
STALE_STAGING_SECONDS = 3600  # an upload still open after an hour was cut off by a crash
FILE_FIELD = "file"
TEMPORARY_PREFIXES = (".", "~$")  # what would make intake take the file for one still being written


def accepted_extensions() -> str:
    return ", ".join(sorted(ext.lstrip(".") for ext in IMAGE_EXTENSIONS))


def safe_name(sent: str) -> str:
    """The inbox-relative name a sent file name becomes: no way out of the inbox, nothing intake would skip.

    Each part loses what could climb (`..`, an absolute path, a drive) or hide
    it (a leading dot, `~$`), and control characters; each is fitted to the
    file system's 255 bytes as the daemon's own names are.
    """
    parts = []
    for part in sent.replace("\\", "/").split("/"):
        part = "".join(c for c in part if c.isprintable()).strip()
        while part.startswith(TEMPORARY_PREFIXES):
            part = part.removeprefix("~$").lstrip(".").strip()
        if part and not part.endswith(":"):  # "C:" of a Windows path names no folder of the sender's
            parts.append(fitted(display(part)))
    if not parts:
        raise FormRefused(400, f"'{display(sent)}' leaves no name to store the file under")
    if not is_image_name(parts[-1]):
        raise FormRefused(
            415, f"{parts[-1]} is not an image bgremover takes ({accepted_extensions()}); nothing was uploaded"
        )
    return "/".join(parts)


class Placed(NamedTuple):
    sent: str  # the name the browser sent (a path inside a chosen folder, or the file's own name)
    name: str  # the inbox path it was placed at

    @property
    def renamed(self) -> bool:
        return self.sent.replace("\\", "/").strip("/") != self.name


class Staging:
    """The files of one upload request, written into a dot-folder of the inbox, placed when all have arrived."""

    def __init__(self, inbox: Path) -> None:
        self.inbox = inbox
        self.folder = inbox / f"{STAGING_PREFIX}{secrets.token_hex(8)}"
        self.files: list[tuple[Path, str, str]] = []  # (temporary path, safe name, the name it was sent under)

    def open(self, field: str, sent: str, fields: dict[str, str] | None = None) -> BinaryIO:
        if not sent:  # a file input left empty: browsers send a part with no name and no bytes
            return NOWHERE
        if field != FILE_FIELD:
            raise FormRefused(400, f"unexpected file field '{field}'; files are sent as '{FILE_FIELD}'")
        name = safe_name(sent)
        self.folder.mkdir(parents=True, exist_ok=True)
        temp = self.folder / str(len(self.files))
        self.files.append((temp, name, sent))
        return _SyncedFile(temp)

    def place(self) -> list[Placed]:
        """Link every file to its place in the inbox, never over another file; the names they got."""
        placed = []
        for temp, name, sent in self.files:
            placed.append(Placed(sent, place_without_replacing(temp, self.inbox, name)))
        self.discard()
        return placed

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


class _SyncedFile:
    """A new file whose bytes are on disk when it is closed: a power cut must not leave the daemon half an image."""

    def __init__(self, path: Path) -> None:
        self.out = open(path, "xb")  # noqa: SIM115 - closed in close(), at the end of its part

    def write(self, data: bytes) -> int:
        return self.out.write(data)

    def close(self) -> None:
        if not self.out.closed:
            self.out.flush()
            os.fsync(self.out.fileno())
            self.out.close()


class _Nowhere:
    def write(self, data: bytes) -> int:
        return len(data)

    def close(self) -> None:
        pass


NOWHERE = _Nowhere()


def place_without_replacing(temp: Path, folder: Path, name: str) -> str:
    """Give `temp` the name `name` under `folder`, or its next free twin ("a (2).jpg"); the name it got."""
    candidate, n = name, 1
    while True:
        target = folder / candidate
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(temp, target)  # unlike a rename, a link never replaces a file that appeared meanwhile
        except FileExistsError:
            n += 1
            candidate = twin(name, n)
            continue
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP):
                raise
            if os.path.lexists(target):  # a file system without hard links: check, then rename
                n += 1
                candidate = twin(name, n)
                continue
            os.rename(temp, target)
        temp.unlink(missing_ok=True)
        fsync_folder(target.parent)
        return candidate


def remove_stale_staging(folder: Path, now: float) -> None:
    """Staging folders and fixed files left by a page that was killed mid-upload."""
    with contextlib.suppress(FileNotFoundError):
        for entry in list(folder.rglob(f"{STAGING_PREFIX}*")):
            with contextlib.suppress(FileNotFoundError):
                info = entry.lstat()
                if now - info.st_mtime <= STALE_STAGING_SECONDS:
                    continue
                if entry.is_dir() and not entry.is_symlink():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink()


class Replacement:
    """A fixed file for a failed item, written beside its retry marker and renamed to it.

    The daemon reads a retry marker with content as the item's new original
    (supervisor/markers.py); the temporary name starts with a dot, which the
    marker reader skips, so it never sees half of one.
    """

    def __init__(self, marker: Path, ext: str) -> None:
        self.marker = marker
        self.ext = ext
        self.temp = marker.with_name(f"{STAGING_PREFIX}{secrets.token_hex(8)}")
        self.out: _SyncedFile | None = None

    def open(self, field: str, sent: str) -> BinaryIO:
        if field != FILE_FIELD or self.out is not None:
            raise FormRefused(400, f"a retry takes at most one file, sent as '{FILE_FIELD}'")
        name = safe_name(sent)
        if Path(name).suffix.lower() != self.ext.lower():
            raise FormRefused(
                415, f"the fixed file must be a {self.ext} file, as the one it replaces; {Path(name).name} is not"
            )
        self.marker.parent.mkdir(parents=True, exist_ok=True)
        self.out = _SyncedFile(self.temp)
        return self.out

    @property
    def received(self) -> bool:
        return self.out is not None

    def place(self) -> None:
        os.replace(self.temp, self.marker)
        fsync_folder(self.marker.parent)

    def discard(self) -> None:
        self.temp.unlink(missing_ok=True)
