"""Helpers the engine-backend tests (``ct2:``, ``fast:``) share."""

from __future__ import annotations

from pathlib import Path

import pytest

from bbi.errors import BbiError
from bbi.fingerprint import spec_fingerprint
from bbi.probe_run import ModelEntry, ProbeSettings, model_fingerprint, run_probe
from bbi.runstore import RunDir, read_jsonl
from bbi.specs import parse_spec


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


def check_wrapping_grammar(kind: str) -> None:
    """``KIND:SPEC`` wraps a spec with local weights (adapters kept), and nothing else."""
    ms = parse_spec(f"{kind}:zoo:teacher")
    assert ms.kind == kind and ms.name_or_path == "zoo:teacher"
    assert str(ms) == f"{kind}:zoo:teacher"
    wrapped = f"{kind}:hf:org/name@v1+lora:./a"
    assert str(parse_spec(wrapped)) == wrapped
    for bad in (f"{kind}:", f"{kind}:openai:http://127.0.0.1:8000/v1#m", f"{kind}:{kind}:zoo:t"):
        with pytest.raises(BbiError):
            parse_spec(bad)


def check_fingerprint_by_arg(kind: str, args: dict) -> str:
    """An engine's answers never share cache entries with ``hf:``'s, and ``args`` (a
    precision) gives another fingerprint; returns the default fingerprint."""
    fp = spec_fingerprint(f"{kind}:zoo:teacher")
    assert fp != spec_fingerprint("zoo:teacher")
    settings = ProbeSettings()
    default = model_fingerprint(ModelEntry("t", f"{kind}:zoo:teacher"), settings)
    other = model_fingerprint(ModelEntry("t", f"{kind}:zoo:teacher", args=args), settings)
    assert default == fp and other != fp
    return fp
