"""Job tickets: a `bgremover.toml` inside a dropped folder sets how that folder's images come out.

A ticket may set only what shapes a result (the output format, the options,
the model and the encoders' settings), never how the daemon runs. It is read
when the folder's session opens; a ticket that does not parse or sets a bad
value is refused as a whole, with a sentence naming the problem, because
guessing what someone meant would ship a catalog in the wrong format.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from pydantic import ValidationError

from bgremover.options import ImageOptions, settings_model, ticket_names
from bgremover.settings import Settings, describe

TICKET_NAME = "bgremover.toml"


class TicketError(ValueError):
    """A ticket that cannot be used; the message says why in one sentence."""


def session_options(settings: Settings, ticket: dict | None) -> dict:
    """The output settings a session runs with: the daemon's, with its folder's ticket over them."""
    return {**{name: getattr(settings, name) for name in ticket_names()}, **(ticket or {})}


def makes_masks(settings: Settings, ticket: dict | None, output: str | None = None) -> bool:
    """Whether a session's items each get a mask member beside the cutout (output "both").

    `output` is what the session stored when it opened: a later change of the
    setting must not give its done items masks they never had, nor take them away.
    """
    return (output or session_options(settings, ticket)["output"]) == "both"


def read_ticket(folder: Path, base: dict | None = None) -> dict | None:
    """The settings the folder's ticket sets, validated over `base` (the daemon's own); None without a ticket."""
    path = folder / TICKET_NAME
    try:
        text = path.read_bytes().decode("utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise TicketError(f"the job ticket {TICKET_NAME} could not be read: {exc}") from None
    try:
        values = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise TicketError(f"the job ticket {TICKET_NAME} is not valid TOML: {exc}") from None
    return validated(values, base)


def validated(values: dict, base: dict | None = None, options: type[ImageOptions] = ImageOptions) -> dict:
    """The ticket's values checked against the same rules as the daemon's own settings.

    Checked together with `base`, the daemon's values for what the ticket leaves
    out: a ticket asking for JPEG is fine where the daemon's background is white.
    """
    allowed = ticket_names(options)
    refused = sorted(set(values) - set(allowed))
    if refused:
        raise TicketError(
            f"the job ticket {TICKET_NAME} sets {', '.join(map(repr, refused))}, which a ticket cannot "
            f"set; it may set {', '.join(allowed)}"
        )
    try:
        # The image options' own rules, on the values alone: no environment, no config file.
        checked = settings_model(options).model_validate({**(base or {}), **values})
    except ValidationError as exc:
        problems = describe(exc).replace("\n", "; ")
        raise TicketError(f"the job ticket {TICKET_NAME} is invalid: {problems}") from None
    return {name: getattr(checked, name) for name in values}
