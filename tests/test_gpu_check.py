"""scripts/gpu_check.py runs its checks on a CPU too (so the GPU script cannot rot)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")
ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run_on_cpu(micro_zoo, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py"), "--device", "cpu",
         "--dtype", "float32", "--skip-vllm", "--teacher", "zoo:teacher", "--student",
         "zoo:student", "--prompts", "4", "--limit", "30", "--max-new-tokens", "8",
         "--work", str(tmp_path / "w")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600,
    )  # fmt: skip
    # 1 is allowed (a micro model's eval loss may not fall), a failed command is not
    assert res.returncode in (0, 1) and "FAILED" not in res.stderr, res.stderr[-2000:]
    out = res.stdout
    assert "bbi GPU check on cpu" in out and "HF greedy: 4 prompts" in out
    assert "vLLM: skipped (--skip-vllm)" in out
    assert "LoRA distillation: probe" in out and "student: " in out


def test_gpu_check_without_cuda_says_so():
    res = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_check.py")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert res.returncode == 1 and "no CUDA device" in res.stderr
