"""One federation recipe, run in three environments.

A federated run is the consortium's two apps (``server.app``, ``client.app``, declared
in pyproject.toml's ``[tool.flwr.app.components]``) and one run configuration, the
keys of ``[tool.flwr.app.config]``. The recipe holds that configuration, validated
against ``server.config.FederationConfig`` before any process starts (so that a typo is
an error on the submitting machine, not a failed run on the SuperLink), and runs it:

* ``simulate``: every site as a virtual SuperNode on this machine (Flower's simulation
  runtime, ``cmrfl.simulation``): the demo, most tests, benchmarks;
* ``deploy_locally``: Flower's own SuperLink and one SuperNode per site on this machine,
  over TLS with node authentication unless ``insecure`` (``cmrfl.local_deployment``);
* ``submit``: to a remote consortium SuperLink with ``flwr run`` (``cmrfl.train``).

The same ServerApp and ClientApp run in all three; only where their processes live
changes.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from server.config import FederationConfig

if TYPE_CHECKING:
    from cmrfl.train import TrainOutcome
    from server.federation import RoundCallback


def parse_run_config(text: str | None) -> dict[str, Any]:
    """``--run-config`` text (``key=value`` pairs, TOML values) as a dict, as ``flwr run`` reads it."""
    if not text:
        return {}
    from flwr.common.config import parse_config_args

    return parse_config_args([text])


@dataclass(frozen=True)
class FederationRecipe:
    run_config: Mapping[str, Any] = field(default_factory=dict)  # overrides of pyproject.toml's defaults

    def __post_init__(self) -> None:
        FederationConfig.from_run_config(dict(self.run_config))  # RunConfigError names the key

    @property
    def config(self) -> FederationConfig:
        return FederationConfig.from_run_config(dict(self.run_config))

    def simulate(
        self,
        site_dirs: list[Path],
        flower_log: Path | None = None,
        on_round_end: RoundCallback | None = None,
    ) -> None:
        """One virtual SuperNode per site folder; the ServerApp runs in this process."""
        from cmrfl.simulation import run_simulated_federation

        run_simulated_federation(site_dirs, dict(self.run_config), flower_log=flower_log, on_round_end=on_round_end)

    def deploy_locally(
        self,
        site_dirs: list[Path],
        work_dir: Path,
        insecure: bool = False,
        base_port: int = 9200,
        timeout_s: float = 1800,
    ) -> subprocess.CompletedProcess:
        """A SuperLink and one SuperNode per site on this machine; the run submitted as a consortium would."""
        from cmrfl.local_deployment import LocalFederation

        with LocalFederation(site_dirs, work_dir, base_port=base_port, insecure=insecure) as federation:
            return federation.run(dict(self.run_config), timeout_s=timeout_s)

    def submit(
        self, superlink: str, ca_cert: Path | None, federation: str | None = None, **options: Any
    ) -> TrainOutcome:
        """``flwr run`` against a remote SuperLink, followed to the end (``cmrfl train``)."""
        from cmrfl.train import run_config_argument, submit_and_follow

        return submit_and_follow(
            superlink,
            ca_cert,
            run_config=run_config_argument(dict(self.run_config)) or None,
            federation=federation,
            **options,
        )
