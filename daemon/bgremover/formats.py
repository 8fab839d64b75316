"""The output formats and their file extensions: one table, shared by every module."""

from __future__ import annotations

from pathlib import Path

FORMAT_EXTENSIONS = {"png": ".png", "webp": ".webp", "avif": ".avif", "jpeg": ".jpg"}


def format_for_path(path: Path | str) -> str:
    """The output format named by a file's extension, e.g. 'webp' for x.WebP."""
    suffix = Path(path).suffix.lower()
    if suffix == ".jpeg":
        return "jpeg"
    for fmt, extension in FORMAT_EXTENSIONS.items():
        if suffix == extension:
            return fmt
    known = ", ".join(FORMAT_EXTENSIONS.values())
    raise ValueError(f"cannot tell the output format from '{Path(path).name}': the extension must be one of {known}")
