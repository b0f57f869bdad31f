"""The run configuration: one set of defaults, validated with clear messages."""

import tomllib
from pathlib import Path

import pytest

from server.config import FederationConfig, RunConfigError

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_pyproject_run_config_equals_code_defaults():
    declared = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["config"]
    assert declared == FederationConfig().to_run_config()


def test_pyproject_declares_the_flower_apps():
    flwr = tomllib.loads(PYPROJECT.read_text())["tool"]["flwr"]["app"]["components"]
    assert flwr == {"serverapp": "server.app:app", "clientapp": "client.app:app"}


def test_run_config_overrides_are_typed():
    config = FederationConfig.from_run_config({"num-server-rounds": 7, "strategy": "fedprox", "proximal-mu": 0.1})
    assert (config.num_server_rounds, config.strategy, config.proximal_mu) == (7, "fedprox", 0.1)


@pytest.mark.parametrize(
    ("run_config", "message"),
    [
        ({"strategy": "fedbest"}, "strategy='fedbest'"),
        ({"num-server-rounds": "many"}, "num-server-rounds='many': expected int"),
        ({"number-of-rounds": 3}, "unknown run-config key(s): number-of-rounds"),
        ({"strategy": "fedprox"}, "fedprox needs proximal-mu > 0"),
        ({"resume": "yes"}, "resume='yes': expected bool"),
    ],
)
def test_bad_run_config_is_refused_with_the_key_named(run_config, message):
    with pytest.raises(RunConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        FederationConfig.from_run_config(run_config)
