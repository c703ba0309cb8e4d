"""Helpers the engine-backend tests (``ct2:``, ``fast:``) share."""

from __future__ import annotations

from pathlib import Path

from bbi.probe_run import ModelEntry, ProbeSettings, run_probe
from bbi.runstore import RunDir, read_jsonl


def check_probe_through(spec: str, run_dir: Path) -> None:
    """A probe run answers through ``spec`` (the teacher) beside a plain ``zoo:student``,
    respects the token limit, records the spec, and a rerun generates nothing."""
    suite = [
        {
            "id": f"factual-{i:05d}",
            "category": "factual",
            "subcategory": "t",
            "split": "test" if i % 2 else "train",
            "prompt": f"Question {i}: what is {i} plus {i + 1}?",
            "reference": None,
            "source": "test",
            "perturbation": None,
            "base_id": None,
        }
        for i in range(4)
    ]
    models = [
        ModelEntry("teacher", spec, "teacher", args={"threads": 1}),
        ModelEntry("student", "zoo:student", "student"),
    ]
    settings = ProbeSettings(max_new_tokens=8, batch_size=4, seed=3)
    man = run_probe(run_dir, models, suite, settings, progress=False)
    lines = list(read_jsonl(RunDir(run_dir).responses_path("teacher")))
    assert len(lines) == 4 and all(ln["n_tokens"] <= 8 for ln in lines)
    assert man["models"]["teacher"]["spec"] == spec
    again = run_probe(run_dir, models, suite, settings, progress=False)
    assert again["timings"]["generate:teacher"]["generated"] == 0
