"""The README stays short and the docs/ pages hold the manual: linked, whole, and with commands that run as written.

Each ```sh block of a page that names nothing it needs (see tests/support/docs.py)
runs in bash, line by line under `set -e`, in a fresh folder that holds one
photo, `photo.jpg`, with this venv's `bgremover` first on PATH. Blocks that
need a daemon, the network, systemd, Redis, root or the checkout say so in
their info string and are read by the tests of what they do
(tests/packaging/test_install.py runs the systemd install).
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest

from tests.conftest import PHOTOS, REPO
from tests.support import docs

README_MAX_LINES = 300

# Every section heading the README had when it held the whole manual: each must
# still be a heading, in the README or on a docs page.
HEADINGS = [
    "Quick start",
    "Architecture",
    "The layers",
    "Every module",
    "The item states",
    "Tests",
    "Commands",
    "Python API",
    "Coming from rembg",
    "Reading `status`",
    "Web page",
    "The folders",
    "Retry and cancel",
    "What happens on bad input",
    "What can go wrong",
    "Outputs",
    "Models",
    "IS-Net, fetched on request",
    "rembg's models, imported",
    "Settings",
    "Hooks",
    "Metrics",
    "Running it under systemd",
    "Logs",
    "Several jobs at once",
    "Several machines",
    "Performance",
]

# docs/settings.md is generated from the settings' table, links included; its
# files are checked like every page's, its anchors by its generator's test.
ANCHORS_NOT_CHECKED = {"settings.md"}


def links(page: Path) -> list[str]:
    """The targets of the page's links and pictures, outside fenced code."""
    text = re.sub(r"^```.*?^```$", "", page.read_text("utf-8"), flags=re.M | re.S)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    return re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")


def runnable() -> list[tuple[Path, int, docs.Block]]:
    found = []
    for page in docs.pages():
        for number, block in enumerate(docs.code_blocks(page.read_text("utf-8"))):
            if not block.needs:
                found.append((page, number, block))
    return found


def test_the_readme_has_at_most_300_lines():
    count = len(docs.README.read_text("utf-8").splitlines())
    assert count <= README_MAX_LINES, f"README.md has {count} lines"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {target.split("#", 1)[0] for target in links(docs.README)}
    pages = {f"docs/{page.name}" for page in docs.DOCS.glob("*.md")}
    assert pages - linked == set()


def test_every_section_the_readme_had_is_still_a_heading_somewhere():
    found = {heading.text for page in docs.pages() for heading in docs.headings(page.read_text("utf-8"))}
    assert [heading for heading in HEADINGS if heading not in found] == []


@pytest.mark.parametrize("page", docs.pages(), ids=lambda page: page.name)
def test_every_relative_link_points_to_a_file_and_a_heading_there(page):
    broken = []
    for target in links(page):
        if re.match(r"[a-z]+:", target):
            continue  # https:, mailto:
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists() or not file.is_relative_to(REPO):
            broken.append(target)
        elif anchor and file.suffix == ".md" and page.name not in ANCHORS_NOT_CHECKED:
            if anchor not in {slug(h.text) for h in docs.headings(file.read_text("utf-8"))}:
                broken.append(target)
    assert broken == []


def test_every_shell_block_says_only_what_the_docs_test_knows_it_may_need():
    unknown = {
        f"{page.name}: {sorted(block.needs - docs.NEEDS.keys())}"
        for page in docs.pages()
        for block in docs.code_blocks(page.read_text("utf-8"))
        if block.needs - docs.NEEDS.keys()
    }
    assert unknown == set()


def test_some_docs_commands_run_as_written():
    assert len(runnable()) >= 3, "the pages' runnable blocks were lost, or all marked as needing something"


@pytest.mark.parametrize(
    ("page", "number", "block"), runnable(), ids=[f"{page.name}-{number}" for page, number, _ in runnable()]
)
def test_each_shell_block_that_needs_nothing_runs_as_written(tmp_path, page, number, block):
    shutil.copy(PHOTOS / "coffee.jpg", tmp_path / "photo.jpg")
    result = docs.shell(
        "set -euo pipefail\n" + block.text, tmp_path, timeout=120, path_first=Path(sys.executable).parent
    )
    assert result.returncode == 0, f"{page.name}, block {number}:\n{block.text}{result.stdout}{result.stderr}"
