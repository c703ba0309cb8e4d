"""HF/zoo backend behaviour on the real micro zoo: batching, seeds, stops, scoring, errors."""

from __future__ import annotations

import json
import time

import pytest
import torch

from bbi.backends import REGISTRY, GenerationConfig, load_backend
from bbi.backends.base import Backend
from bbi.errors import BbiError

PROMPTS = [
    "What is the capital of France?",
    "What is 12 plus 30?",
    "Write the word tiger in capital letters.",
    "List these words one per line: apple, river, stone.",
    "Hi",
    "What is the capital of a country that is very far away from here, say Peru or Chile?",
    "What is 1 plus 1?",
]


def test_protocol_and_metadata(micro_teacher):
    assert isinstance(micro_teacher, Backend)
    assert micro_teacher.name == "zoo:teacher"
    assert micro_teacher.chat_format == "plain"  # zoo tokenizers have no chat template
    assert len(micro_teacher.fingerprint) == 16
    builtins = [n for n in REGISTRY if REGISTRY.origin(n) == "builtin"]
    assert builtins == ["hf", "zoo", "openai", "vllm", "ct2", "fast"]


def test_cache_key_fields():
    a = GenerationConfig(temperature=0.7, seed=1, batch_size=4)
    assert a.cache_key() == GenerationConfig(temperature=0.7, seed=1, batch_size=64).cache_key()
    assert a.cache_key() != GenerationConfig(temperature=0.7, seed=2).cache_key()
    assert a.cache_key() != GenerationConfig(temperature=0.8, seed=1).cache_key()
    assert a.cache_key() != GenerationConfig(temperature=0.7, seed=1, stop=("\n",)).cache_key()
    # Greedy decoding ignores temperature/top_p/seed, so they do not split the cache.
    g = GenerationConfig(temperature=0.0, seed=1, top_p=0.5)
    assert g.cache_key() == GenerationConfig(temperature=0.0, seed=9).cache_key()
    assert not g.do_sample and a.do_sample
    assert GenerationConfig(stop=["a"]).stop == ("a",)
    with pytest.raises(BbiError):
        GenerationConfig(top_p=0.0)
    with pytest.raises(BbiError):
        GenerationConfig(max_new_tokens=0)


def test_batched_greedy_equals_unbatched_and_naive_generate(micro_teacher):
    cfg = GenerationConfig(max_new_tokens=24, temperature=0.0, batch_size=4)
    seeds = list(range(len(PROMPTS)))
    batched = micro_teacher.generate(PROMPTS, cfg, seeds)
    single = [micro_teacher.generate([p], cfg, [s])[0] for p, s in zip(PROMPTS, seeds, strict=True)]
    assert batched == single
    # And both equal plain per-prompt transformers generate (no padding at all).
    model, tok = micro_teacher.model, micro_teacher.tokenizer
    for p, g in zip(PROMPTS, batched, strict=True):
        ids = torch.tensor([micro_teacher.encode_prompt(p)])
        out = model.generate(
            ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=24,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
        )[0, ids.shape[1] :]
        new = out.tolist()
        if tok.eos_token_id in new:
            k = new.index(tok.eos_token_id)
            assert g.finish_reason == "stop" and g.n_tokens == k + 1
            new = new[:k]
        else:
            assert g.finish_reason == "length" and g.n_tokens == 24
        assert g.text == tok.decode(new, skip_special_tokens=True).lstrip()


def test_sampling_depends_only_on_own_seed(micro_teacher):
    cfg = GenerationConfig(max_new_tokens=20, temperature=1.0, top_p=0.95, batch_size=3)
    seeds = [101, 102, 103, 104, 105, 106, 107]
    first = micro_teacher.generate(PROMPTS, cfg, seeds)
    again = micro_teacher.generate(PROMPTS, cfg, seeds)
    assert first == again
    # Different batch composition and order: each row still depends on its own seed only.
    order = [6, 2, 0, 5]
    shuffled = micro_teacher.generate(
        [PROMPTS[i] for i in order],
        GenerationConfig(max_new_tokens=20, temperature=1.0, top_p=0.95, batch_size=2),
        [seeds[i] for i in order],
    )
    assert shuffled == [first[i] for i in order]
    alone = micro_teacher.generate([PROMPTS[3]], cfg, [seeds[3]])
    assert alone[0] == first[3]
    # Same prompt, different seeds: samples differ (a real sampler, not greedy).
    same = micro_teacher.generate([PROMPTS[0]] * 8, cfg, list(range(8)))
    assert len({g.text for g in same}) > 1


def test_sampling_follows_the_model_distribution(micro_teacher):
    """The Gumbel-max sampler draws first tokens at the model's own probabilities."""
    prompt = "Hi"
    ids = torch.tensor([micro_teacher.encode_prompt(prompt)])
    with torch.inference_mode():
        probs = torch.softmax(micro_teacher.model(ids).logits[0, -1].float(), -1)
    cfg = GenerationConfig(max_new_tokens=1, temperature=1.0, top_p=1.0, batch_size=64)
    n = 400
    gens = micro_teacher.generate([prompt] * n, cfg, list(range(n)))
    top = int(probs.argmax())
    top_text = micro_teacher.tokenizer.decode([top], skip_special_tokens=True).lstrip()
    freq = sum(g.text == top_text for g in gens) / n
    p = float(probs[top])
    assert abs(freq - p) < 4 * (p * (1 - p) / n) ** 0.5 + 0.01


def test_stop_strings_and_lengths(micro_teacher):
    greedy = GenerationConfig(max_new_tokens=30, temperature=0.0)
    base = micro_teacher.generate(PROMPTS, greedy, [0] * len(PROMPTS))
    i, g = max(enumerate(base), key=lambda t: len(t[1].text))
    assert len(g.text) >= 4
    stop = g.text[2:4]
    cut = micro_teacher.generate(
        [PROMPTS[i]],
        GenerationConfig(max_new_tokens=30, temperature=0.0, stop=(stop, "@@never@@")),
        [0],
    )[0]
    assert cut.finish_reason == "stop"
    assert cut.text == g.text[: g.text.index(stop)].lstrip()
    assert stop not in cut.text
    assert 1 <= cut.n_tokens < g.n_tokens or g.n_tokens == cut.n_tokens == 1
    short = micro_teacher.generate(
        PROMPTS, GenerationConfig(max_new_tokens=2, temperature=0.0), [0] * len(PROMPTS)
    )
    for s in short:
        assert 1 <= s.n_tokens <= 2
        assert s.finish_reason == "stop" or s.n_tokens == 2
    assert any(s.finish_reason == "length" and s.n_tokens == 2 for s in short)
    assert micro_teacher.generate([], greedy, []) == []
    with pytest.raises(BbiError, match="seed"):
        micro_teacher.generate(PROMPTS[:2], greedy, [0])


def test_score_matches_greedy_choices(micro_teacher):
    cfg = GenerationConfig(max_new_tokens=16, temperature=0.0)
    gens = micro_teacher.generate(PROMPTS, cfg, [0] * len(PROMPTS))
    scores = micro_teacher.score(PROMPTS, [g.text for g in gens])
    ranks = [r for s in scores for r in s.ranks]
    assert ranks and sum(r == 1 for r in ranks) / len(ranks) > 0.9  # greedy = argmax tokens
    for s in scores:
        assert len(s.logprobs) == len(s.entropies) == len(s.ranks)
        assert all(lp <= 1e-5 for lp in s.logprobs) and all(e >= -1e-5 for e in s.entropies)
    # A batched score equals scoring each item alone.
    alone = micro_teacher.score(PROMPTS[:1], [gens[0].text])[0]
    assert alone.ranks == scores[0].ranks
    assert alone.logprobs == pytest.approx(scores[0].logprobs, abs=1e-4)
    assert micro_teacher.score(["x"], [""])[0].logprobs == []


def test_plain_hf_path_and_lora(micro_zoo, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    teacher_dir = micro_zoo / "teacher"
    hf = load_backend(f"hf:{teacher_dir}", device="cpu")
    zoo_b = load_backend("zoo:teacher", device="cpu")
    cfg = GenerationConfig(max_new_tokens=12, temperature=0.0)
    assert hf.generate(PROMPTS[:3], cfg, [0, 0, 0]) == zoo_b.generate(PROMPTS[:3], cfg, [0, 0, 0])
    assert hf.fingerprint == load_backend(f"hf:{teacher_dir}", device="cpu").fingerprint

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(teacher_dir)
    peft_model = get_peft_model(
        base,
        LoraConfig(
            r=4,
            lora_alpha=64,
            init_lora_weights=False,
            target_modules=["q_proj", "v_proj", "down_proj"],
        ),
    )
    adapter = tmp_path / "adapter"
    peft_model.save_pretrained(adapter)
    for spec in (f"hf:{teacher_dir}+lora:{adapter}", f"zoo:teacher+lora:{adapter}"):
        lora = load_backend(spec, device="cpu")
        assert lora.fingerprint not in {hf.fingerprint, zoo_b.fingerprint}
        out = lora.generate(
            PROMPTS, GenerationConfig(max_new_tokens=12, temperature=0.0), [0] * len(PROMPTS)
        )
        assert out != hf.generate(
            PROMPTS, GenerationConfig(max_new_tokens=12, temperature=0.0), [0] * len(PROMPTS)
        )
    with pytest.raises(BbiError, match="adapter"):
        load_backend(f"zoo:teacher+lora:{tmp_path / 'missing'}", device="cpu")


def test_load_errors_are_bbi_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(BbiError, match="does not exist"):
        load_backend("hf:./no/such/model/dir")
    with pytest.raises(BbiError, match="not in the Hugging Face cache"):
        t = time.monotonic()
        load_backend("bbi-test-org/definitely-not-cached-model")
    assert time.monotonic() - t < 30
    (tmp_path / "empty").mkdir()
    with pytest.raises(BbiError, match="cannot load"):
        load_backend(f"hf:{tmp_path / 'empty'}")
    with pytest.raises(BbiError, match="unknown dtype"):
        load_backend(f"hf:{tmp_path / 'empty'}", dtype="float8")


def test_trust_remote_code_is_refused(tmp_path):
    model_dir = tmp_path / "custom"
    model_dir.mkdir()
    marker = tmp_path / "code-ran"
    (model_dir / "config.json").write_text(
        json.dumps(
            {
                "model_type": "bbi_custom_arch",
                "auto_map": {
                    "AutoConfig": "configuration_custom.CustomConfig",
                    "AutoModelForCausalLM": "modeling_custom.CustomModel",
                },
            }
        )
    )
    code = f"open({str(marker)!r}, 'w').write('ran')\n"
    (model_dir / "configuration_custom.py").write_text(code)
    (model_dir / "modeling_custom.py").write_text(code)
    with pytest.raises(BbiError, match="--trust-remote-code"):
        load_backend(f"hf:{model_dir}")
    assert not marker.exists()


def test_vllm_missing_is_a_clear_error():
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(BbiError, match=r"install bbi\[vllm\] on a GPU machine"):
            load_backend("vllm:some-org/some-model")
    else:
        pytest.skip("vllm is installed here")


def test_counter_based_rng_matches_splitmix64_reference():
    from bbi.backends.hf import splitmix_uniform

    def reference(key: int, i: int) -> float:
        mask = (1 << 64) - 1
        z = (key + (i + 1) * 0x9E3779B97F4A7C15) & mask
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
        z ^= z >> 31
        return ((z >> 11) + 0.5) * 2.0**-53

    keys = torch.tensor([[12345], [2**62 + 7]])
    index = torch.tensor([[0, 1, 4095], [7, 100000, 3]])
    got = splitmix_uniform(keys, index).tolist()
    want = [[reference(int(keys[r, 0]), int(index[r, c])) for c in range(3)] for r in range(2)]
    assert got == want


@pytest.mark.parametrize("k", [2, 256])  # k=2 forces the full-vocabulary fallback
def test_sampler_is_exact_temperature_top_p(k):
    from bbi.backends.hf import SeededSampler

    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    temperature, top_p = 0.8, 0.9
    probs = (logits / temperature).softmax(-1)[0]
    srt, order = probs.sort(descending=True)
    keep = (srt.cumsum(0) - srt) < top_p
    target = torch.zeros(6)
    target[order[keep]] = srt[keep] / srt[keep].sum()
    n = 4000
    counts = torch.zeros(6)
    empty = torch.zeros(1, 0, dtype=torch.long)
    for seed in range(n):
        counts[SeededSampler(temperature, top_p, [seed], 0, k=k)(empty, logits).argmax()] += 1
    freq = counts / n
    assert float(freq[~torch.isin(torch.arange(6), order[keep])].sum()) == 0.0
    assert torch.allclose(freq, target, atol=4 * (0.25 / n) ** 0.5)
