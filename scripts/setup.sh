#!/usr/bin/env bash
# Create .venv and install jetrl with its test tools, the bench extra (matplotlib, which the
# bench tests plot with) and DeepSpeed (the `deepspeed` tests; its ops are not pre-built, and the one
# it needs on CPU is JIT-compiled at first use and cached in TORCH_EXTENSIONS_DIR, ~35 s once),
# pinned by constraints.txt.
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
  DS_BUILD_OPS=0 .venv/bin/python -m pip install -q -c constraints.txt -e '.[dev,bench,deepspeed]'
  echo "$want" > "$stamp"
fi
# Headless Chromium, Debian's package (~15 s as root): tests/unit/jetrl/test_report.py renders
# `jetrl report`'s page with it. Elsewhere: install chromium from your distribution.
# A failed install is said and left to that one test, not made every test's failure.
if ! command -v chromium >/dev/null && command -v apt-get >/dev/null && [ "$(id -u)" -eq 0 ]; then
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null; }; then
    echo "scripts/setup.sh: could not install chromium with apt-get; install it to run tests/unit/jetrl/test_report.py" >&2
  fi
fi
