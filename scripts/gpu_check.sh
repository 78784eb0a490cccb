#!/usr/bin/env bash
# The engine checks on a CUDA machine, for users and for us: the tests marked gpu (the torch engine
# in bf16 on the GPU against float32 on the CPU), the vLLM suite when vLLM is installed (it then
# runs on the GPU), and benchmarks/engines.py (throughput, log-prob gap, a 1 GB version's
# publication and load) when vLLM is there; the DeepSpeed suite (its ranks on the GPUs, joined by
# NCCL) and benchmarks/train_engines.py when DeepSpeed is installed. What it measured goes in
# docs/engines.md.
# Run: bash scripts/gpu_check.sh [OUT_DIR]     (in an environment with jetrl[dev] installed)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-check}
mkdir -p "$out"
PY=${PYTHON:-python3}
"$PY" - <<'PY'
import torch
assert torch.cuda.is_available(), "no CUDA device: scripts/gpu_check.sh is for a GPU machine"
print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)
PY
"$PY" -m pytest -p no:cacheprovider -q -m gpu tests/unit 2>&1 | tee "$out/gpu-tests.txt"
if "$PY" -c "import vllm" 2>/dev/null; then
  "$PY" -m pytest -p no:cacheprovider -q -m vllm tests/unit 2>&1 | tee "$out/vllm-tests.txt"
  "$PY" benchmarks/engines.py --json "$out/engines.json" 2>&1 | tee "$out/engines.txt"
else
  echo "vLLM is not installed here: its suite and benchmarks/engines.py were skipped" | tee "$out/vllm-skipped.txt"
fi
if "$PY" -c "import deepspeed" 2>/dev/null; then
  "$PY" -m pytest -p no:cacheprovider -q -m deepspeed tests/unit 2>&1 | tee "$out/deepspeed-tests.txt"
  "$PY" benchmarks/train_engines.py --json "$out/train_engines.json" 2>&1 | tee "$out/train_engines.txt"
else
  echo "DeepSpeed is not installed here (DS_BUILD_OPS=0 pip install '.[deepspeed]'): its suite was skipped" |
    tee "$out/deepspeed-skipped.txt"
fi
