#!/usr/bin/env bash
# Check bbi's GPU paths (HF vs vLLM greedy agreement, LoRA distillation on CUDA) on a GPU
# machine in a few minutes; prints a one-screen summary. Needs: bash scripts/setup.sh with a
# CUDA torch, and `pip install 'bbi[vllm]'` for the vLLM half (skipped when missing).
# Usage: bash scripts/gpu-check.sh [--device cuda:0] [--dtype bfloat16] [--skip-vllm]
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -d .venv ]; then source .venv/bin/activate; fi
export HF_HUB_OFFLINE=1
bbi zoo build smollm2 >/dev/null
exec python scripts/gpu_check.py "$@"
