"""Images and folders for the recipe tests: small shapes the bundled model finds, one cut by the photo's frame."""

from __future__ import annotations

from pathlib import Path

from bgremover.intake.tickets import TICKET_NAME
from tests.support.images import encoded, shape_on_texture

QUICK = {"session_idle_seconds": 0.5, "stable_seconds": 0.1, "log_level": "info", "keep_originals": "false"}


def picture(seed: int, size: tuple[int, int] = (96, 72)) -> bytes:
    return encoded(shape_on_texture(size, seed=seed)[0], "JPEG", quality=92)


def at_the_edge() -> bytes:
    """The red disc with its left part cut off by the photo's frame: its subject touches the left edge."""
    image, _ = shape_on_texture((320, 240), seed=7)
    return encoded(image.crop((110, 0, 320, 240)), "JPEG", quality=92)


def drop_folder(root: Path, folder: str, files: dict[str, bytes], ticket: str | None = None) -> None:
    """A whole folder renamed into the inbox at once, as a careful copy tool does."""
    staging = root.parent / "staging" / folder
    for name, data in files.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        (staging / name).write_bytes(data)
    if ticket is not None:
        (staging / TICKET_NAME).write_text(ticket)
    staging.rename(root / "inbox" / folder)
