"""Strategy composition: which of Flower's strategies aggregates a round."""

from __future__ import annotations

from flwr.serverapp.strategy import (
    FedAdam,
    FedAvg,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    Krum,
    Strategy,
)

from server.config import FederationConfig
from server.site_metrics import aggregate_site_metrics


def build_strategy(config: FederationConfig) -> Strategy:
    common = dict(
        fraction_train=config.fraction_train,
        fraction_evaluate=1.0,  # every site evaluates every round: the audit needs all
        min_train_nodes=config.min_train_sites,
        min_evaluate_nodes=config.min_train_sites,
        min_available_nodes=config.min_available_sites,
        train_metrics_aggr_fn=aggregate_site_metrics,
        evaluate_metrics_aggr_fn=aggregate_site_metrics,
    )
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
