"""fairness/ works on plain numbers and on any task: it loads neither torch nor Flower, names no task,
and its modules import one another one way only."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FAIRNESS = ROOT / "fairness"
MODULES = sorted(path.stem for path in FAIRNESS.glob("*.py") if path.stem != "__init__")


def test_fairness_imports_neither_torch_nor_flower_nor_the_tasks_nor_the_apps():
    code = (
        "import sys\n"
        + "".join(f"import fairness.{m}\n" for m in MODULES)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'flwr', 'tasks', 'server', 'client'))\n"
        + "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT)
    assert result.stdout.strip() == ""


def fairness_imports(module: str) -> set[str]:
    """The fairness modules that ``module`` imports, at the top or inside a function."""
    tree = ast.parse((FAIRNESS / f"{module}.py").read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "fairness":
                found |= {alias.name for alias in node.names}
            elif node.module.startswith("fairness."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found |= {alias.name.split(".")[1] for alias in node.names if alias.name.startswith("fairness.")}
    return found & set(MODULES)


def test_no_module_of_fairness_imports_itself_back_through_others():
    graph = {module: fairness_imports(module) for module in MODULES}

    def reaches(start: str, target: str, seen: set[str]) -> bool:
        for module in graph[start]:
            if module == target or (module not in seen and reaches(module, target, seen | {module})):
                return True
        return False

    circles = [module for module in MODULES if reaches(module, module, {module})]
    assert circles == [], f"import circles through {circles}"


def test_fairness_names_no_task():
    """Tasks bring their own audit spec (tasks/<name>/audit.py); fairness never looks one up by name."""
    task_names = {path.name for path in (ROOT / "tasks").iterdir() if (path / "__init__.py").is_file()}
    assert {"lge", "mapping"} <= task_names
    for module in MODULES:
        tree = ast.parse((FAIRNESS / f"{module}.py").read_text(encoding="utf-8"))
        strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
        assert not strings & task_names, f"fairness/{module}.py names a task: {strings & task_names}"
