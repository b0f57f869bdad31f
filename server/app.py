"""The Flower ServerApp: read the run config, run the rounds, write the outputs."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flwr.app import ArrayRecord, Context
from flwr.serverapp import Grid, ServerApp

from server.config import FederationConfig
from server.federation import RoundCallback, run_federation
from server.run_outputs import (
    csv_metrics_for,
    plot_task_figures,
    write_final_model,
    write_metrics_csv,
    write_summary,
)
from tasks import get_task

if TYPE_CHECKING:
    from fairness.spec import AuditSpec

log = logging.getLogger("cmrfl.server")


def make_server_app(
    config_overrides: dict[str, Any] | None = None,
    on_round_end: RoundCallback | None = None,
    initial_arrays: ArrayRecord | None = None,
) -> ServerApp:
    """A ServerApp; ``config_overrides`` stand in for ``--run-config`` in simulations.

    ``initial_arrays`` replaces the task's freshly initialised model (tests, benchmarks).
    """
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        config = FederationConfig.from_run_config({**dict(context.run_config), **(config_overrides or {})})
        run_dir = Path(config.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)

        task = get_task(config.task)
        csv_metrics = csv_metrics_for(task)

        def after_round(history: list[dict[str, Any]]) -> None:
            write_metrics_csv(run_dir, history, csv_metrics)
            if on_round_end is not None:
                on_round_end(history)

        result = run_federation(grid, config, on_round_end=after_round, initial=initial_arrays)
        outputs = {
            "metrics_csv": str(write_metrics_csv(run_dir, result.history, csv_metrics)),
            "final_model": str(write_final_model(run_dir, result.arrays, config)),
            **plot_task_figures(run_dir, result.history, task),
            **write_fairness_report(run_dir, task.audit_spec),
        }
        summary = write_summary(
            run_dir,
            config,
            task,
            result.history,
            outputs,
            extra={"resumed_from_round": result.resumed_from_round, "privacy": result.privacy},
        )
        log.info("run finished: %s", summary)

    return app


def write_fairness_report(run_dir: Path, spec: AuditSpec | None) -> dict[str, str]:
    """The fairness audit report at the end of every run (fairness/report.py), with the task's audit spec."""
    from fairness.report import write_audit_report
    from fairness.run_store import NoFairnessStatistics

    if spec is None:  # the task declares no fairness audit
        return {}
    try:
        html_path, json_path = write_audit_report(run_dir, spec)
    except NoFairnessStatistics as missing:
        log.warning("no fairness audit report: %s", missing)
        return {}
    return {"fairness_report": str(html_path), "fairness_report_json": str(json_path)}


app = make_server_app()
