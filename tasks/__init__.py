"""Tissue-characterisation tasks, by name (``tasks.registry``). Plain PyTorch/MONAI: no Flower here.

``get_task`` and friends load on first use, so that importing a light module of this
package (``tasks.settings``) does not import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tasks.registry import get_task, register, task_names

__all__ = ["get_task", "register", "task_names"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from tasks import registry

        return getattr(registry, name)
    raise AttributeError(f"module 'tasks' has no attribute {name!r}")
