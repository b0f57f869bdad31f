#!/usr/bin/env bash
# Create .venv and install cmrfl into it (first use only; `make` reruns this when
# pyproject.toml changes). On a machine without an NVIDIA GPU, torch's CPU build is
# installed first so that the `torch>=…` requirement is already met and pip does
# not download a multi-GB CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "cmrfl needs Python >= 3.11; found $("$python" --version 2>&1). Set PYTHON=/path/to/python3.11." >&2
  exit 1
fi
[ -x .venv/bin/python ] || "$python" -m venv .venv
pip=(.venv/bin/python -m pip --disable-pip-version-check)
"${pip[@]}" install -q --upgrade pip

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  echo "NVIDIA GPU found: installing the CUDA build of torch"
else
  # CMRFL_TORCH_SPEC / CMRFL_TORCH_INDEX let other CPU-only hosts pick their CPU wheel,
  # e.g. CMRFL_TORCH_INDEX=https://download.pytorch.org/whl/cpu
  spec=${CMRFL_TORCH_SPEC:-torch==2.13.0}
  echo "No NVIDIA GPU: installing the CPU build of torch ($spec)"
  if [ -n "${CMRFL_TORCH_INDEX:-}" ]; then
    "${pip[@]}" install -q "$spec" --index-url "$CMRFL_TORCH_INDEX"
  else
    "${pip[@]}" install -q "$spec"
  fi
fi
"${pip[@]}" install -q -e ".[dev]"
touch .venv/.installed
echo "cmrfl installed in .venv ($(.venv/bin/cmrfl --help >/dev/null && echo ok))"
