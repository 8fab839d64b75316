"""What users see in the outbox: status JSON and session ZIPs, each written atomically.

Every file goes through durable.py (temp beside it → fsync → rename → fsync the
folder), so a reader sees either the old file or the new one, never half of one,
and after a power cut the rename is not lost. This module holds no policy:
callers say what to write.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import posixpath
import re
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import BinaryIO

from bgremover import durable
from bgremover.intake.names import NAME_MAX, cut, fitted

CHUNK_BYTES = 1 << 20


class MissingMemberError(FileNotFoundError):
    """A ZIP member has neither a source file nor a copy in the previous ZIP."""


class Abandoned(Exception):
    """The ZIP was given up half-way because the daemon is stopping; its temp file is removed."""


def never() -> bool:
    return False


def write_status(path: Path, doc: dict) -> None:
    """Strict UTF-8 JSON. A string that cannot be encoded (a lone surrogate from an
    undecodable file name) is the caller's bug, so encode() raises rather than mangles."""
    text = json.dumps(doc, ensure_ascii=False, allow_nan=False, indent=2) + "\n"
    durable.atomic_write(path, text.encode("utf-8"))


def member_name(item_name: str, fmt_ext: str, taken: set[str]) -> str:
    """The ZIP member name for an item, distinct from every name in `taken`.

    The item's relative name is normalised: backslashes become "/" (Windows
    extractors treat them as separators), and "", "." and ".." parts are dropped,
    not resolved, so no name can climb out of the extraction folder. Each part
    is then made one that Windows can create (windows_part): for instance colons
    become "_", as on Windows "C:" names a drive and "a:b" a hidden stream of "a".
    The extension is then replaced by fmt_ext: "a/b/c.jpg" -> "a/b/c.png".
    No part is longer than 255 bytes (intake/names.py), or no extractor on
    Linux could create it.

    Collision rule: names are compared case-insensitively, because macOS and
    Windows extract "A.png" and "a.png" onto one file. If the name is taken, the
    original extension joins the stem with a dash: "a.jpg" -> "a-jpg.png"; if
    that is taken too, "-2", "-3", ... follow it: "a-jpg-2.png". A name without
    an extension goes straight to "a-2.png". The result depends only on the
    arguments, so callers get stable names by naming items in a stable order.
    `taken` is not modified.
    """
    parts = [part for part in item_name.replace("\\", "/").split("/") if part not in ("", ".", "..")]
    if not parts:
        raise ValueError(f"item name {item_name!r} has no usable part")
    folder = "/".join(_no_trailing_dots(fitted(windows_part(part))) for part in parts[:-1])
    stem, ext = posixpath.splitext(windows_part(parts[-1]))
    folded = {name.casefold() for name in taken}
    room = NAME_MAX - len(fmt_ext.encode())
    names = (posixpath.join(folder, candidate + fmt_ext) for candidate in _stems(stem, ext, room))
    return next(name for name in names if name.casefold() not in folded)


# What Windows refuses in a name: these characters, and C0 controls (C1 and DEL go too: no extractor shows them well).
WINDOWS_REFUSED = re.compile(r'[<>:"|?*\x00-\x1f\x7f-\x9f]')
# Device names, reserved in any case and with any extension ("nul.tar.png" opens the null device).
WINDOWS_DEVICES = frozenset(
    {"con", "prn", "aux", "nul", "conin$", "conout$"}
    | {f"{port}{n}" for port in ("com", "lpt") for n in [*"0123456789", "\u00b9", "\u00b2", "\u00b3"]}
)


def windows_part(part: str) -> str:
    """One path part as Windows can extract it: refused characters become "_", a device name gets a "_".

    The device rule looks at what comes before the first dot, less trailing
    spaces, as Windows does: "CON.jpg" -> "CON_.jpg", "lpt1 .x.jpg" -> "lpt1_ .x.jpg".
    """
    part = WINDOWS_REFUSED.sub("_", part)
    device, dot, rest = part.partition(".")
    if device.rstrip(" ").casefold() in WINDOWS_DEVICES:
        stripped = device.rstrip(" ")
        part = stripped + "_" + device[len(stripped) :] + dot + rest
    return part


def _no_trailing_dots(part: str) -> str:
    """A folder name ending in dots or spaces: Windows drops them, so "a." would land in "a"; they become "_"."""
    kept = part.rstrip(". ")
    return kept + "_" * (len(part) - len(kept))


MASK_SUFFIX = ".mask.png"


def mask_member(member: str) -> str:
    """The mask's name beside a cutout's: "a/red.png" -> "a/red.mask.png" (output "both")."""
    folder, _, last = member.rpartition("/")
    stem = cut(posixpath.splitext(last)[0], NAME_MAX - len(MASK_SUFFIX))
    return (folder + "/" if folder else "") + stem + MASK_SUFFIX


def member_with_mask(item_name: str, fmt_ext: str, taken: set[str]) -> str:
    """member_name, for a session whose items each have a mask too: neither name may be taken.

    `taken` holds every cutout and mask name already in the ZIP.
    """
    refused = set(taken)
    while True:
        member = member_name(item_name, fmt_ext, refused)
        if mask_member(member).casefold() not in {name.casefold() for name in refused}:
            return member
        refused.add(member)  # its mask would collide: the next candidate


def _stems(stem: str, ext: str, room: int) -> Iterator[str]:
    """ "a", "a-jpg", "a-jpg-2", "a-jpg-3", ... each at most `room` bytes (endless: the caller stops).

    A stem too long for its room loses characters from its end; the counter is
    never cut, so the candidates stay distinct.
    """
    yield cut(stem, room)
    base = f"{stem}-{ext[1:]}" if ext else stem
    if ext:
        yield cut(base, room)
    yield from (cut(base, room - len(f"-{counter}")) + f"-{counter}" for counter in itertools.count(2))


def write_zip(
    path: Path,
    members: Sequence[tuple[str, Path | None]],
    previous: Path | None = None,
    abandon: Callable[[], bool] = never,
) -> None:
    """Write the session ZIP atomically from (arcname, source) pairs.

    A source of None copies that member from the `previous` ZIP (often the very
    file being replaced: results of earlier runs may exist only there).
    `abandon` is asked between chunks: once it says True, Abandoned is raised
    and the temp file removed, so a writer can be stopped within a chunk.
    """
    _check_names([arcname for arcname, _ in members])
    with durable.replacing(path) as out, _open_previous(previous) as old:
        # Stored, not deflated: PNG, WebP and AVIF are compressed already, so deflate
        # would burn CPU for nothing, and stored members can be streamed out as-is.
        with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
            for arcname, source in members:
                if source is None:
                    _copy_member(archive, old, arcname, previous, abandon)
                else:
                    _add_file(archive, source, arcname, abandon)


def _check_names(arcnames: Sequence[str]) -> None:
    # Raised, not asserted: `python -O` strips asserts, and these guard extraction paths.
    for arcname in arcnames:
        parts = arcname.split("/")
        if "\\" in arcname or any(part in ("", ".", "..") for part in parts):
            raise ValueError(f"ZIP member name {arcname!r} is not relative and normalised")
    if len(set(arcnames)) != len(arcnames):
        raise ValueError("ZIP member names repeat")


@contextlib.contextmanager
def _open_previous(previous: Path | None) -> Iterator[zipfile.ZipFile | None]:
    if previous is None or not previous.exists():
        yield None
        return
    with zipfile.ZipFile(previous) as old:
        yield old


def _copy_member(
    archive: zipfile.ZipFile,
    old: zipfile.ZipFile | None,
    arcname: str,
    previous: Path | None,
    abandon: Callable[[], bool],
) -> None:
    info = _previous_info(old, arcname, previous)
    copy = zipfile.ZipInfo(arcname, info.date_time)
    copy.external_attr = info.external_attr
    copy.file_size = info.file_size  # lets zipfile choose ZIP64 up front for huge members
    with old.open(info) as src, archive.open(copy, "w") as dst:  # reading checks the CRC
        _copy(src, dst, abandon)


def _previous_info(old: zipfile.ZipFile | None, arcname: str, previous: Path | None) -> zipfile.ZipInfo:
    try:
        if old is not None:
            return old.getinfo(arcname)
    except KeyError:
        pass
    raise MissingMemberError(f"ZIP member {arcname!r} has no source file and is not in the previous ZIP ({previous})")


def _add_file(archive: zipfile.ZipFile, source: Path, arcname: str, abandon: Callable[[], bool]) -> None:
    with open(source, "rb") as src:  # open first: a folder fails here instead of becoming an entry
        info = zipfile.ZipInfo.from_file(source, arcname, strict_timestamps=False)
        info.compress_type = zipfile.ZIP_STORED
        with archive.open(info, "w") as dst:
            _copy(src, dst, abandon)


def _copy(src: BinaryIO, dst: BinaryIO, abandon: Callable[[], bool]) -> None:
    """shutil.copyfileobj, asking `abandon` before each chunk."""
    while chunk := src.read(CHUNK_BYTES):
        if abandon():
            raise Abandoned("the daemon is stopping")
        dst.write(chunk)
