"""How a site draws its training examples: as they come, or balanced over subgroups.

A fairness mitigation chosen in the run config (``fairness-mitigation``):

* ``none``: every training slice equally likely (a shuffled pass over the slices);
* ``group-balanced``: stratified by one subgroup attribute (``fairness-balance-attribute``,
  sex by default), so that each group of that attribute present at the site is drawn
  equally often in expectation, whatever its share of the site's patients, as done for
  cine segmentation in the UK Biobank bias studies. Slices are drawn with replacement
  (torch's ``WeightedRandomSampler``), with weight 1 / (training slices of the slice's
  group), and an epoch keeps its usual number of draws, hence of optimiser steps.

Cases whose attribute is not recorded ("unknown") are not a group of patients: they keep
the share of draws they would have had without balancing, and the recorded groups share
the rest equally. A group with a single patient at a site is drawn as often as a group of
many; that patient's slices are then seen many times per epoch.

Under DP-SGD the site samples patients by Poisson sampling at one rate, the rate its
privacy accounting assumes; weighting the draws by group would change it, so the run
config refuses the combination (``mitigation_problems``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import torch
from torch.utils.data import WeightedRandomSampler

from cmr.attributes import UNKNOWN
from tasks.settings import GROUP_BALANCED, NO_MITIGATION  # noqa: F401  (re-exported with the sampler)


def group_balanced_weights(groups: Sequence[str]) -> torch.Tensor:
    """Per-example draw weights (summing to 1) that give each recorded group an equal share.

    ``groups``: each example's group (the value of the balancing attribute). Examples
    whose value is ``unknown`` keep their natural share, len(unknown) / len(groups);
    each recorded group gets an equal part of the remaining mass, spread evenly over
    its examples (weight ∝ 1 / examples in the group).
    """
    if not groups:
        raise ValueError("no examples to weight")
    sizes = Counter(groups)
    recorded = [group for group in sizes if group != UNKNOWN]
    unknown_share = sizes.get(UNKNOWN, 0) / len(groups)
    per_group = (1.0 - unknown_share) / len(recorded) if recorded else 0.0
    weights = [(1.0 / len(groups)) if group == UNKNOWN else per_group / sizes[group] for group in groups]
    return torch.tensor(weights, dtype=torch.double)


def group_balanced_sampler(groups: Sequence[str], generator: torch.Generator | None = None) -> WeightedRandomSampler:
    """Draws ``len(groups)`` examples per epoch, with replacement, group-balanced (see above)."""
    return WeightedRandomSampler(
        # torch annotates weights as Sequence[float]; it takes any array (torch.as_tensor of it)
        group_balanced_weights(groups),  # type: ignore[arg-type]
        num_samples=len(groups),
        replacement=True,
        generator=generator,
    )
