"""A federated LGE run on Flower's Deployment Engine: SuperLink + one SuperNode per site.

Used for the GPU run (the simulation runtime needs Ray, which the GPU image lacks)
and as a check that `flwr run` drives the same apps as the demo. Prints the final
Dice per site and the sites' training throughput (slices/s) per round.

    .venv/bin/python benchmarks/deployment_run.py [--sites 3 --cases 24 --rounds 3 --device cuda]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import make_sites, save
from cmrfl.recipe import FederationRecipe


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--cases", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--port", type=int, default=9250)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        site_dirs = make_sites(root, args.sites, args.cases, seed=0)
        run_dir = root / "run"
        started = time.perf_counter()
        recipe = FederationRecipe(
            {
                "num-server-rounds": args.rounds,
                "min-train-sites": args.sites,
                "min-available-sites": args.sites,
                "local-epochs": args.local_epochs,
                "device": args.device,
                "run-dir": str(run_dir),
                "resume": False,
            }
        )
        # insecure: a SuperLink and SuperNodes on loopback without TLS, as before
        completed = recipe.deploy_locally(site_dirs, root / "deployment", insecure=True, base_port=args.port)
        seconds = time.perf_counter() - started
        if not (run_dir / "summary.json").is_file():
            print(completed.stdout[-4000:], completed.stderr[-4000:])
            for log in sorted((root / "deployment").glob("*.log")):
                print(f"--- {log.name}\n{log.read_text()[-3000:]}")
            raise SystemExit("the federated run did not finish")
        summary = json.loads((run_dir / "summary.json").read_text())
    throughput = {
        entry["round"]: {site: m.get("train-examples-per-second") for site, m in entry["train"]["sites"].items()}
        for entry in summary["rounds_detail"]
    }
    print(json.dumps(summary["final"], indent=1))
    print("training slices/s per round and site:", json.dumps(throughput, indent=1))
    print(f"wall time {seconds:.1f} s for {args.rounds} rounds on {args.sites} SuperNodes (device={args.device})")
    save(
        f"deployment_run_{args.device}",
        {
            "settings": vars(args),
            "final": summary["final"],
            "train_slices_per_second": throughput,
            "wall_seconds": seconds,
        },
    )


if __name__ == "__main__":
    main()
