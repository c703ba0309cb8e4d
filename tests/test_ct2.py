"""The ct2: backend (CTranslate2) on the micro zoo: grammar, fingerprint, conversion cache,
greedy agreement with hf:, seeded sampling, and a probe run through it end to end."""

from __future__ import annotations

import importlib.util

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

needs_ct2 = pytest.mark.skipif(
    importlib.util.find_spec("ctranslate2") is None,
    reason="CTranslate2 is not installed (pip install bbi[ct2])",
)
PROMPTS = [
    "What is 2 plus 3?",
    "Name a colour.",
    "Write one short sentence about the sea.",
    "Hi",
    "Explain why the sky is blue in one sentence.",
    "List three fruits.",
]


def test_grammar_wraps_weight_specs_only():
    check_wrapping_grammar("ct2")
    with pytest.raises(BbiError, match="compute_type must be one of"):
        check_model_args("ct2:zoo:teacher", {"compute_type": "int4"}, "x")


def test_fingerprint_never_shares_cache_entries_with_hf(micro_zoo):
    check_fingerprint_by_arg("ct2", {"compute_type": "float32"})


@needs_ct2
def test_greedy_equals_hf_and_sampling_is_seeded(micro_zoo):
    from bbi.backends import load_backend
    from bbi.backends.ct2 import converted_dir

    hf = load_backend("zoo:teacher", device="cpu", dtype="float32")
    ct2 = load_backend("ct2:zoo:teacher", device="cpu", compute_type="float32", threads=1)
    try:
        assert ct2.fingerprint != hf.fingerprint
        # Converted once, content-keyed by the weights' fingerprint and the precision.
        assert converted_dir(spec_fingerprint("zoo:teacher"), "float32").is_dir()
        greedy = GenerationConfig(max_new_tokens=16, temperature=0.0, batch_size=4)
        seeds = list(range(len(PROMPTS)))
        a = hf.generate(PROMPTS, greedy, seeds)
        b = ct2.generate(PROMPTS, greedy, seeds)
        # float32 CTranslate2 vs float32 torch: the same argmax on every step of these.
        assert [g.text for g in a] == [g.text for g in b]
        assert [g.n_tokens for g in a] == [g.n_tokens for g in b]
        assert [g.finish_reason for g in a] == [g.finish_reason for g in b]

        sampled = GenerationConfig(max_new_tokens=16, temperature=0.9, top_p=0.95, batch_size=4)
        first = ct2.generate(PROMPTS, sampled, seeds)
        assert [g.text for g in ct2.generate(PROMPTS, sampled, seeds)] == [g.text for g in first]
        other = ct2.generate(PROMPTS, sampled, [s + 100 for s in seeds])
        assert [g.text for g in other] != [g.text for g in first]
        assert all(g.n_tokens <= 16 for g in first)
        with pytest.raises(BbiError, match="scoring is not supported"):
            ct2.score(["Hi"], ["x"])
    finally:
        hf.close()
        ct2.close()
    with pytest.raises(BbiError, match="closed"):
        ct2.generate(["Hi"], greedy, [0])


@needs_ct2
def test_int8_is_close_to_hf_and_stop_strings_cut_alike(micro_zoo):
    from bbi.backends import load_backend

    hf = load_backend("zoo:teacher", device="cpu", dtype="float32")
    ct2 = load_backend("ct2:zoo:teacher", device="cpu", threads=1)  # int8, the default
    try:
        cfg = GenerationConfig(max_new_tokens=16, temperature=0.0, batch_size=8, stop=(".",))
        seeds = list(range(len(PROMPTS)))
        a, b = hf.generate(PROMPTS, cfg, seeds), ct2.generate(PROMPTS, cfg, seeds)
        assert all("." not in g.text for g in b)
        # int8 weights move a few near-ties; most greedy answers stay identical.
        same = sum(x.text == y.text for x, y in zip(a, b, strict=True))
        assert same >= len(PROMPTS) // 2, (same, [g.text for g in a], [g.text for g in b])
    finally:
        hf.close()
        ct2.close()


@needs_ct2
def test_probe_runs_through_ct2(micro_zoo, tmp_path):
    check_probe_through("ct2:zoo:teacher", tmp_path / "r")


def test_missing_package_is_one_line_error(micro_zoo, monkeypatch):
    import sys

    from bbi.backends import load_backend

    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # import fails
    with pytest.raises(BbiError, match="needs CTranslate2"):
        load_backend("ct2:zoo:teacher", device="cpu")
