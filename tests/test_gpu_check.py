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
    # Exit 0: every check that ran passed. The dry run is deterministic (seeded zoo,
    # one thread), and one LoRA epoch on the micro teacher's responses lowers the held-out
    # loss (the script's own success criterion), so 1 here is a regression, not noise.
    assert res.returncode == 0, (res.stdout[-2000:], res.stderr[-2000:])
    assert "FAILED" not in res.stderr and "FAIL" not in res.stdout
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
