"""Client-level (site-level) DP with Flower's wrappers, accounted by Flower's RDP accountant.

Each site clips its update (Flower's ``fixedclipping_mod`` / ``adaptiveclipping_mod``,
applied by client/mods.py, before SecAgg+ masks it); the server averages the clipped
updates with equal weight per site and adds Gaussian noise of standard deviation
``z·C/n`` to the mean (Flower's ``DifferentialPrivacyClientSide*Clipping`` wrappers;
z the noise multiplier, C the clipping norm, n the sites per round). The noise is
added to the unmasked aggregate, so DP and SecAgg+ compose: the server sees neither
an individual update nor a noiseless mean.

Accounting: Flower's ``RdpAccountant`` (``flwr.serverapp.PrivacyAccountant``) with
"no-amplification" sampling and "add-or-remove-one" neighbouring sites, the model
Flower's fixed-clipping wrapper supports: every round is one Gaussian release with
noise multiplier z, whatever the sampling. With fixed clipping the wrapper composes
the release itself. Flower's adaptive wrapper has no accountant; by Andrew et al.
(2019) its two releases (the update with a larger noise multiplier, the clipped-site
count) together cost exactly one Gaussian release of multiplier z, which is what is
composed here after each round. (Flower's adaptive wrapper also scales the noise
to the *next* round's clipping norm and moves the norm the wrong way; both are
corrected in ``_AdaptiveClippingNoisedAtUsedNorm``.)

The accountant's state is the run's history: on resume, the releases recorded in the
history are composed again, and adaptive clipping continues from its last norm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from flwr.app import ArrayRecord, Message, MetricRecord
from flwr.serverapp import (
    GaussianPrivacyEvent,
    NeighboringRelation,
    PrivacyConfig,
    SamplingMethod,
)
from flwr.serverapp.exception import AggregationError
from flwr.serverapp.strategy import (
    DifferentialPrivacyClientSideAdaptiveClipping,
    DifferentialPrivacyClientSideFixedClipping,
    Strategy,
)
from flwr.serverapp.strategy.dp_fixed_clipping import validate_replies
from flwr.supercore.differential_privacy import KEY_NORM_BIT

from privacy.settings import ClientDpSettings

ACCOUNTING = {
    "accountant": "rdp",
    "sampling_method": SamplingMethod.NO_AMPLIFICATION.value,
    "neighboring_relation": NeighboringRelation.ADD_OR_REMOVE_ONE.value,
    "unit": "site",
}


class ClientLevelDp:
    """Wraps a strategy with Flower's client-side-clipping DP wrapper and accounts it."""

    def __init__(self, settings: ClientDpSettings, strategy: Strategy) -> None:
        from flwr.serverapp import RdpAccountant  # needs flwr[dp] (dp-accounting)

        self.settings = settings
        self.accountant = RdpAccountant(
            PrivacyConfig(
                target_delta=settings.delta,
                population_size=settings.population,
                neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE,
                sampling_method=SamplingMethod.NO_AMPLIFICATION,
            )
        )
        self.strategy: DifferentialPrivacyClientSideFixedClipping | DifferentialPrivacyClientSideAdaptiveClipping
        if settings.mode == "fixed":
            self.strategy = DifferentialPrivacyClientSideFixedClipping(
                strategy,
                noise_multiplier=settings.noise_multiplier,
                clipping_norm=settings.clipping_norm,
                num_sampled_clients=settings.clients_per_round,
                accountant=self.accountant,
            )
        elif settings.mode == "adaptive":
            self.strategy = _AdaptiveClippingNoisedAtUsedNorm(
                strategy,
                noise_multiplier=settings.noise_multiplier,
                num_sampled_clients=settings.clients_per_round,
                initial_clipping_norm=settings.clipping_norm,
                target_clipped_quantile=settings.target_clipped_quantile,
                clipped_count_stddev=settings.clipped_count_stddev or None,
            )
        else:
            raise ValueError(f"client-dp={settings.mode!r} has no DP wrapper")

    @property
    def clipping_norm(self) -> float:
        """The norm the sites clip to in the coming round."""
        return float(self.strategy.clipping_norm)

    def release(self) -> GaussianPrivacyEvent:
        return GaussianPrivacyEvent(
            noise_multiplier=self.settings.noise_multiplier,
            sample_size=self.settings.clients_per_round,
            population_size=self.settings.population,
        )

    def account_round(self, clipping_norm_used: float) -> dict[str, Any]:
        """After a released aggregate: compose it (adaptive) and say what was spent."""
        if self.settings.mode == "adaptive":
            self.accountant.compose(self.release())
        spent = self.accountant.get_privacy_spent()
        entry = {
            "mode": self.settings.mode,
            "epsilon": spent.epsilon,
            "delta": spent.delta,
            "releases": spent.num_releases,
            "noise_multiplier": self.settings.noise_multiplier,
            "update_noise_std": self.update_noise_std(clipping_norm_used),
            "clipping_norm": clipping_norm_used,
            "clients_per_round": self.settings.clients_per_round,
            "population": self.settings.population,
        }
        if self.settings.mode == "adaptive":
            entry["next_clipping_norm"] = self.clipping_norm
        return entry

    def update_noise_std(self, clipping_norm: float) -> float:
        """Standard deviation of the noise on each coordinate of the mean update."""
        # Adaptive: the wrapper's own (larger) multiplier for the update part.
        return float(self.strategy.noise_multiplier) * clipping_norm / self.settings.clients_per_round

    def restore(self, history: list[dict[str, Any]]) -> None:
        """Resume: compose the releases of the completed rounds again."""
        entries = [entry["client_dp"] for entry in history if entry.get("client_dp")]
        for entry in entries:
            self.accountant.compose(
                GaussianPrivacyEvent(
                    noise_multiplier=float(entry["noise_multiplier"]),
                    sample_size=int(entry["clients_per_round"]),
                    population_size=int(entry["population"]),
                )
            )
        if entries and self.settings.mode == "adaptive":
            self.strategy.clipping_norm = float(entries[-1]["next_clipping_norm"])

    def summary(self) -> dict[str, Any]:
        """The run's client-level privacy, for summary.json and the model card."""
        spent = self.accountant.get_privacy_spent()
        return {
            "mode": self.settings.mode,
            "epsilon": spent.epsilon if spent.num_releases else 0.0,
            "delta": spent.delta,
            "rounds": spent.num_releases,
            "noise_multiplier": self.settings.noise_multiplier,
            "clipping_norm": self.settings.clipping_norm,
            "final_clipping_norm": self.clipping_norm,
            "clients_per_round": self.settings.clients_per_round,
            "population": self.settings.population,
            **ACCOUNTING,
        }


class _AdaptiveClippingNoisedAtUsedNorm(DifferentialPrivacyClientSideAdaptiveClipping):
    """Flower's client-side adaptive clipping, with two corrections.

    1. Flower 1.42's ``aggregate_train`` moves the clipping norm *before* it adds the
       noise, so the noise is scaled to next round's norm while this round's updates
       were clipped to the previous one (too little noise whenever the norm shrinks).
       Here the noise uses the norm the sites clipped to.
    2. Flower's ``_geometric_update`` multiplies the norm by
       ``exp(-lr * (clipped_fraction - target))``, with ``norm_bit`` = "was clipped":
       when more updates are clipped than the target, the norm *shrinks*, so even more
       are clipped and it runs away to 0 (Andrew et al. use the fraction *not* clipped
       in that formula). Here the norm grows when too many updates are clipped.

    And, like the accounted fixed-clipping wrapper, it releases nothing unless every
    sampled site's update arrived (Flower's adaptive wrapper only warns).
    """

    def _geometric_update(self, clipped_fraction: float) -> None:
        self.clipping_norm *= math.exp(self.clip_norm_lr * (clipped_fraction - self.target_clipped_quantile))

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        replies = list(replies)
        # Strict, like Flower's accounted fixed-clipping wrapper: the noise is calibrated
        # to num_sampled_clients, so a mean over fewer sites would get too little.
        if not validate_replies(replies, self.num_sampled_clients, strict=True):
            return None, None
        for reply in replies:
            if not any(KEY_NORM_BIT in record for record in reply.content.metric_records.values()):
                raise AggregationError(f"no {KEY_NORM_BIT!r} in the reply of node {reply.metadata.src_node_id}")
        arrays, metrics = self.strategy.aggregate_train(server_round, replies)
        if arrays:
            arrays = self._add_noise_to_aggregated_arrays(arrays)  # at the norm used
        self._update_clip_norm_from_replies(replies)
        return arrays, metrics
