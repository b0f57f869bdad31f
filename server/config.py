"""The run configuration of a federation, validated once when a run starts.

Values arrive through Flower's ``context.run_config`` (``[tool.flwr.app.config]``
in pyproject.toml, overridden by ``flwr run --run-config``). The defaults below are
the same as in pyproject.toml: the Python simulation API does not read that file,
and a test keeps the two equal.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from fairness.settings import run_config_problems as fairness_run_config_problems
from privacy.dp_sgd_settings import DpSgdRequest
from privacy.dp_sgd_settings import run_config_problems as dp_sgd_run_config_problems
from privacy.settings import PrivacySettings
from privacy.settings import run_config_problems as privacy_run_config_problems
from tasks.settings import TrainSettings, mitigation_problems

STRATEGIES = ("fedavg", "fedprox", "fedadam", "fedmedian", "fedtrimmedavg", "krum")
DEVICES = ("auto", "cpu", "cuda")


class RunConfigError(ValueError):
    """A run-config key has a value the federation cannot run with."""


@dataclass(frozen=True)
class FederationConfig:
    task: str = "lge"
    num_server_rounds: int = 5
    strategy: str = "fedavg"
    fraction_train: float = 1.0
    min_train_sites: int = 2
    min_available_sites: int = 2
    local_epochs: int = 1
    batch_size: int = 8
    learning_rate: float = 0.002
    proximal_mu: float = 0.0
    max_local_steps: int = 0
    server_learning_rate: float = 0.01
    seed: int = 0
    device: str = "auto"
    run_dir: str = "runs/latest"
    resume: bool = True
    round_timeout_s: float = 3600.0
    # --- Sample-level DP-SGD at each site (privacy/dp_sgd.py; protected unit: the patient)
    dp_sgd: bool = False
    dp_sgd_target_epsilon: float = 8.0  # per site, whole federation; 0: use dp-sgd-noise-multiplier
    dp_sgd_noise_multiplier: float = 0.0  # explicit σ; 0: derive it from dp-sgd-target-epsilon
    dp_sgd_delta: float = 1e-05
    dp_sgd_max_grad_norm: float = 1.0
    dp_sgd_accountant: str = "rdp"  # rdp or prv
    dp_sgd_grad_sample_mode: str = "hooks"  # hooks, functorch or ghost
    # --- end DP-SGD
    # Server-side privacy (privacy/settings.py checks these together with the strategy)
    secure_aggregation: bool = True
    secagg_num_shares: int = 3
    secagg_reconstruction_threshold: int = 2
    secagg_clipping_range: float = 1.0
    secagg_quantization_range: int = 4194304
    secagg_max_weight: float = 1000.0
    max_update_norm: float = 100.0
    client_dp: str = "off"
    client_dp_noise_multiplier: float = 1.0
    client_dp_clipping_norm: float = 1.0
    client_dp_target_quantile: float = 0.5
    client_dp_clipped_count_stddev: float = 0.0
    client_dp_delta: float = 1e-05
    client_dp_population: int = 0
    # Fairness audit (fairness/): the smallest subgroup a site reports on (a site's own
    # site.toml may set a higher floor) and the largest accepted gap per measure
    fairness_suppression_threshold: int = 10
    fairness_tolerance_dice_myocardium: float = 0.05
    fairness_tolerance_dice_scar: float = 0.05
    fairness_tolerance_scar_burden_abs_error: float = 2.0  # percentage points
    fairness_tolerance_rates: float = 0.10  # sensitivity, specificity, equalised odds
    # Fairness mitigation at the sites (tasks/sampling.py): "none" or "group-balanced"
    # (training slices drawn so that each group of the attribute below is equally represented)
    fairness_mitigation: str = "none"
    fairness_balance_attribute: str = "sex"  # any subgroup attribute (cmr/attributes.py)

    @classmethod
    def from_run_config(cls, run_config: dict[str, Any]) -> FederationConfig:
        """Build from Flower's run config (kebab-case keys); unknown keys are errors."""
        by_key = {f.name.replace("_", "-"): f for f in fields(cls)}
        unknown = sorted(set(run_config) - set(by_key))
        if unknown:
            raise RunConfigError(f"unknown run-config key(s): {', '.join(unknown)}; known: {', '.join(sorted(by_key))}")
        values: dict[str, Any] = {}
        for key, value in run_config.items():
            field = by_key[key]
            expected = type(getattr(cls, field.name))
            try:
                if expected is bool and not isinstance(value, bool):
                    raise TypeError
                values[field.name] = expected(value)
            except (TypeError, ValueError):
                raise RunConfigError(f"run-config {key}={value!r}: expected {expected.__name__}") from None
        config = cls(**values)
        config.validate()
        return config

    # ---- the typed settings each package owns, composed from this run config

    def training_settings(self, server_round: int) -> TrainSettings:
        """The sites' local training in ``server_round`` (tasks.settings); a new seed each round."""
        return TrainSettings(
            local_epochs=self.local_epochs,
            batch_size=self.batch_size,
            learning_rate=self.learning_rate,
            proximal_mu=self.proximal_mu,
            max_steps=self.max_local_steps,
            seed=self.seed + server_round,
            fairness_mitigation=self.fairness_mitigation,
            balance_attribute=self.fairness_balance_attribute,
        )

    def dp_sgd_request(self) -> DpSgdRequest | None:
        """The sites' DP-SGD (privacy.dp_sgd_settings), or None when it is off."""
        if not self.dp_sgd:
            return None
        return DpSgdRequest(
            max_grad_norm=self.dp_sgd_max_grad_norm,
            delta=self.dp_sgd_delta,
            noise_multiplier=self.dp_sgd_noise_multiplier,
            target_epsilon=self.dp_sgd_target_epsilon,
            planned_rounds=self.num_server_rounds,
            accountant=self.dp_sgd_accountant,
            grad_sample_mode=self.dp_sgd_grad_sample_mode,
        )

    def privacy_settings(self) -> PrivacySettings:
        """Secure aggregation, client-level DP and the update guard (privacy.settings)."""
        return PrivacySettings.from_run_config(self)

    def to_run_config(self) -> dict[str, Any]:
        return {f.name.replace("_", "-"): getattr(self, f.name) for f in fields(self)}

    def validate(self) -> None:
        problems = []
        if self.strategy not in STRATEGIES:
            problems.append(f"strategy={self.strategy!r}: choose one of {', '.join(STRATEGIES)}")
        if self.device not in DEVICES:
            problems.append(f"device={self.device!r}: choose one of {', '.join(DEVICES)}")
        if self.num_server_rounds < 1:
            problems.append("num-server-rounds must be at least 1")
        if not 0.0 < self.fraction_train <= 1.0:
            problems.append("fraction-train must be in (0, 1]")
        if self.min_train_sites < 1 or self.min_available_sites < self.min_train_sites:
            problems.append("need 1 <= min-train-sites <= min-available-sites")
        if self.local_epochs < 1 or self.batch_size < 1 or self.learning_rate <= 0:
            problems.append("local-epochs, batch-size and learning-rate must be positive")
        if self.proximal_mu < 0 or self.max_local_steps < 0:
            problems.append("proximal-mu and max-local-steps must not be negative")
        if self.strategy == "fedprox" and self.proximal_mu <= 0:
            problems.append("strategy=fedprox needs proximal-mu > 0")
        problems.extend(privacy_run_config_problems(self))
        problems.extend(fairness_run_config_problems(self.to_run_config()))
        problems.extend(dp_sgd_run_config_problems(self))
        problems.extend(mitigation_problems(self.fairness_mitigation, self.fairness_balance_attribute, self.dp_sgd))
        if problems:
            raise RunConfigError("invalid run config: " + "; ".join(problems))
