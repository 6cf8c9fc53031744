#!/usr/bin/env bash
# The prepared GPU check (H100/H200; under 5 minutes): device and versions, bf16/tf32 matmul peaks, small and
# paper preset items/s and MFU in bf16, a short training run whose validation metric must match a CPU run of
# the same seed, and OUT/gpu_check.json. Runs unchanged where only torch (CUDA), numpy, scipy, safetensors,
# pyyaml and tqdm are installed: from the source tree, no pip install.
#   bash benchmarks/gpu_check.sh [OUT]        (default: $OUT, else ./gpu_check_out)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-${OUT:-gpu_check_out}}"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
PYTHONPATH=src timeout 290 python benchmarks/gpu_check.py --out "$out"
