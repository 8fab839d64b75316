"""docs/settings.md and config/bgremover.toml, written from the settings' sections (bgremover/settings.py).

    python -m bgremover.settingsdocs          # write both files in this checkout
    python -m bgremover.settingsdocs --check  # exit 1 if either differs from what the sections say

Each setting's default, range and sentence live in its section alone; these
two files are only another way to read them.
"""

from __future__ import annotations

import re
import sys
import textwrap
from pathlib import Path

from pydantic.fields import FieldInfo

from bgremover.settings import SECTIONS

REPO = Path(__file__).resolve().parents[2]
DOCS, CONFIG = REPO / "docs" / "settings.md", REPO / "config" / "bgremover.toml"

DOCS_HEAD = """# Settings

Settings come from, highest first: command-line flags (`--root`), environment
variables `BGREMOVER_<NAME>` (for example `BGREMOVER_OUTPUT_FORMAT=webp`), a
TOML file (`--config FILE` or `BGREMOVER_CONFIG`; `config/bgremover.toml`
documents every key), and the defaults. The names are flat: the sections below
only group them.
"""
DOCS_TAIL = """
A bad value (say `BGREMOVER_OUTPUT_FORMAT=gif`, or a negative timeout) stops
start-up with one line naming the setting, and exit code 2.
"""
CONFIG_HEAD = """# Example settings for bgremover, written by `python -m bgremover.settingsdocs`
# from the settings' sections. Every key is optional; the values shown are the
# defaults, and those unset by default are shown commented out with an example.
# Use it with `bgremover run --config config/bgremover.toml` or
# BGREMOVER_CONFIG=/path/to/file. Environment variables BGREMOVER_<NAME> override
# this file, and command-line flags override both.
"""


def entries(section: type) -> list[tuple[str, FieldInfo, dict]]:
    """The section's own settings with their docs entries, less those for the test suite only."""
    own = [(name, info, info.json_schema_extra or {}) for name, info in section.model_fields.items()]
    return [(name, info, extra) for name, info, extra in own if not extra.get("internal")]


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return f"{value:g}"
    if isinstance(value, (tuple, list)):
        return "[" + ", ".join(toml_value(one) for one in value) + "]"
    return '"' + str(value) + '"'


def shown_default(info: FieldInfo, extra: dict) -> str:
    if extra.get("shown"):
        return f"`{extra['shown']}`" if info.default is not None and info.default_factory is None else extra["shown"]
    if info.default is None:
        return "none"
    return "`" + toml_value(info.default).strip('"') + "`"


def markdown() -> str:
    lines = [DOCS_HEAD]
    for title, section in SECTIONS.items():
        lines += [f"## {title}", "", "| setting | default | meaning |", "|---|---|---|"]
        for name, info, extra in entries(section):
            meaning = extra["doc"].replace("|", "\\|")
            lines.append(f"| `{name}` | {shown_default(info, extra)} | {meaning} |")
        lines.append("")
    return "\n".join(lines) + DOCS_TAIL


def plain(text: str) -> str:
    """A docs sentence as a TOML comment reads it: links as their words."""
    return re.sub(r"\[([^\]]+)\]\([^)]+\)", r"\1", text)


def toml() -> str:
    lines = [CONFIG_HEAD]
    for title, section in SECTIONS.items():
        lines += ["", f"# ---------------------------------------------------------------- {title}"]
        for name, info, extra in entries(section):
            lines += ["", *textwrap.wrap(plain(extra["doc"]), 86, initial_indent="# ", subsequent_indent="# ")]
            if info.default is None or info.default_factory is not None:
                lines.append(f"# {name} = {extra['example']}")
            else:
                lines.append(f"{name} = {toml_value(info.default)}")
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    wanted = {DOCS: markdown(), CONFIG: toml()}
    if "--check" in argv:
        drifted = [str(path) for path, text in wanted.items() if path.read_text("utf-8") != text]
        for path in drifted:
            print(f"{path} differs from the settings' sections: run python -m bgremover.settingsdocs", file=sys.stderr)
        return 1 if drifted else 0
    for path, text in wanted.items():
        path.write_text(text, "utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
