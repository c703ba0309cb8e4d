"""The fast: backend (bbi's static-cache decoder) on the micro zoo: grammar, fingerprint by
precision, equality with hf: in float32 (greedy and sampled), seeded reproducibility,
bfloat16 closeness, and the fallback to hf:'s loop for a model it cannot run."""

from __future__ import annotations

import pytest
from engine_helpers import (
    check_fingerprint_by_arg,
    check_probe_through,
    check_wrapping_grammar,
)

from bbi.backends.base import GenerationConfig
from bbi.errors import BbiError
from bbi.fingerprint import spec_fingerprint
from bbi.model_args import check_model_args

PROMPTS = [
    "What is 2 plus 3?",
    "Name a colour.",
    "Write one short sentence about the sea.",
    "Hi",
    "Explain why the sky is blue in one sentence.",
    "List three fruits.",
    "Count from one to five.",
]


def test_grammar_wraps_weight_specs_only():
    check_wrapping_grammar("fast")
    with pytest.raises(BbiError, match="float32 or bfloat16"):
        check_model_args("fast:zoo:teacher", {"dtype": "float16"}, "x")


def test_fingerprint_records_engine_and_precision(micro_zoo):
    from bbi.backends import load_backend

    fast = check_fingerprint_by_arg("fast", {"dtype": "bfloat16"})
    a = load_backend("fast:zoo:teacher", dtype="float32")
    b = load_backend("fast:zoo:teacher", dtype="bfloat16")
    try:
        assert a.fingerprint == fast and b.fingerprint not in (fast, a.fingerprint)
        assert a.engine is not None and b.engine is not None
    finally:
        a.close()
        b.close()


@pytest.mark.parametrize("spec", ["zoo:teacher", "zoo:student"])  # Llama, Qwen2 (q/k/v bias)
def test_float32_equals_hf_greedy_and_sampled(micro_zoo, spec):
    from bbi.backends import load_backend

    hf = load_backend(spec, device="cpu", dtype="float32")
    fast = load_backend(f"fast:{spec}", dtype="float32", threads=1)
    try:
        assert fast.engine is not None
        seeds = list(range(len(PROMPTS)))
        # batch 3 < prompts: slots are refilled as answers end (continuous batching)
        for cfg in (
            GenerationConfig(max_new_tokens=16, temperature=0.0, batch_size=3),
            GenerationConfig(max_new_tokens=16, temperature=0.9, top_p=0.9, batch_size=3),
            GenerationConfig(max_new_tokens=12, temperature=0.0, batch_size=8, stop=(".",)),
        ):
            a, b = hf.generate(PROMPTS, cfg, seeds), fast.generate(PROMPTS, cfg, seeds)
            assert [g.text for g in a] == [g.text for g in b], cfg
            assert [g.n_tokens for g in a] == [g.n_tokens for g in b]
            assert [g.finish_reason for g in a] == [g.finish_reason for g in b]
        with pytest.raises(BbiError, match="scoring is not supported"):
            fast.score(["Hi"], ["x"])
    finally:
        hf.close()
        fast.close()
    with pytest.raises(BbiError, match="closed"):
        fast.generate(["Hi"], GenerationConfig(max_new_tokens=2), [0])


def test_seeded_reproducible_and_batch_independent(micro_zoo):
    from bbi.backends import load_backend

    fast = load_backend("fast:zoo:teacher", dtype="bfloat16", threads=1)
    try:
        cfg = GenerationConfig(max_new_tokens=16, temperature=1.0, top_p=0.95, batch_size=4)
        seeds = list(range(len(PROMPTS)))
        first = [g.text for g in fast.generate(PROMPTS, cfg, seeds)]
        assert [g.text for g in fast.generate(PROMPTS, cfg, seeds)] == first
        # a prompt's answer depends on its seed, not on its batch or slot
        alone = fast.generate(PROMPTS[2:3], cfg, seeds[2:3])
        assert alone[0].text == first[2]
        other = [g.text for g in fast.generate(PROMPTS, cfg, [s + 100 for s in seeds])]
        assert other != first
    finally:
        fast.close()


def test_bfloat16_is_close_to_float32(micro_zoo):
    from bbi.backends import load_backend

    a = load_backend("fast:zoo:teacher", dtype="float32", threads=1)
    b = load_backend("fast:zoo:teacher", dtype="bfloat16", threads=1)
    try:
        cfg = GenerationConfig(max_new_tokens=16, temperature=0.0, batch_size=8)
        seeds = list(range(len(PROMPTS)))
        x, y = a.generate(PROMPTS, cfg, seeds), b.generate(PROMPTS, cfg, seeds)
        same = sum(p.text == q.text for p, q in zip(x, y, strict=True))
        assert same >= len(PROMPTS) // 2, (same, [g.text for g in x], [g.text for g in y])
    finally:
        a.close()
        b.close()


def test_falls_back_to_hf_loop_where_the_engine_cannot_run(micro_zoo, monkeypatch):
    from bbi.backends import fast as fast_mod
    from bbi.backends import load_backend

    monkeypatch.setattr(fast_mod, "SUPPORTED", ())
    hf = load_backend("zoo:teacher", device="cpu", dtype="float32")
    with pytest.warns(UserWarning, match="cannot run this model"):
        fb = load_backend("fast:zoo:teacher", dtype="float32")
    try:
        assert fb.engine is None and "architecture" in fb.fallback
        assert fb.fingerprint == spec_fingerprint("fast:zoo:teacher")
        cfg = GenerationConfig(max_new_tokens=12, temperature=0.8, batch_size=4)
        seeds = list(range(len(PROMPTS)))
        assert [g.text for g in fb.generate(PROMPTS, cfg, seeds)] == [
            g.text for g in hf.generate(PROMPTS, cfg, seeds)
        ]
    finally:
        hf.close()
        fb.close()


def test_probe_runs_through_fast(micro_zoo, tmp_path):
    check_probe_through("fast:zoo:teacher", tmp_path / "r")
