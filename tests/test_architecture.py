"""The design's boundaries (docs/architecture.md), read from the source: no import circle,
each package importing only what it may, and no branch on a task's name outside tasks/.
Nothing is imported; the modules are parsed."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from graphlib import CycleError, TopologicalSorter
from pathlib import Path

import pytest

from tasks.registry import BUILTIN_TASKS

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("cmr", "tasks", "privacy", "fairness", "client", "server", "cmrfl")
# package → top-level names it never imports, anywhere in its modules (docs/architecture.md)
NEVER_IMPORTS = {
    "cmr": {"flwr", "tasks", "privacy", "fairness", "client", "server", "cmrfl"},
    "tasks": {"flwr", "client", "server", "cmrfl"},
    "privacy": {"tasks", "fairness", "client", "server"},
    "fairness": {"torch", "flwr", "tasks", "client", "server", "cmrfl"},
    "client": {"server"},
    "server": {"client"},
}


def modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
            found[name] = path
    return found


def is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_run_on_import(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """Imports executed when the module is imported: not in functions, not for type checkers."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not is_type_checking(node.test):
                yield from imports_run_on_import(node.body)
            yield from imports_run_on_import(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from imports_run_on_import(block)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from imports_run_on_import(node.body)


def imported_names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level:  # the project imports absolutely; a relative import would need resolving here
        raise AssertionError(f"relative import at line {node.lineno}")
    return [f"{node.module}.{alias.name}" for alias in node.names]


def test_no_module_imports_itself_back_when_imported():
    known = modules()

    def resolve(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    graph = {
        name: {
            target
            for node in imports_run_on_import(ast.parse(path.read_text()).body)
            for imported in imported_names(node)
            if (target := resolve(imported)) is not None and target != name
        }
        for name, path in known.items()
    }
    try:
        TopologicalSorter(graph).prepare()
    except CycleError as cycle:
        pytest.fail(f"import circle: {' -> '.join(cycle.args[1])}")


@pytest.mark.parametrize("package", sorted(NEVER_IMPORTS))
def test_each_package_imports_only_what_the_design_allows(package: str):
    forbidden = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for name in imported_names(node):
                    if name.split(".")[0] in NEVER_IMPORTS[package]:
                        forbidden.append(f"{path.relative_to(ROOT)}:{node.lineno} imports {name}")
    assert forbidden == []


def test_nothing_outside_tasks_branches_on_a_tasks_name():
    """A task declares what differs (tasks/base.py); the platform never asks which task it is."""
    names = set(BUILTIN_TASKS)
    branches = []
    for package in (p for p in PACKAGES if p != "tasks"):
        for path in sorted((ROOT / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Compare):
                    operands = [node.left, *node.comparators]
                    constants = {o.value for o in operands if isinstance(o, ast.Constant)}
                    constants |= {
                        e.value
                        for o in operands
                        if isinstance(o, ast.Tuple | ast.List | ast.Set)
                        for e in o.elts
                        if isinstance(e, ast.Constant)
                    }
                    if constants & names:
                        branches.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert branches == []
