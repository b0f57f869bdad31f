"""Running a federation on this machine through Flower's simulation runtime."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

import torch
from flwr.simulation import run_simulation

from client.app import make_client_app
from server.app import make_server_app
from server.federation import RoundCallback


def backend_config_for(n_sites: int, quiet_sites: bool = False) -> dict[str, Any]:
    """Ray resources: one actor per virtual site, up to two per core, sharing the cores.

    A round waits for its slowest site. With one CPU per actor, three sites on two
    cores trained in two waves and the third site trained alone while a core idled;
    with two thirds of a CPU each, all three train at once (one thread each) and share
    both cores. With more cores than sites, each site gets several threads. GPU sites
    share the GPUs present. ``quiet_sites``: the sites' own output stays in Ray's
    session logs instead of the console (a site's failure still reaches the server as
    an error reply, in its log).
    """
    cpus = os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    actors = max(1, min(n_sites, 2 * cpus))
    # Ray counts CPUs in units of 1/10000: round down, or the last actor would not fit.
    per_site_cpus = math.floor(cpus / actors * 10_000) / 10_000
    per_site_gpu = min(1.0, gpus / n_sites) if gpus else 0.0
    init_args: dict[str, Any] = {"num_cpus": cpus, "num_gpus": gpus}
    if quiet_sites:
        init_args["log_to_driver"] = False
    return {"client_resources": {"num_cpus": per_site_cpus, "num_gpus": per_site_gpu}, "init_args": init_args}


def run_simulated_federation(
    site_dirs: list[Path],
    run_config: dict[str, Any],
    flower_log: Path | None = None,
    on_round_end: RoundCallback | None = None,
) -> None:
    """One virtual SuperNode per site folder; the ServerApp runs in this process."""
    flwr_logger = logging.getLogger("flwr")
    saved_handlers, saved_propagate = list(flwr_logger.handlers), flwr_logger.propagate
    if flower_log is not None:
        flwr_logger.propagate = False  # not also to the console through the root logger
        # Flower's round-by-round log goes to a file; the person watches progress bars.
        flower_log.parent.mkdir(parents=True, exist_ok=True)
        for handler in saved_handlers:
            flwr_logger.removeHandler(handler)
        handler = logging.FileHandler(flower_log)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))  # when each stage ran
        flwr_logger.addHandler(handler)
    # Ray's future default (leave CUDA_VISIBLE_DEVICES alone for CPU-only actors), and
    # no warning about it on the console.
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    try:
        run_simulation(
            server_app=make_server_app(run_config, on_round_end=on_round_end),
            client_app=make_client_app([Path(d).resolve() for d in site_dirs]),
            num_supernodes=len(site_dirs),
            backend_config=backend_config_for(len(site_dirs), quiet_sites=flower_log is not None),
        )
    finally:
        if flower_log is not None:
            for handler in list(flwr_logger.handlers):
                flwr_logger.removeHandler(handler)
                handler.close()
            for handler in saved_handlers:
                flwr_logger.addHandler(handler)
            flwr_logger.propagate = saved_propagate
