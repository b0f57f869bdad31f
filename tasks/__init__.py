"""Tissue-characterisation tasks, by name. Plain PyTorch/MONAI: no Flower here."""

from __future__ import annotations

from collections.abc import Callable

from tasks.base import Task

_FACTORIES: dict[str, Callable[[], Task]] = {}


def register(name: str, factory: Callable[[], Task]) -> None:
    _FACTORIES[name] = factory


def get_task(name: str) -> Task:
    _register_builtin_tasks()
    try:
        return _FACTORIES[name]()
    except KeyError:
        known = ", ".join(sorted(_FACTORIES)) or "none"
        raise KeyError(f"unknown task {name!r}; known tasks: {known}") from None


def task_names() -> list[str]:
    _register_builtin_tasks()
    return sorted(_FACTORIES)


def _register_builtin_tasks() -> None:
    if "lge" not in _FACTORIES:
        from tasks.lge import LgeScarSegmentation

        register("lge", LgeScarSegmentation)
    if "mapping" not in _FACTORIES:
        from tasks.mapping import MotionRobustT1Mapping

        register("mapping", MotionRobustT1Mapping)
