"""What a client asks of a review: approve an item, run it again with other options, or give it a corrected mask.

The page and the command line both call these. Like a retry, each only
writes a marker the daemon reads (supervisor/reviews.py), never the queue, so
a decision works the same whether the daemon runs now or starts later:

    review/approve/SESSION/NAME   JSON {"by": "ann"} (or empty): the result is fine as it is
    review/retry/SESSION/NAME     JSON {"options": {"model": "isnet-medium"}, "by": ...}: run it again so
    review/mask/SESSION/NAME      a mask image: it becomes the item's alpha, in a job that runs no model

Each is written under a dot-name and renamed into place, so the daemon never
reads half a marker. What cannot be asked (no such item, an item not done, an
option the settings' rules refuse, a model not installed) is refused here
with one sentence, before anything is written.
"""

from __future__ import annotations

import json
from pathlib import Path

from bgremover import durable
from bgremover.intake.tickets import TicketError, validated
from bgremover.models.manifest import ModelError, find_model_spec, models_dir, read_manifest
from bgremover.queue.states import REVIEWABLE
from bgremover.queue.store import Item, Store
from bgremover.settings import Settings

FOLDERS = {"approved": "approve", "retried": "retry", "corrected": "mask"}  # decision -> marker folder
MAX_MASK_BYTES = 256 * 1024 * 1024


class ReviewRefused(Exception):
    """A review that cannot be asked for: the sentence says why."""


def marker(settings: Settings, decision: str, session: str, name: str) -> Path:
    """review/FOLDER/SESSION/NAME: the marker of one decision on one item."""
    return settings.review_dir / FOLDERS[decision] / session / name


def reviewable(store: Store, session: str, name: str) -> Item:
    """The item a review names, if it can be reviewed: it exists and is done."""
    if store.session(session) is None:
        raise ReviewRefused(f"no session named {session!r}")
    item = store.item_named(session, name)
    if item is None:
        raise ReviewRefused(f"session {session!r} has no item named {name!r}")
    if item.status not in REVIEWABLE:
        raise ReviewRefused(f"{session}/{name} is {item.status.value}: only a done item can be reviewed")
    return item


def flagged(store: Store, sessions: list[str] | None = None) -> list[Item]:
    """The done items (of `sessions`, if given) that wait for a person's look: flagged, and not yet decided on."""
    return store.flagged_items(sessions)


def approve(settings: Settings, store: Store, session: str, name: str, by: str | None = None) -> Path:
    item = reviewable(store, session, name)
    return write(marker(settings, "approved", item.session, item.name), {"by": by})


def retry(settings: Settings, store: Store, session: str, name: str, options: dict, by: str | None = None) -> Path:
    """Run a done item again with `options` over its session's (another model, other edges ...)."""
    item = reviewable(store, session, name)
    checked = checked_options(settings, options)
    return write(marker(settings, "retried", item.session, item.name), {"options": checked, "by": by})


def correct(settings: Settings, store: Store, session: str, name: str, mask: bytes) -> Path:
    """The item's alpha becomes `mask` (an image file's bytes, greyscale or with alpha, any size of its shape)."""
    item = reviewable(store, session, name)
    if not mask:
        raise ReviewRefused("the mask file is empty")
    if len(mask) > MAX_MASK_BYTES:
        raise ReviewRefused(f"the mask file is over {MAX_MASK_BYTES >> 20} MiB")
    target = marker(settings, "corrected", item.session, item.name)
    target.parent.mkdir(parents=True, exist_ok=True)
    durable.atomic_write(target, mask)
    return target


def installed_models(settings: Settings) -> list[str]:
    """The models a retry may name: the bundled ones and those in the models folder."""
    return sorted(set(read_manifest(models_dir())) | set(read_manifest(settings.models_folder, missing_ok=True)))


def checked_options(settings: Settings, options: dict) -> dict:
    """The options a review retry may set: those a job ticket may, by the same rules, and an installed model."""
    if not options:
        raise ReviewRefused("a retry needs at least one option to change, such as model or edges")
    try:
        checked = validated(options)
    except TicketError as exc:
        raise ReviewRefused(str(exc).replace("the job ticket bgremover.toml", "the retry's options")) from None
    if "model" in checked:
        try:
            find_model_spec(checked["model"], settings.models_folder, verify=False)
        except ModelError as exc:
            raise ReviewRefused(str(exc)) from None
    return checked


def write(target: Path, content: dict) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    durable.atomic_write(target, (json.dumps(content) + "\n").encode("utf-8"))
    return target


def read_marker(path: Path) -> dict:
    """A JSON marker's content, for the daemon; {} for an empty one (a touched file is a plain approval)."""
    if path.is_symlink():
        raise ValueError("a review marker is a file, never a link")  # never followed out of the root
    text = path.read_text("utf-8").strip()
    content = json.loads(text) if text else {}
    if not isinstance(content, dict):
        raise ValueError("a review marker holds one JSON object")
    return content
