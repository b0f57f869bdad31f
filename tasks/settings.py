"""The training settings a round asks of a site's task (run config: local-epochs, batch-size,
learning-rate, proximal-mu, max-local-steps, seed, fairness-mitigation, ...).

Light on purpose (no torch): the run config is validated, and a training instruction
decoded, where no training happens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cmr.attributes import ATTRIBUTE_NAMES

if TYPE_CHECKING:
    from privacy.dp_sgd import PrivateRoundPlan

NO_MITIGATION = "none"
GROUP_BALANCED = "group-balanced"
FAIRNESS_MITIGATIONS = (NO_MITIGATION, GROUP_BALANCED)
DEFAULT_BALANCE_ATTRIBUTE = "sex"


def mitigation_problems(mitigation: str, balance_attribute: str, dp_sgd: bool = False) -> list[str]:
    """What is wrong with a fairness-mitigation choice, in run-config words; empty if nothing."""
    problems = []
    if mitigation not in FAIRNESS_MITIGATIONS:
        problems.append(f"fairness-mitigation={mitigation!r}: choose one of {', '.join(FAIRNESS_MITIGATIONS)}")
    if balance_attribute not in ATTRIBUTE_NAMES:
        problems.append(
            f"fairness-balance-attribute={balance_attribute!r}: not a subgroup attribute; "
            f"choose one of {', '.join(ATTRIBUTE_NAMES)}"
        )
    if dp_sgd and mitigation == GROUP_BALANCED:
        problems.append(
            "fairness-mitigation='group-balanced' cannot be combined with dp-sgd=true: DP-SGD samples each "
            "patient with the same probability (Poisson sampling), which is what its privacy accounting "
            "assumes; drawing some groups more often would spend more privacy on their patients than "
            "the accounting records. Use one or the other"
        )
    return problems


@dataclass(frozen=True)
class TrainSettings:
    """What the server asks of one round of local training (from run config)."""

    local_epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 1e-3
    proximal_mu: float = 0.0  # FedProx: 0 means plain local SGD
    max_steps: int = 0  # 0: no cap; otherwise stop after this many optimiser steps
    seed: int = 0
    # DP-SGD for this round (privacy.dp_sgd.plan_round): None trains without it. The
    # task then samples patients, not slices, and hands its model, optimiser and
    # loader to privacy.dp_sgd.make_private.
    privacy: PrivateRoundPlan | None = None
    # Fairness mitigation (tasks/sampling.py): "none" draws every training slice alike;
    # "group-balanced" draws each group of ``balance_attribute`` present at the site
    # equally often. Not with DP-SGD, whose accounting assumes uniform patient sampling.
    fairness_mitigation: str = NO_MITIGATION
    balance_attribute: str = DEFAULT_BALANCE_ATTRIBUTE

    def __post_init__(self) -> None:
        problems = mitigation_problems(self.fairness_mitigation, self.balance_attribute, self.privacy is not None)
        if problems:
            raise ValueError("invalid training settings: " + "; ".join(problems))
