"""Strategy composition: which of Flower's strategies aggregates a round, and its DP wrapper.

``compose_strategy`` returns what the round loop calls: the aggregation strategy
(FedAvg, FedProx, FedAdam, or a robust one), wrapped in Flower's client-side-clipping
DP wrapper when client-level DP is on (privacy/client_dp.py). SecAgg+ is not a
strategy: it changes how a round's weights travel (server/secure_aggregation.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NotRequired, TypedDict

from flwr.app import MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

from cmrfl.protocol import Metric
from privacy.client_dp import ClientLevelDp
from privacy.settings import PrivacySettings
from server.config import FederationConfig
from server.site_metrics import aggregate_site_metrics


@dataclass(frozen=True)
class ComposedStrategy:
    strategy: Strategy  # what the round loop calls
    privacy: PrivacySettings
    client_dp: ClientLevelDp | None  # the DP wrapper and its accountant, when on


def compose_strategy(config: FederationConfig) -> ComposedStrategy:
    privacy = config.privacy_settings()
    base = build_strategy(config, uniform_site_weights=privacy.uniform_site_weights)
    client_dp = ClientLevelDp(privacy.client_dp, base) if privacy.client_dp.enabled else None
    return ComposedStrategy(strategy=client_dp.strategy if client_dp else base, privacy=privacy, client_dp=client_dp)


class _CommonOptions(TypedDict):
    """The keyword arguments that every strategy built here takes (FedAvg's)."""

    fraction_train: float
    fraction_evaluate: float
    min_train_nodes: int
    min_evaluate_nodes: int
    min_available_nodes: int
    train_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord]
    evaluate_metrics_aggr_fn: Callable[[list[RecordDict], str], MetricRecord]
    weighted_by_key: NotRequired[str]


def build_strategy(config: FederationConfig, uniform_site_weights: bool = False) -> Strategy:
    common = _CommonOptions(
        fraction_train=config.fraction_train,
        fraction_evaluate=1.0,  # every site evaluates every round: the audit needs all
        min_train_nodes=config.min_train_sites,
        min_evaluate_nodes=config.min_train_sites,
        min_available_nodes=config.min_available_sites,
        train_metrics_aggr_fn=example_weighted_metrics,
        evaluate_metrics_aggr_fn=example_weighted_metrics,
    )
    if uniform_site_weights:
        # Under client-level DP every site weighs the same in the mean (the noise is calibrated
        # to one site's clipped update over n sites); the round loop stamps this weight on the
        # replies, because Flower's strategies weight by a key of the reply's MetricRecord.
        common["weighted_by_key"] = Metric.SITE_WEIGHT.value
    match config.strategy:
        case "fedavg":
            return FedAvg(**common)
        case "fedprox":
            return FedProx(**common, proximal_mu=config.proximal_mu)
        case "fedadam":
            return FedAdam(**common, eta=config.server_learning_rate, eta_l=config.learning_rate)
        case "fedmedian":
            return FedMedian(**common)
        case "fedtrimmedavg":
            return FedTrimmedAvg(**common)
        case "krum":
            return Krum(**common)
    raise ValueError(f"strategy {config.strategy!r} is not built here")


def example_weighted_metrics(replies: list[RecordDict], weighted_by_key: str) -> MetricRecord:
    """Consortium metrics are example-weighted whatever weights the model average."""
    metrics = aggregate_site_metrics(replies, Metric.NUM_EXAMPLES)
    if Metric.SITE_WEIGHT in metrics:
        del metrics[Metric.SITE_WEIGHT]
    return metrics
