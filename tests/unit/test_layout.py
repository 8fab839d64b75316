"""The package's shape: its modules import one another without a cycle.

Read from the source with ast, nothing imported: every import statement counts,
the ones inside functions and under `if TYPE_CHECKING:` too, since each is a
dependency someone must understand. `from bgremover.x import y` depends on the
module bgremover.x.y when there is one, else on bgremover.x. An empty package
__init__ holds nothing to depend on, so an import of it counts as nothing.
"""

from __future__ import annotations

import ast
from collections import deque
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "daemon" / "bgremover"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name; a package by its __init__."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def is_empty(path: Path) -> bool:
    """A file with nothing in it but a docstring: it defines and imports nothing."""
    body = ast.parse(path.read_text()).body
    return all(isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) for node in body)


def imported(node: ast.Import | ast.ImportFrom, name: str, path: Path, known: dict[str, Path]) -> list[str]:
    """The package's modules that one import statement in module `name` depends on."""
    if isinstance(node, ast.Import):
        targets = [alias.name for alias in node.names]
    else:
        if node.level:  # relative: from the package of this module, `level` steps up
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    found = []
    for target in targets:
        while target and target not in known:  # `import bgremover.x.y` of a name inside a module
            target = target.rpartition(".")[0]
        if target and target != name and not is_empty(known[target]):
            found.append(target)
    return found


def import_graph() -> tuple[dict[str, set[str]], dict[tuple[str, str], str]]:
    """Each module's dependencies among the package's modules, and where each edge is written (file:line)."""
    known = modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    where: dict[tuple[str, str], str] = {}
    for name, path in known.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for target in imported(node, name, path, known):
                    graph[name].add(target)
                    where.setdefault((name, target), f"{path.relative_to(REPO)}:{node.lineno}")
    return graph, where


def tangles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The groups of modules that import one another, in a circle (Tarjan's strongly connected components)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for after in sorted(graph[node]):
            if after not in index:
                visit(after)
                low[node] = min(low[node], low[after])
            elif after in stack:
                low[node] = min(low[node], index[after])
        if low[node] == index[node]:
            group = {stack.pop()}
            while node not in group:
                group.add(stack.pop())
            if len(group) > 1:
                groups.append(group)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return groups


def shortest_cycle(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """The shortest way round from the group's first module back to itself, breadth first."""
    start = min(group)
    paths = {start: [start]}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for after in sorted(graph[node] & group):
            if after == start:
                return paths[node] + [start]
            if after not in paths:
                paths[after] = paths[node] + [after]
                queue.append(after)
    raise AssertionError(f"{sorted(group)} is no cycle")


def test_the_package_has_no_import_cycle():
    graph, where = import_graph()
    assert graph["bgremover.__main__"] == {"bgremover.cli.main"}, "the imports were not read as they are written"

    groups = tangles(graph)

    described = []
    for group in groups:
        cycle = shortest_cycle(graph, group)
        described.append(
            " -> ".join(cycle)
            + "\n      written at "
            + ", ".join(where[step] for step in zip(cycle, cycle[1:]))
            + (f"\n      and round with it: {', '.join(sorted(group - set(cycle)))}" if group - set(cycle) else "")
        )
    assert not groups, f"{len(groups)} import cycle(s) among the package's modules:\n    " + "\n    ".join(described)
