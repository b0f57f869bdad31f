"""Running a federation on this machine through Flower's simulation runtime."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from flwr.simulation import run_simulation

from client.app import make_client_app
from server.app import make_server_app
from server.federation import RoundCallback


def backend_config_for(n_sites: int) -> dict[str, Any]:
    """Ray resources: one CPU per virtual site; GPU sites share the GPUs present."""
    cpus = os.cpu_count() or 1
    gpus = torch.cuda.device_count()
    per_site_gpu = min(1.0, gpus / n_sites) if gpus else 0.0
    return {
        "client_resources": {"num_cpus": 1, "num_gpus": per_site_gpu},
        "init_args": {"num_cpus": cpus, "num_gpus": gpus},
    }


def run_simulated_federation(
    site_dirs: list[Path],
    run_config: dict[str, Any],
    flower_log: Path | None = None,
    on_round_end: RoundCallback | None = None,
) -> None:
    """One virtual SuperNode per site folder; the ServerApp runs in this process."""
    flwr_logger = logging.getLogger("flwr")
    saved_handlers = list(flwr_logger.handlers)
    if flower_log is not None:
        # Flower's round-by-round log goes to a file; the person watches progress bars.
        flower_log.parent.mkdir(parents=True, exist_ok=True)
        for handler in saved_handlers:
            flwr_logger.removeHandler(handler)
        flwr_logger.addHandler(logging.FileHandler(flower_log))
    try:
        run_simulation(
            server_app=make_server_app(run_config, on_round_end=on_round_end),
            client_app=make_client_app([Path(d).resolve() for d in site_dirs]),
            num_supernodes=len(site_dirs),
            backend_config=backend_config_for(len(site_dirs)),
        )
    finally:
        if flower_log is not None:
            for handler in list(flwr_logger.handlers):
                flwr_logger.removeHandler(handler)
                handler.close()
            for handler in saved_handlers:
                flwr_logger.addHandler(handler)
