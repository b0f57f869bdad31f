"""Update guards: is a site's model update fit to be aggregated?

Pure functions on named NumPy arrays, so that the same check runs at the site
(``client/mods.py``, before SecAgg+ masks the update and nobody can look at it any
more) and at the server (plain aggregation, where the server sees each update).

An *update* is the trained weights minus the weights the site received, array by
array. It is rejected when any entry is NaN or infinite (a diverged or corrupted
training run) or when its L2 norm over all arrays exceeds ``max_l2_norm`` (a run
that blew up, or a site trying to dominate the average); 0 means no norm bound.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class UpdateVerdict:
    """What the guard decided about one update, and why."""

    accepted: bool
    l2_norm: float  # NaN when the update has non-finite entries
    reason: str = ""  # empty when accepted; otherwise says what was wrong, precisely


def model_update(trained: Mapping[str, np.ndarray], received: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``trained - received`` for every array, in the order of ``received``.

    Raises ``ValueError`` naming the arrays that are missing or have another shape.
    """
    missing = [name for name in received if name not in trained]
    extra = [name for name in trained if name not in received]
    if missing or extra:
        raise ValueError(
            "update does not match the model sent: "
            + "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"unexpected {', '.join(extra)}" if extra else "",
                )
                if part
            )
        )
    update: dict[str, np.ndarray] = {}
    for name, before in received.items():
        after = np.asarray(trained[name])
        if after.shape != np.shape(before):
            raise ValueError(f"update of {name!r} has shape {after.shape}, expected {np.shape(before)}")
        update[name] = after.astype(np.float64) - np.asarray(before, dtype=np.float64)
    return update


def l2_norm(update: Mapping[str, np.ndarray]) -> float:
    """The L2 norm of all arrays together, as if flattened into one vector."""
    return math.sqrt(sum(float(np.sum(np.square(a, dtype=np.float64))) for a in update.values()))


def check_update(update: Mapping[str, np.ndarray], max_l2_norm: float) -> UpdateVerdict:
    """Accept ``update`` only if it is finite and (when ``max_l2_norm > 0``) small enough."""
    non_finite = {name: int(np.size(a) - np.count_nonzero(np.isfinite(a))) for name, a in update.items()}
    bad = {name: count for name, count in non_finite.items() if count}
    if bad:
        total = sum(int(np.size(a)) for a in update.values())
        first = next(iter(bad))
        return UpdateVerdict(
            accepted=False,
            l2_norm=math.nan,
            reason=(
                f"non-finite update: {sum(bad.values())} of {total} values are NaN or "
                f"infinite, in {len(bad)} array(s), first {first!r}"
            ),
        )
    norm = l2_norm(update)
    if max_l2_norm > 0 and norm > max_l2_norm:
        return UpdateVerdict(
            accepted=False,
            l2_norm=norm,
            reason=f"update L2 norm {norm:.6g} exceeds max-update-norm {max_l2_norm:.6g}",
        )
    return UpdateVerdict(accepted=True, l2_norm=norm)
