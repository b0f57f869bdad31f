"""fairness/ works on plain numbers: importing all of it loads neither torch nor Flower."""

from __future__ import annotations

import subprocess
import sys


def test_fairness_imports_neither_torch_nor_flower_nor_the_apps():
    modules = ["audit", "figures", "intervals", "records", "report", "run_store", "site", "spec", "statistics",
               "suppression", "wire"]
    code = (
        "import sys\n"
        + "".join(f"import fairness.{m}\n" for m in modules)
        + "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'flwr', 'tasks', 'server', 'client'))\n"
        + "print(','.join(bad))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""
