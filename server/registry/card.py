"""The model card: what a hospital needs to know before it uses a registered model.

Built from a finished run directory (``summary.json``, ``fairness-audit.json``,
``final_model.pt``) as JSON for machines and Markdown for people. Both are signed
with the weights (``server/registry/signing.py``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import platform
import sqlite3
from contextlib import closing
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from cmrfl.protocol import Metric
from server.registry.signing import WEIGHTS_FILE, file_sha256
from tasks import get_task
from tasks.base import Task

CARD_FORMAT = "cmrfl-model-card/1"
SOFTWARE = ("cmrfl", "torch", "monai", "flwr", "opacus", "numpy", "pydicom", "mlflow")
TRAINING_KEYS = (
    "num-server-rounds",
    "strategy",
    "local-epochs",
    "batch-size",
    "learning-rate",
    "proximal-mu",
    "server-learning-rate",
    "max-local-steps",
    "seed",
    "fairness-mitigation",
    "fairness-balance-attribute",
)


class RunDirError(ValueError):
    """A run directory that cannot be registered; the message names the file."""


def read_summary(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    if not path.is_file():
        raise RunDirError(f"{path}: not found; is {run_dir} a finished cmrfl run folder?")
    try:
        summary = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise RunDirError(f"{path}: not valid JSON ({error})") from None
    for key in ("task", "strategy", "rounds", "sites", "final", "rounds_detail"):
        if key not in summary:
            raise RunDirError(f"{path}: has no {key!r}; was the run finished?")
    if not (Path(run_dir) / WEIGHTS_FILE).is_file():
        raise RunDirError(f"{Path(run_dir) / WEIGHTS_FILE}: not found (the run wrote no final model)")
    return summary


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def _network(task: Task, weights_path: Path) -> dict[str, Any]:
    checkpoint = torch.load(weights_path, map_location="cpu", weights_only=True)
    parameters = sum(int(t.numel()) for t in checkpoint["state_dict"].values())
    return {"parameters": parameters, "weights_file": WEIGHTS_FILE, **task.describe_model().network}


def _sites(summary: dict[str, Any]) -> list[dict[str, Any]]:
    last_train: dict[str, Any] = {}
    for entry in summary["rounds_detail"]:  # the latest round each site trained in
        last_train |= entry.get("train", {}).get("sites", {})
    per_site = summary["final"].get("per_site", {})
    return [
        {
            "site": site,
            "training_slices": int(last_train.get(site, {}).get(Metric.NUM_EXAMPLES, 0)),
            "validation_cases": int(per_site.get(site, {}).get("cases_evaluated", 0)),
        }
        for site in summary["sites"]
    ]


def _privacy(summary: dict[str, Any]) -> dict[str, Any]:
    privacy = summary.get("privacy", {})
    dp_sgd = privacy.get("dp_sgd", {"enabled": False})
    epsilon_per_site = {
        site: {"epsilon": spent.get("epsilon"), "delta": spent.get("delta")}
        for site, spent in dp_sgd.get("sites", {}).items()
    }
    return {
        "dp_sgd": dp_sgd,
        "epsilon_per_site": epsilon_per_site if dp_sgd.get("enabled") else "DP-SGD off: no per-site ε",
        "client_level_dp": privacy.get("client_dp", {"mode": "off"}),
        "secure_aggregation": privacy.get("secure_aggregation", {"enabled": False}),
        "update_guard": privacy.get("update_guard", {}),
    }


def _fairness(run_dir: Path) -> dict[str, Any]:
    path = run_dir / "fairness-audit.json"
    if not path.is_file():
        return {"report": None, "summary": ["No fairness audit in the run folder."]}
    audit = json.loads(path.read_text())
    final_round = (audit.get("rounds") or [{}])[-1]
    gaps = final_round.get("gaps", [])
    return {
        "report": "fairness-audit.json (and .html), logged with the run",
        "summary": audit.get("summary", []),
        "tolerances": audit.get("tolerances", {}),
        "mitigation": audit.get("training", {}).get("description"),
        "final_round_gaps_compared": len(gaps),
        "final_round_gaps_flagged": sum(1 for g in gaps if g.get("flagged")),
    }


def case_store_fingerprint(site_dir: Path) -> dict[str, Any] | None:
    """SHA-256 over a site's case-store index (sorted case id and content hash per case).

    A site recomputes it from its own store to check that a model was trained on the
    data it thinks; it reveals nothing (case ids are salted hashes).
    """
    index = Path(site_dir) / "store" / "index.sqlite"
    if not index.is_file():
        return None
    with closing(sqlite3.connect(f"file:{index}?mode=ro", uri=True)) as db:
        rows = db.execute("SELECT case_id, content_sha256 FROM cases ORDER BY case_id").fetchall()
    digest = hashlib.sha256("".join(f"{case}:{content}\n" for case, content in rows).encode())
    return {"cases": len(rows), "index_sha256": digest.hexdigest()}


def _fingerprints(run_dir: Path, summary: dict[str, Any]) -> dict[str, Any]:
    fingerprints: dict[str, Any] = {
        "summary_json_sha256": file_sha256(run_dir / "summary.json"),
    }
    if (run_dir / "metrics.csv").is_file():
        fingerprints["metrics_csv_sha256"] = file_sha256(run_dir / "metrics.csv")
    # Only a run whose site folders are on this machine (the demo) can fingerprint their
    # case stores; in a deployment the stores never leave the hospitals.
    site_dirs = summary.get("demo", {}).get("site_dirs", [])
    stores = {Path(d).name: case_store_fingerprint(Path(d)) for d in site_dirs}
    stores = {site: fp for site, fp in stores.items() if fp is not None}
    if stores:
        fingerprints["case_store_indices"] = stores
        fingerprints["method"] = "SHA-256 over each site's case-store index (case id and content hash per case)"
    else:
        fingerprints["method"] = (
            "the sites' case stores are not visible to the server: the card fingerprints the run's "
            "summary.json and metrics.csv, which record every site's per-round example counts and metrics"
        )
    return fingerprints


def build_model_card(run_dir: Path, model_name: str, tracking_run_id: str | None = None) -> dict[str, Any]:
    run_dir = Path(run_dir)
    summary = read_summary(run_dir)
    weights = run_dir / WEIGHTS_FILE
    run_config = summary.get("run_config", {})
    task = get_task(summary["task"])
    return {
        "format": CARD_FORMAT,
        "model_name": model_name,
        "created_utc": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "task": {"name": task.name, "description": task.description, "headline": dict(task.headline_labels)},
        "network": _network(task, weights),
        "weights": {"file": WEIGHTS_FILE, "sha256": file_sha256(weights), "bytes": weights.stat().st_size},
        "input": task.describe_model().input,
        "training": {
            "rounds": summary["rounds"],
            "strategy": summary["strategy"],
            "resumed_from_round": summary.get("resumed_from_round", 0),
            "run_config": {k: run_config[k] for k in TRAINING_KEYS if k in run_config},
            "sites": _sites(summary),
            "tracking_run_id": tracking_run_id,
        },
        "performance": summary["final"],
        "privacy": _privacy(summary),
        "fairness": _fairness(run_dir),
        "data_fingerprints": _fingerprints(run_dir, summary),
        # summary.json does not record the training software, so these are the versions where the
        # card is written (the registering machine); the consortium runs one release everywhere.
        "software": {"python": platform.python_version(), **{p: _version(p) for p in SOFTWARE}},
        "software_recorded": "at registration, on the registering machine",
    }


def write_model_card(card: dict[str, Any], folder: Path) -> tuple[Path, Path]:
    from server.registry.signing import CARD_FILE, CARD_MARKDOWN_FILE

    folder.mkdir(parents=True, exist_ok=True)
    json_path, markdown_path = folder / CARD_FILE, folder / CARD_MARKDOWN_FILE
    json_path.write_text(json.dumps(card, indent=2, sort_keys=False) + "\n")
    markdown_path.write_text(card_markdown(card))
    return json_path, markdown_path


def _number(value: Any, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def card_markdown(card: dict[str, Any]) -> str:
    """The card for people: the same facts as the JSON, in reading order."""
    training, privacy, fairness = card["training"], card["privacy"], card["fairness"]
    # The task's headline figures (summary.json key -> column title), as the card recorded them.
    overall = card["performance"].get("overall", {})
    columns = card["task"].get("headline") or {k: k.replace("_", " ") for k in overall if k != "cases_evaluated"}
    lines = [
        f"# Model card: {card['model_name']}",
        "",
        f"{card['task']['description']}. Created {card['created_utc']}.",
        "",
        "## Network and input",
        f"- Network: {card['network'].get('architecture', card['task']['name'])}, "
        f"{card['network']['parameters']:,} parameters",
        f"- Weights: `{card['weights']['file']}`, SHA-256 `{card['weights']['sha256']}`",
    ]
    lines += [f"- {key.replace('_', ' ').capitalize()}: {value}" for key, value in card["input"].items()]
    lines += [
        "",
        "## Training",
        f"- {training['rounds']} federated rounds, strategy {training['strategy']}",
        f"- Settings: {', '.join(f'{k}={v}' for k, v in training['run_config'].items())}",
        "",
        "| site | training slices | validation cases |",
        "| --- | ---: | ---: |",
        *(f"| {s['site']} | {s['training_slices']} | {s['validation_cases']} |" for s in training["sites"]),
        "",
        "## Performance of the final model (sites' validation cases)",
        "",
        "| site | cases | " + " | ".join(columns.values()) + " |",
        "| --- | ---: |" + " ---: |" * len(columns),
    ]
    rows = {**card["performance"].get("per_site", {}), "all sites": card["performance"].get("overall", {})}
    for site, m in rows.items():
        figures = " | ".join(_number(m.get(key)) for key in columns)
        lines.append(f"| {site} | {m.get('cases_evaluated', 0)} | {figures} |")
    epsilon = privacy["epsilon_per_site"]
    lines += [
        "",
        "## Privacy",
        f"- Secure aggregation (SecAgg+): {'on' if privacy['secure_aggregation'].get('enabled') else 'off'}",
        "- DP-SGD per site: "
        + (
            ", ".join(f"{site} ε={_number(v['epsilon'], 2)} at δ={v['delta']}" for site, v in epsilon.items())
            if isinstance(epsilon, dict)
            else epsilon
        ),
        f"- Client-level DP: {json.dumps(privacy['client_level_dp'])}",
        "",
        "## Fairness audit",
        *(f"- {line}" for line in fairness["summary"]),
        "",
        "## Data fingerprints",
        f"- Method: {card['data_fingerprints']['method']}",
    ]
    for key, value in card["data_fingerprints"].items():
        if key == "case_store_indices":
            lines += [f"- {site}: {v['cases']} cases, index SHA-256 `{v['index_sha256']}`" for site, v in value.items()]
        elif key != "method":
            lines.append(f"- {key}: `{value}`")
    lines += [
        "",
        "## Software",
        ", ".join(f"{name} {version}" for name, version in card["software"].items())
        + f" (recorded {card.get('software_recorded', 'when the card was written')})",
        "",
        "The weights, this card and its JSON form are signed by the consortium model-signing key "
        "(model-signature.json); `cmrfl registry pull` refuses a model whose signature does not verify.",
        "",
    ]
    return "\n".join(lines)
