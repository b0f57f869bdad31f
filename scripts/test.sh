#!/usr/bin/env bash
# The test suite, exactly as CI runs it. Extra arguments go to pytest.
#
# First the static checks (seconds): ruff's lint, ruff's format check and mypy, all
# configured in pyproject.toml. Then pytest, even if a static check failed, so that one
# run reports everything. The run fails if any stage failed.
# CMRFL_STATIC_CHECKS=0 skips the static checks (while iterating on one test; CI never does).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin

failed=()
stage() {  # stage NAME HINT COMMAND...: run COMMAND, remember NAME and HINT if it fails
  local name=$1 hint=$2
  shift 2
  echo "--- $name" >&2
  if [ ! -x "$1" ]; then
    failed+=("$name: $1 is not installed; $bin/pip install -e \".[dev]\" installs the dev tools")
  elif ! "$@"; then
    failed+=("$name: $hint")
  fi
}

if [ "${CMRFL_STATIC_CHECKS:-1}" != 0 ]; then
  stage "ruff check" "'$bin/ruff check --fix PATH' fixes many; the rest name file, line and rule" \
    "$bin/ruff" check .
  stage "ruff format" "'$bin/ruff format PATH' rewrites the files listed above" \
    "$bin/ruff" format --check .
  stage "mypy" "each error names file, line and the type that does not fit" \
    "$bin/mypy"
fi

echo "--- pytest" >&2
"$bin/python" -m pytest "$@"
status=$?
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests (exit 5): nothing matched the selection" >&2
  status=0
fi
if [ "$status" -ne 0 ]; then
  failed+=("pytest: exit $status")
fi

if [ "${#failed[@]}" -gt 0 ]; then
  echo >&2
  echo "FAILED:" >&2
  printf '  %s\n' "${failed[@]}" >&2
  # pytest's own exit status when it failed; 1 when only a static check did
  [ "$status" -ne 0 ] && exit "$status"
  exit 1
fi
