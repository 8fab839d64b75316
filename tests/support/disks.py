"""A real small disk for tests that need one to fill up or refuse writes: a tmpfs mounted on a folder.

Mounting needs root (CAP_SYS_ADMIN). These machines run the suite as root; a
machine that cannot mount fails these tests with the reason rather than
pretending, since mode bits alone do not stop root from writing.
"""

from __future__ import annotations

import contextlib
import errno
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

FILLER = "filler"


def _mount(*args: str) -> None:
    result = subprocess.run(["mount", *args], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"these tests need to mount a tmpfs (run as root): mount {' '.join(args)}: {result.stderr}")


@contextlib.contextmanager
def small_tmpfs(folder: Path, size_kb: int) -> Iterator[Path]:
    """Mount a tmpfs of size_kb on folder (made if missing) for the block; unmounted after, even on failure."""
    folder.mkdir(parents=True, exist_ok=True)
    _mount("-t", "tmpfs", "-o", f"size={size_kb}k,mode=0755", "tmpfs", str(folder))
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True, check=False)


def fill(folder: Path) -> Path:
    """Write a filler file until the disk under folder is full; returns it (unlink it to free the space)."""
    filler = folder / FILLER
    chunk = bytes(64 * 1024)
    with open(filler, "ab") as out:
        while True:
            try:
                out.write(chunk)
                out.flush()
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
                break
        # Top up with single bytes so not even a small write fits.
        for size in (4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(out.fileno(), bytes(size))
    return filler


def set_read_only(folder: Path, read_only: bool) -> None:
    """Remount the tmpfs on folder read-only (every write: EROFS) or writable again.

    The kernel refuses while a file on it is open for writing (EBUSY), so this
    suits a folder the daemon only writes by replacing files, like the outbox.
    """
    _mount("-o", f"remount,{'ro' if read_only else 'rw'}", str(folder))


def set_immutable(folders: list[Path], immutable: bool) -> None:
    """chattr +i: no file can be made, renamed or removed in these folders, not even by root (EPERM)."""
    result = subprocess.run(
        ["chattr", "+i" if immutable else "-i", *map(str, folders)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        raise RuntimeError(f"these tests need chattr on their temporary folder: {result.stderr}")
