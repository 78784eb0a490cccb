#!/usr/bin/env bash
# The vLLM suite: every test marked `vllm` (the vLLM engine against the torch engine on the same
# weights, the demo on vLLM end to end), run in .venv-vllm, which scripts/setup_vllm.sh makes.
# Run: bash scripts/test_vllm.sh [pytest args]
# Needs what scripts/test.sh needs (Postgres for the end-to-end test) and ~2 GB of memory per engine.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_vllm.sh
exec .venv-vllm/bin/python -m pytest -p no:cacheprovider -m vllm "$@"
