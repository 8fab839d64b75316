"""The package's shape: its modules import one another without a cycle, and its folders import downhill.

Read from the source with ast, nothing imported: every import statement counts,
the ones inside functions and under `if TYPE_CHECKING:` too, since each is a
dependency someone must understand. `from bgremover.x import y` depends on the
module bgremover.x.y when there is one, else on bgremover.x. An empty package
__init__ holds nothing to depend on, so an import of it counts as nothing.
"""

from __future__ import annotations

import ast
import functools
import re
from collections import deque
from pathlib import Path

import pytest

from tests.conftest import REPO

PACKAGE = REPO / "daemon" / "bgremover"

# The layers, lowest first. A unit is a folder of the package (cli, queue, ...) or a module
# at its root (settings, contract, ...); a unit may import only units of its own layer or below.
LAYERS = [
    (
        "leaves",
        {
            "logs",
            "durable",
            "exits",
            "backoff",
            "address",
            "brokerurl",
            "version",
            "formats",
            "states",
            "options",
            "arguments",
            "runnertable",
        },
    ),
    ("the contract", {"contract"}),
    ("settings", {"settings"}),
    ("stores and steps", {"queue", "intake", "imaging", "recipes", "models", "outbox", "service", "review"}),
    ("jobs", {"job", "runners"}),
    ("the supervisor", {"supervisor"}),
    ("what the clients share", {"status", "api", "bgremover", "settingsdocs", "tuning"}),
    ("clients", {"cli", "web", "bench"}),
    ("the entry point", {"main", "__main__"}),
]
# Modules that are a unit apart from their folder: the item and session states are a leaf.
MODULE_UNITS = {"bgremover.queue.states": "states"}
LEAVES = {"leaves"}
CLIENTS = {"cli", "web", "bench"}
# The ways of running jobs, as the runners' table names them, and the fork server the local one starts.
CONCRETE_RUNNERS = ("bgremover.runners.local", "bgremover.runners.celery", "bgremover.runners.forkserver")


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    """Every module of the package by its dotted name; a package by its __init__."""
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


@functools.cache
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


@functools.cache  # read once per run; a test that plants an edge builds its own copy
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
    assert graph["bgremover.__main__"] == {"bgremover.main"}, "the imports were not read as they are written"

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


# ---------------------------------------------------------------- the layers


def unit(module: str) -> str:
    """The folder (or root module) a module belongs to, by the table's names."""
    if module in MODULE_UNITS:
        return MODULE_UNITS[module]
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def layer(name: str) -> int:
    return next(index for index, (_, units) in enumerate(LAYERS) if name in units)


def layering_faults(graph: dict[str, set[str]]) -> list[str]:
    """Every import that breaks a layering rule, as `importer -> imported: which rule`."""
    faults = []
    units = {(unit(a), unit(b)) for a, targets in graph.items() for b in targets}
    for importer, targets in sorted(graph.items()):
        for imported in sorted(targets):
            fault = edge_fault(importer, imported)
            if fault:
                faults.append(f"{importer} -> {imported}: {fault}")
    for low, high in sorted(units):
        if low < high and low != high and (high, low) in units:
            faults.append(f"{low} and {high} import each other")
    return faults


def edge_fault(importer: str, imported: str) -> str | None:
    """Which rule one import breaks, if any."""
    source, target = unit(importer), unit(imported)
    if source == target:
        return None
    if LAYERS[layer(source)][0] in LEAVES:
        return f"{source} is a leaf: it imports nothing of ours"
    if layer(target) > layer(source):
        return f"{LAYERS[layer(source)][0]} ({source}) import upward, from {LAYERS[layer(target)][0]} ({target})"
    if source in CLIENTS and target in CLIENTS:
        return f"the clients are siblings: {source} imports nothing of {target}"
    if source == "supervisor" and imported.startswith(CONCRETE_RUNNERS):
        return "the supervisor knows runners only through runners/api.py and the runners' table"
    return None


def test_every_unit_of_the_package_has_a_layer():
    graph, _ = import_graph()
    for module in graph:
        assert any(unit(module) in units for _, units in LAYERS), f"{module} ({unit(module)}) is in no layer"


def test_the_folders_import_downhill():
    graph, where = import_graph()
    faults = layering_faults(graph)
    written = {f"{a} -> {b}": at for (a, b), at in where.items()}
    described = [f"{fault}\n      written at {written.get(fault.partition(':')[0], '?')}" for fault in faults]
    assert not faults, f"{len(faults)} import(s) against the layers:\n    " + "\n    ".join(described)


@pytest.mark.parametrize(
    ("importer", "imported", "rule"),
    [
        ("bgremover.queue.store", "bgremover.supervisor.loop", "import upward"),
        ("bgremover.runners.local", "bgremover.cli.commands", "import upward"),
        ("bgremover.durable", "bgremover.settings", "is a leaf"),
        ("bgremover.settings", "bgremover.runners", "import upward"),
        ("bgremover.runnertable", "bgremover.runners.api", "is a leaf"),
        ("bgremover.queue.states", "bgremover.durable", "is a leaf"),
        ("bgremover.web.page", "bgremover.cli.batch", "the clients are siblings"),
        ("bgremover.bench.main", "bgremover.web.server", "the clients are siblings"),
        ("bgremover.cli.batch", "bgremover.bench.main", "the clients are siblings"),
        ("bgremover.cli.commands", "bgremover.web.server", "the clients are siblings"),
        ("bgremover.cli.arguments", "bgremover.bench.slots", "the clients are siblings"),
        ("bgremover.web.server", "bgremover.main", "import upward"),
        ("bgremover.supervisor.dispatch", "bgremover.runners.forkserver", "the supervisor knows runners only"),
        ("bgremover.supervisor.loop", "bgremover.runners.celery.runner", "the supervisor knows runners only"),
    ],
)
def test_a_planted_import_against_the_layers_is_reported(importer, imported, rule):
    graph, _ = import_graph()
    assert imported not in graph[importer], "plant an edge the package does not have"
    planted = {**graph, importer: graph[importer] | {imported}}
    faults = layering_faults(planted)
    assert [fault for fault in faults if fault.startswith(f"{importer} -> {imported}: ") and rule in fault], faults


def test_a_planted_pair_importing_each_other_is_reported():
    graph, _ = import_graph()
    planted = {**graph, "bgremover.imaging.matting": graph["bgremover.imaging.matting"] | {"bgremover.job.process"}}
    assert "imaging and job import each other" in layering_faults(planted)


def test_the_architecture_page_lists_every_module_and_no_other():
    """docs/architecture.md's table of modules says what each one holds: it names each module that exists, once."""
    table = re.findall(r"^\| `([^`]+\.py)` \|", (REPO / "docs" / "architecture.md").read_text(), re.M)
    present = {str(path.relative_to(PACKAGE)) for path in modules().values() if not is_empty(path)}
    assert table, "no table of modules found"
    assert sorted(set(table) - present) == [], "the page names modules that are gone"
    assert sorted(present - set(table)) == [], "modules the page does not name"
    assert len(table) == len(set(table)), "a module is named twice"
