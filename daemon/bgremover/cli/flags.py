"""The settings a user changes most, as flags of `run`, `remove` and `bench`: one table, spelled as rembg spells them.

A flag is only another way to give a setting: its value goes to the Settings
model like the environment's and the file's (flags win over both), so it is
checked by the same rules and refused with the same one-line error.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bgremover.options import TRANSPARENT, ImageOptions, declared
from bgremover.settings import SettingsError

OPAQUE, CLEAR = 255, 0


def as_given(words: str) -> str:
    return words


def rgba_background(words: Sequence[str]) -> str:
    """rembg's `-bgc R G B A` as the background setting: A=255 that colour, A=0 transparent.

    A background here is either opaque or absent (the cutout keeps its own
    alpha over it); a half-transparent one cannot be written, so it is refused
    rather than rounded to one or the other.
    """
    if not all(word.isdigit() and int(word) <= 255 for word in words):
        raise SettingsError(f"-bgc takes four whole numbers from 0 to 255 (R G B A), got {' '.join(words)}")
    red, green, blue, alpha = (int(word) for word in words)
    if alpha == CLEAR:
        return TRANSPARENT
    if alpha != OPAQUE:
        raise SettingsError(f"-bgc alpha must be 255 (an opaque background) or 0 (transparent), got {alpha}")
    return f"#{red:02x}{green:02x}{blue:02x}"


@dataclass(frozen=True)
class SettingFlag:
    names: tuple[str, ...]  # rembg's spelling first where it has one
    setting: str
    help: str
    metavar: str | tuple[str, ...] | None = None
    nargs: int | None = None
    switch: str | None = None  # a flag without a value: it sets the setting to this
    value: Callable = as_given  # what the flag's words are as the setting's value

    @property
    def dest(self) -> str:
        return "flag_" + self.names[-1].lstrip("-").replace("-", "_")


# rembg's spellings, each another way to give an image option than the flags the option declares.
REMBG_FLAGS = (
    SettingFlag(("-om", "--only-mask"), "output", "the mask alone, as a grey PNG (output = mask)", switch="mask"),
    SettingFlag(
        ("-bgc",),
        "background",
        "a background colour: A=255 that colour, opaque; A=0 transparent (no other alpha)",
        metavar=("R", "G", "B", "A"),
        nargs=4,
        value=rgba_background,
    ),
)


def setting_flags(options: type[ImageOptions] = ImageOptions) -> tuple[SettingFlag, ...]:
    """rembg's spellings, then the flags each image option declares (bgremover/options.py)."""
    declared_flags = (SettingFlag(one.flags, one.name, one.help, one.metavar) for one in declared(options) if one.flags)
    return REMBG_FLAGS + tuple(declared_flags)


SETTING_FLAGS = setting_flags()
# Settings of the daemon alone: flags of `run` only.
DAEMON_FLAGS = (
    SettingFlag(
        ("--job-slots",),
        "job_slots",
        "how many jobs run at once, each a fresh process: a whole number or auto",
        metavar="N",
    ),
)
EXCLUSIVE = {"background"}  # two flags give it: only one may be used at a time


def add_setting_flags(
    parser: argparse.ArgumentParser,
    spelled_otherwise: set[str] = frozenset(),
    daemon: bool = False,
    options: type[ImageOptions] = ImageOptions,
) -> None:
    """The table's flags, less those whose spelling this command already uses; with `daemon`, the daemon's too."""
    group = parser.add_argument_group("settings", "each over its BGREMOVER_ variable and the config file")
    exclusive = {name: group.add_mutually_exclusive_group() for name in EXCLUSIVE}
    for flag in setting_flags(options) + (DAEMON_FLAGS if daemon else ()):
        if set(flag.names) & spelled_otherwise:
            continue
        where = exclusive.get(flag.setting, group)
        if flag.switch is not None:
            where.add_argument(
                *flag.names,
                dest=flag.dest,
                action="store_const",
                const=flag.switch,
                help=f"{flag.help} (setting: {flag.setting})",
            )
        else:
            where.add_argument(
                *flag.names,
                dest=flag.dest,
                metavar=flag.metavar,
                nargs=flag.nargs,
                help=f"{flag.help} (setting: {flag.setting})",
            )


def flag_settings(args: argparse.Namespace, options: type[ImageOptions] = ImageOptions) -> dict:
    """The settings the flags on this command line give, by setting name; raises SettingsError."""
    given = {}
    for flag in setting_flags(options) + DAEMON_FLAGS:
        words = getattr(args, flag.dest, None)
        if words is not None:
            given[flag.setting] = flag.value(words)
    return given


def given(args: argparse.Namespace, setting: str) -> bool:
    """Whether a flag on this command line gave `setting`."""
    return any(getattr(args, flag.dest, None) is not None for flag in SETTING_FLAGS if flag.setting == setting)
