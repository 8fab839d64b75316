"""The one way a file is published: temp beside the target → fsync → rename → fsync the folder.

A reader sees the old file or the new one, never part of one, because the new
one appears by a single rename within one folder (so one filesystem). After a
power cut the new file is whole or absent: its data is fsynced before the
rename, and the folder, which holds the rename, is fsynced after it.

A leaf: it imports nothing of bgremover's, so any layer may use it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

# Every temp file the daemon writes starts so, and nothing else does: after a crash
# remove_temp_files can tell leftovers from results by their name alone.
TEMP_PREFIX = ".tmp-"


def temp_path(target: Path) -> Path:
    """The temp beside `target` for a writer that writes by path, then calls publish: ".tmp-NAME"."""
    return target.with_name(TEMP_PREFIX + target.name)


def publish(temp: Path, target: Path) -> None:
    """Make the already-written `temp` durable, then rename it over `target`.

    On error `temp` is left where it is: the writer that made it removes it.
    """
    fd = os.open(temp, os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)  # the data must be on disk before the rename can be
    finally:
        os.close(fd)
    os.replace(temp, target)
    fsync_folder(target.parent)


def atomic_write(target: Path, data: bytes, temp: Path | None = None) -> None:
    """Replace `target` with `data` durably; `temp` as for replacing."""
    with replacing(target, temp) as out:
        out.write(data)


@contextlib.contextmanager
def replacing(target: Path, temp: Path | None = None) -> Iterator[BinaryIO]:
    """Yield a temp file beside `target` to stream into; on success it replaces `target` durably.

    On any error, the writer's own included, the temp file is removed and `target`
    is as it was. Without `temp` the name is ".tmp-NAME-RANDOM", new each time;
    a caller with a naming convention of its own passes its `temp` path.
    """
    # A random name must be a new file (O_EXCL); a caller's fixed name may be a killed writer's leftover.
    temp, flags = (_unique_temp(target), os.O_EXCL) if temp is None else (temp, os.O_TRUNC)
    # 0o666 (less the umask) rather than mkstemp's 0o600: users must read what we write.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | flags | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
        publish(temp, target)  # once closed: fsync syncs the file, whichever descriptor asks
    except BaseException:
        with contextlib.suppress(FileNotFoundError):  # gone already if only the folder's fsync failed
            os.unlink(temp)
        raise


def _unique_temp(target: Path) -> Path:
    # The target's name is cut so prefix + name + suffix stays under NAME_MAX (255 bytes).
    return target.with_name(f"{TEMP_PREFIX}{target.name[:40]}-{secrets.token_hex(4)}")


def fsync_folder(folder: Path) -> None:
    # The rename lives in the folder's entries: without this a crash can bring back the old file.
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_temp_files(folder: Path, spare: frozenset[str] = frozenset()) -> int:
    """Delete temp files a crash left under folder (recursively); returns how many.

    Call it only while nothing writes there (at start-up), or it would delete a
    temp file another writer is about to rename; `spare` names the writers that
    may still write: a temp whose target's name, up to its first dot, is one of
    them stays.
    """
    removed = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if name.startswith(TEMP_PREFIX) and name[len(TEMP_PREFIX) :].split(".", 1)[0] not in spare:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(root, name))
                    removed += 1
    return removed
