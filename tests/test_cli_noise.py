"""A plain (non-TTY) `bbi` command shows bbi's output, not library warnings and bars."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path


def test_probe_run_output_has_no_library_noise(micro_zoo, tmp_path: Path) -> None:
    suite = tmp_path / "suite.jsonl"
    suite.write_text(
        "".join(
            json.dumps({"id": f"q{i}", "prompt": f"What is {i} plus {i}?"}) + "\n" for i in range(6)
        ),
        encoding="utf-8",
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS",)}
    env.pop("TRANSFORMERS_NO_ADVISORY_WARNINGS", None)
    cmd = [sys.executable, "-m", "bbi.app.cli", "probe", "run", "--teacher", "zoo:teacher"]
    cmd += ["--student", "zoo:student", "--run", str(tmp_path / "r"), "--suite", str(suite)]
    cmd += ["--max-new-tokens", "6", "--no-progress"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, check=False)
    both = out.stdout + out.stderr
    assert out.returncode == 0, both
    assert "semantic similarity" in both  # bbi's own result table
    for noise in ("Warning", "Loading weights", "deprecated", "it/s]"):
        assert noise not in both, both
