"""Server-side privacy settings of a run: SecAgg+, client-level DP, update guards.

They come from the run config (``[tool.flwr.app.config]``, keys ``secure-aggregation``,
``secagg-*``, ``client-dp*`` and ``max-update-norm``) and are checked together with the
strategy, because some combinations cannot work: robust aggregation (median, trimmed
mean, Krum) needs every site's own update, which SecAgg+ exists to hide; Flower's
accounted client-level DP needs a plain uniform mean of the clipped updates.

Nothing here imports Flower or the server: ``from_run_config`` reads attributes from
whatever carries the run config (``server.config.FederationConfig``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cmrfl.protocol import Key

ROBUST_STRATEGIES = ("fedmedian", "fedtrimmedavg", "krum")
CLIENT_DP_MODES = ("off", "fixed", "adaptive")
CLIENT_DP_STRATEGIES = ("fedavg", "fedprox")  # a plain (uniform) mean of clipped updates
SECAGG_MODULUS_RANGE = 2**32  # Flower's default; masks are drawn from [0, 2**32)


@dataclass(frozen=True)
class SecureAggregationSettings:
    """Flower's SecAgg+ (``SecAggPlusWorkflow`` + ``secaggplus_mod``) for training rounds.

    ``num_shares``: how many sites (itself included) hold a share of each site's
    secrets; ``reconstruction_threshold``: how many of those shares rebuild a secret,
    so a round survives sites dropping out as long as every site keeps that many
    live neighbours, and fewer than that many colluding neighbours learn nothing.
    ``clipping_range``: each coordinate of a (weighted) update is clipped to
    ±clipping_range before quantisation to ``quantization_range`` integer levels;
    ``max_weight``: the largest per-site weight (number of examples) expected.
    """

    enabled: bool = True
    num_shares: int = 3
    reconstruction_threshold: int = 2
    clipping_range: float = 1.0
    quantization_range: int = 2**22
    max_weight: float = 1000.0


@dataclass(frozen=True)
class ClientDpSettings:
    """Client-level (site-level) DP: clip each site's update, noise the mean.

    ``mode``: ``off``, ``fixed`` (clip to ``clipping_norm``) or ``adaptive`` (start at
    ``clipping_norm`` and adapt it, privately, so that about ``target_clipped_quantile``
    of the sites' updates are clipped; 0.5 tracks the median update norm).
    ``population``: the number of sites in the consortium (the accountant's population);
    ``clients_per_round``: how many of them each round samples.
    """

    mode: str = "off"
    noise_multiplier: float = 1.0
    clipping_norm: float = 1.0
    target_clipped_quantile: float = 0.5
    clipped_count_stddev: float = 0.0  # adaptive only; 0: Flower's default, clients / 20
    delta: float = 1e-5
    population: int = 2
    clients_per_round: int = 2

    @property
    def enabled(self) -> bool:
        return self.mode != "off"

    def count_stddev(self) -> float:
        return self.clipped_count_stddev or self.clients_per_round / 20


@dataclass(frozen=True)
class PrivacySettings:
    secure_aggregation: SecureAggregationSettings
    client_dp: ClientDpSettings
    max_update_norm: float  # 0: no bound; non-finite updates are always rejected

    @property
    def uniform_site_weights(self) -> bool:
        """Client-level DP averages clipped updates with equal weight per site."""
        return self.client_dp.enabled

    @classmethod
    def from_run_config(cls, config: Any) -> PrivacySettings:
        """From a ``FederationConfig`` (or anything with the same attributes)."""
        population = config.client_dp_population or config.min_available_sites
        return cls(
            secure_aggregation=SecureAggregationSettings(
                enabled=config.secure_aggregation,
                num_shares=config.secagg_num_shares,
                reconstruction_threshold=config.secagg_reconstruction_threshold,
                clipping_range=config.secagg_clipping_range,
                quantization_range=config.secagg_quantization_range,
                max_weight=config.secagg_max_weight,
            ),
            client_dp=ClientDpSettings(
                mode=config.client_dp,
                noise_multiplier=config.client_dp_noise_multiplier,
                clipping_norm=config.client_dp_clipping_norm,
                target_clipped_quantile=config.client_dp_target_quantile,
                clipped_count_stddev=config.client_dp_clipped_count_stddev,
                delta=config.client_dp_delta,
                population=population,
                # What FedAvg samples when `population` sites are connected.
                clients_per_round=max(int(population * config.fraction_train), config.min_train_sites),
            ),
            max_update_norm=config.max_update_norm,
        )

    def problems(self, strategy: str, min_train_sites: int) -> list[str]:
        """Every reason this combination cannot run, each naming its run-config key."""
        problems: list[str] = []
        secagg, dp = self.secure_aggregation, self.client_dp
        if secagg.enabled:
            if strategy in ROBUST_STRATEGIES:
                problems.append(
                    f"strategy={strategy} needs each site's own update, which "
                    "secure-aggregation hides (the server only ever sees their sum): "
                    "use fedavg, fedprox or fedadam with secure-aggregation = true, "
                    f"or secure-aggregation = false with {strategy}"
                )
            if min_train_sites < 2:
                problems.append("secure-aggregation needs min-train-sites >= 2")
            if secagg.num_shares < 3:
                problems.append(
                    f"secagg-num-shares={secagg.num_shares}: must be at least 3 (a site and a neighbour on each side)"
                )
            if not 2 <= secagg.reconstruction_threshold < secagg.num_shares:
                problems.append(
                    f"secagg-reconstruction-threshold={secagg.reconstruction_threshold}: "
                    f"must be at least 2 and below secagg-num-shares ({secagg.num_shares})"
                )
            if secagg.clipping_range <= 0:
                problems.append("secagg-clipping-range must be positive")
            if not 0 < secagg.quantization_range < SECAGG_MODULUS_RANGE:
                problems.append(f"secagg-quantization-range must be in (0, {SECAGG_MODULUS_RANGE})")
            if secagg.max_weight <= 0:
                problems.append("secagg-max-weight must be positive")
        if self.max_update_norm < 0:
            problems.append("max-update-norm must not be negative (0 turns the bound off)")
        if dp.mode not in CLIENT_DP_MODES:
            problems.append(f"client-dp={dp.mode!r}: choose one of {', '.join(CLIENT_DP_MODES)}")
        elif dp.enabled:
            if strategy not in CLIENT_DP_STRATEGIES:
                problems.append(
                    f"client-dp={dp.mode} needs a uniform mean of clipped updates: "
                    f"strategy must be one of {', '.join(CLIENT_DP_STRATEGIES)}, not {strategy}"
                )
            if dp.noise_multiplier <= 0:
                problems.append("client-dp-noise-multiplier must be positive")
            if dp.clipping_norm <= 0:
                problems.append("client-dp-clipping-norm must be positive")
            if not 0 < dp.delta < 1:
                problems.append("client-dp-delta must be in (0, 1)")
            if dp.clients_per_round > dp.population:
                problems.append(
                    f"client-dp: {dp.clients_per_round} sites per round but a population of "
                    f"{dp.population} (client-dp-population, or min-available-sites when 0)"
                )
            if dp.mode == "adaptive":
                if not 0 <= dp.target_clipped_quantile <= 1:
                    problems.append("client-dp-target-quantile must be in [0, 1]")
                if dp.clipped_count_stddev < 0:
                    problems.append("client-dp-clipped-count-stddev must not be negative")
                elif dp.noise_multiplier >= 2 * dp.count_stddev():
                    problems.append(
                        f"client-dp=adaptive: client-dp-noise-multiplier "
                        f"({dp.noise_multiplier}) must be below twice the clipped-count "
                        f"noise ({dp.count_stddev():.3g}); raise "
                        "client-dp-clipped-count-stddev (0 means sites per round / 20)"
                    )
        return problems


def run_config_problems(config: Any) -> list[str]:
    """The privacy problems of a ``FederationConfig``, for its ``validate()``."""
    return PrivacySettings.from_run_config(config).problems(config.strategy, config.min_train_sites)


def site_instructions(settings: PrivacySettings) -> dict[str, float | bool | str]:
    """What each site must know to guard, clip and weight its update: the train-config keys
    the site's mods (client/mods.py) read; the server adds them to every training instruction."""
    return {
        Key.MAX_UPDATE_NORM.value: float(settings.max_update_norm),
        Key.UNIFORM_SITE_WEIGHTS.value: settings.uniform_site_weights,
        Key.CLIENT_DP.value: settings.client_dp.mode,
    }
