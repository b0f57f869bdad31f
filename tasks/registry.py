"""Tasks by name: the built-in ones, tasks registered at run time, and tasks that other
installed packages declare in the ``cmrfl.tasks`` entry-point group.

A consortium ships its own task as a package of its own, without editing cmrfl::

    [project.entry-points."cmrfl.tasks"]
    perfusion = "hospital_tasks.perfusion:PerfusionQuantification"

Every SuperNode and the ServerApp must have that package installed, as they have cmrfl.
Modules are imported only when their task is asked for, so that a process that never
trains (a SecAgg+ key exchange) does not import torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points

from tasks.base import Task

ENTRY_POINT_GROUP = "cmrfl.tasks"

# The built-in tasks: one line each, "module:class".
BUILTIN_TASKS = {
    "lge": "tasks.lge:LgeScarSegmentation",
    "mapping": "tasks.mapping:MotionRobustT1Mapping",
}

_registered: dict[str, Callable[[], Task]] = {}


class UnknownTaskError(KeyError, ValueError):
    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


def register(name: str, factory: Callable[[], Task]) -> None:
    """Register a task under ``name`` in this process (tests, notebooks, benchmarks)."""
    _registered[name] = factory


def task_names() -> list[str]:
    return sorted({*BUILTIN_TASKS, *_registered, *(e.name for e in entry_points(group=ENTRY_POINT_GROUP))})


def get_task(name: str) -> Task:
    """A fresh instance of the task called ``name``, with its default settings."""
    factory = _factory(name)
    task = factory()
    if task.name != name:
        raise UnknownTaskError(f"task {name!r} is registered to {factory!r}, whose name is {task.name!r}")
    return task


def tasks_by_series_kind() -> dict[str, list[str]]:
    """Which tasks read each series kind (``{"lge-stack": ["lge"], "molli-t1": ["mapping"]}``).

    Ingest stores only these kinds; a series of any other kind is reported as not used.
    """
    readers: dict[str, list[str]] = {}
    for name in task_names():
        for kind in get_task(name).series_kinds:
            readers.setdefault(str(kind), []).append(name)
    return readers


def _factory(name: str) -> Callable[[], Task]:
    if name in _registered:
        return _registered[name]
    if name in BUILTIN_TASKS:
        module, _, attribute = BUILTIN_TASKS[name].partition(":")
        return getattr(importlib.import_module(module), attribute)
    for entry in entry_points(group=ENTRY_POINT_GROUP, name=name):
        return entry.load()
    raise UnknownTaskError(f"unknown task {name!r}; known tasks: {', '.join(task_names()) or 'none'}")
