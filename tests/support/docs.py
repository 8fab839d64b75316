"""The README and the docs/ pages as the tests read them: sections by heading, shell blocks, and a clean shell.

A section is found by its heading's text in whichever page holds it, so a test
that reads the commands a user copies keeps reading them when a section moves
from the README to a docs page. A ```sh block may name, after its language,
what it needs beyond a shell in a fresh folder (```sh needs=daemon,network);
a block that names nothing runs as written (tests/packaging/test_docs.py).
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

README = REPO / "README.md"
DOCS = REPO / "docs"

# What a ```sh block may say it needs; a block that needs any of these is not run by the docs test.
NEEDS = {
    "daemon": "a running daemon or server, or the sessions one made",
    "network": "the network (pip, apt-get, a LAN address)",
    "systemd": "systemd as PID 1",
    "redis": "a Redis broker",
    "root": "root (sudo, apt-get, /etc)",
    "checkout": "the checkout as its working folder",
}


def pages() -> list[Path]:
    """The README, then every docs page."""
    return [README, *sorted(DOCS.glob("*.md"))]


@dataclass
class Heading:
    level: int
    text: str
    line: int  # its index in the page's lines


def headings(text: str) -> list[Heading]:
    """The page's headings, outside fenced code (where `# a comment` is no heading)."""
    found, fenced = [], False
    for index, line in enumerate(text.splitlines()):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (match := re.match(r"(#{1,6}) (.+)$", line)):
            found.append(Heading(len(match.group(1)), match.group(2).strip(), index))
    return found


def section(heading: str) -> str:
    """The text under `heading` (its exact words, at any level), to the next heading of the same or a higher level."""
    for page in pages():
        text = page.read_text("utf-8")
        lines, marks = text.splitlines(), headings(text)
        for number, mark in enumerate(marks):
            if mark.text == heading:
                after = [h.line for h in marks[number + 1 :] if h.level <= mark.level]
                return "\n".join(lines[mark.line + 1 : after[0] if after else len(lines)]) + "\n"
    raise LookupError(f"no page has the heading {heading!r}")


@dataclass
class Block:
    language: str
    needs: set[str]
    lines: list[str]

    @property
    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


def code_blocks(text: str, language: str = "sh") -> list[Block]:
    """The fenced blocks of `language`, in order, with what each says it needs."""
    blocks = []
    for info, body in re.findall(r"^```([^\n]*)\n(.*?)^```$", text, flags=re.M | re.S):
        words = info.split()
        if not words or words[0] != language:
            continue
        needs = set()
        for word in words[1:]:
            if word.startswith("needs="):
                needs |= set(word.removeprefix("needs=").split(","))
        blocks.append(Block(words[0], needs, body.splitlines()))
    return blocks


def shell(command: str, cwd: Path, timeout: float, path_first: Path | None = None) -> subprocess.CompletedProcess:
    """`command` in bash, in `cwd`, with no venv, PYTHONPATH or BGREMOVER_ setting of the test run's leaking in."""
    unset = ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME")
    env = {key: value for key, value in os.environ.items() if key not in unset and not key.startswith("BGREMOVER_")}
    if path_first is not None:
        env["PATH"] = f"{path_first}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        ["bash", "-c", command],
        check=False,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
