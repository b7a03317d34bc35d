"""The package's shape: no import cycles, layers that only import downwards, one owner of the run's state.

Every ``import`` of the package counts, also those inside functions and under ``TYPE_CHECKING``: a cycle hidden
in a function is still a cycle a reader has to untangle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pytest_dsbench"

LAYERS: tuple[tuple[str, ...], ...] = (
    ("__init__", "errors", "_atomic", "_http", "sse", "promtext", "progress", "testing", "engines.registry"),
    ("metrics", "measures"),
    ("options",),
    ("thresholds", "workloads"),
    ("engines", "eplb", "session"),
    ("results", "gate"),
    ("conformance", "reference_outputs", "load", "methods", "accuracy", "modules"),
    ("history",),
    ("report",),
    ("selection", "run", "fixtures", "plugin", "cli", "__main__"),
)
"""Bottom to top: a module may import its own layer and the layers below it, never one above. An entry names a
top-level module or package, or one submodule of a package (``engines.registry``, the list of engine names that
options and thresholds validate against) that sits lower than the rest of its package."""

RUN_OWNERS = {"run", "fixtures", "plugin", "options"}
"""The only modules that may touch the pytest session's state (``config.stash``, ``pytest.Config``): the run,
its fixtures and hooks, and the options, which are read from pytest's command line and ini."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imported(path: Path, known: set[str]) -> Iterator[str]:
    """The package's modules that ``path`` imports (``from pkg import mod`` names the module, not the package)."""
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("pytest_dsbench"):
            for alias in node.names:
                candidate = f"{node.module}.{alias.name}"
                yield candidate if candidate in known else node.module
        elif isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names if alias.name.startswith("pytest_dsbench"))


def import_graph() -> dict[str, set[str]]:
    found = modules()
    known = set(found)
    return {name: {m for m in imported(path, known) if m in known and m != name} for name, path in found.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def top_level(module: str) -> str:
    """``pytest_dsbench.history.compare`` -> ``history``; the package itself is ``__init__``."""
    return module.split(".")[1] if "." in module else "__init__"


def layer_of(module: str) -> int:
    parts = module.split(".")[1:3]
    for name in (".".join(parts), top_level(module)):
        for number, layer in enumerate(LAYERS):
            if name in layer:
                return number
    raise AssertionError(f"{module} is in no layer of {Path(__file__).name}'s LAYERS: add it where it belongs")


def test_the_package_has_no_import_cycles() -> None:
    assert cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]


def test_every_module_belongs_to_a_layer() -> None:
    for module in modules():
        layer_of(module)


def test_no_module_imports_a_layer_above_its_own() -> None:
    upward = [
        f"{source} (layer {layer_of(source)}) imports {target} (layer {layer_of(target)})"
        for source, targets in sorted(import_graph().items())
        for target in sorted(targets)
        if layer_of(target) > layer_of(source)
    ]
    assert upward == []


@pytest.mark.parametrize("needle", ["config.stash", "StashKey", "pytest.Config"])
def test_only_the_run_and_its_fixtures_touch_the_pytest_session(needle: str) -> None:
    readers = sorted(
        name for name, path in modules().items()
        if top_level(name) not in RUN_OWNERS and needle in path.read_text()
    )
    assert readers == [], f"{needle} used below the plugin in {readers}; hand them what they need instead"
