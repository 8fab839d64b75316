"""How the daemon names what it makes from a dropped name: items, sessions and their numbered twins.

Two promises hold for every name made here. It is valid UTF-8 text, so the
status JSON stays strict; and no part of it is longer than a Linux file name
may be (NAME_MAX, 255 bytes), so the archive, the retry marker and the ZIP's
extracted file can all be created. A name that would grow past that, by %XX
escapes or a " (2)" twin number, loses characters from the end of its stem;
its extension and its number are kept.
"""

from __future__ import annotations

import os
import posixpath
import re

NAME_MAX = 255  # bytes in one path component on Linux filesystems
SESSION_NAME_MAX = NAME_MAX - len(".json")  # the session's status file must fit too


def display(name: str) -> str:
    """A file name as valid UTF-8 text: each byte that is not UTF-8 is shown as %XX.

    Not a backslash escape: ZIP readers on Windows take a backslash for a folder.
    """
    text = os.fsencode(name).decode("utf-8", "surrogateescape")
    return "".join(f"%{ord(c) - 0xDC00:02X}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def cut(text: str, limit: int) -> str:
    """text shortened to at most `limit` UTF-8 bytes, never splitting a character or a %XX escape."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    shortened = data[: max(0, limit)].decode("utf-8", "ignore")
    return re.sub(r"%[0-9A-F]?$", "", shortened)  # half an escape would name a different byte


def fitted(name: str, suffix: str = "", limit: int = NAME_MAX) -> str:
    """One path component with `suffix` put before its extension, shortened to `limit` bytes.

    fitted("photo.jpg") is "photo.jpg"; fitted("photo.jpg", " (2)") is
    "photo (2).jpg"; only the stem loses characters when the whole is too long.
    """
    stem, ext = posixpath.splitext(name)
    if len(ext.encode()) > limit // 2:  # not an extension worth keeping: a dot deep in a long name
        stem, ext = name, ""
    room = limit - len((suffix + ext).encode())
    return cut(stem, room) + suffix + ext


def fitted_path(relative: str) -> str:
    """Every part of a relative name fitted to NAME_MAX."""
    return "/".join(fitted(part) for part in relative.split("/"))


def twin(name: str, n: int) -> str:
    """The n-th name for a second file of the same name: "a/photo.jpg" -> "a/photo (2).jpg"."""
    folder, _, last = name.rpartition("/")
    return (folder + "/" if folder else "") + fitted(last, f" ({n})")


def session_name(base: str, n: int) -> str:
    """The session for a source folder, numbered from 2 when the name is taken: "catalog", "catalog-2"."""
    suffix = f"-{n}" if n > 1 else ""
    return cut(base, SESSION_NAME_MAX - len(suffix.encode())) + suffix
