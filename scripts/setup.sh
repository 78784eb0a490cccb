#!/usr/bin/env bash
# Create .venv and install jetrl with its test tools and the bench extra (matplotlib, which the
# bench tests plot with), pinned by constraints.txt.
# Run: bash scripts/setup.sh        (idempotent; re-run after changing pyproject.toml)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.jetrl-installed
want=$(cat pyproject.toml constraints.txt | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev,bench]'
  echo "$want" > "$stamp"
fi
