"""The WDA student (``distill.wda.student``): transplant, fusion, saving, strict loading,
decoding with the WDA cache, the pre-norm residual stream.

Teacher: the micro zoo's Llama (D=48, 2 heads, 2 layers); the micro zoo student (a
Qwen2) stands in for the second family. WDA layers are small (6 masks of 4 waves, top-2,
routing chunks of 4 so that a few decoded tokens cross chunk boundaries).
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from bbi.errors import BbiError
from distill.wda import WaveDensityAttention
from distill.wda.student import (
    FusedWDAAttention,
    WDALlamaForCausalLM,
    drop_teacher,
    freeze_teacher,
    load_wda_student,
    register_wda,
    residual_stream,
    routing_stats,
    set_teacher_scale,
    set_temperature,
    set_wda_scale,
    transplant,
)

WDA = {"num_masks": 6, "num_waves": 4, "top_k": 2, "route_chunk": 4, "gate_hidden": 16}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def teacher_dir(micro_zoo):
    from bbi import zoo

    return zoo.model_path("teacher")


@pytest.fixture(scope="module")
def teacher(teacher_dir):
    return AutoModelForCausalLM.from_pretrained(teacher_dir).eval()


@pytest.fixture(scope="module")
def pad_id(teacher_dir) -> int:
    return int(AutoTokenizer.from_pretrained(teacher_dir).pad_token_id)


def ids_batch(pad_id: int, lengths=(9, 4), seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded random prompts of the given lengths: (input_ids, attention_mask)."""
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.full((len(lengths), width), pad_id)
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for r, n in enumerate(lengths):
        ids[r, width - n :] = torch.randint(3, 384, (n,), generator=g)
        mask[r, width - n :] = 1
    return ids, mask


def logits(model, ids, mask=None) -> torch.Tensor:
    pos = None if mask is None else (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=False).logits


def greedy(model, ids, mask, n: int) -> torch.Tensor:
    """Greedy decoding by n full forward passes (no cache): the reference for generate."""
    for _ in range(n):
        nxt = logits(model, ids, mask)[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], 1)
        mask = torch.cat([mask, mask.new_ones(len(mask), 1)], 1)
    return ids


# --------------------------------------------------------------------------- fusion
def test_teacher_only_is_the_teacher_and_ts0_never_calls_it(teacher, pad_id):
    ids, mask = ids_batch(pad_id)
    want = logits(teacher, ids, mask)
    same = transplant(teacher, WDA, teacher_scale=1.0, wda_scale=0.0).eval()
    assert isinstance(same, WDALlamaForCausalLM)
    assert all(isinstance(layer.self_attn, FusedWDAAttention) for layer in same.model.layers)
    torch.testing.assert_close(logits(same, ids, mask), want, atol=1e-5, rtol=0)

    kept = transplant(teacher, WDA, teacher_scale=0.0, keep_teacher=True).eval()

    def boom(*a, **k):
        raise AssertionError("teacher attention called with ts = 0")

    for layer in kept.model.layers:
        layer.self_attn.teacher.forward = boom
    got = logits(kept, ids, mask)
    assert got.isfinite().all() and (got - want).abs().max() > 1e-2

    # ts = 0 by default builds no teacher branch: nothing to call, nothing saved
    bare = transplant(teacher, WDA, teacher_scale=0.0).eval()
    assert all(layer.self_attn.teacher is None for layer in bare.model.layers)
    assert not any(".self_attn.teacher." in k for k in bare.state_dict())
    torch.testing.assert_close(logits(bare, ids, mask), got, atol=1e-6, rtol=0)
    with pytest.raises(BbiError, match="no teacher branch"):
        set_teacher_scale(bare, 0.5)


def test_mixing_formula(teacher, pad_id):
    """(ts A + s W) / sqrt(ts^2 + s^2), from the two one-branch models."""
    ids, mask = ids_batch(pad_id)
    model = transplant(teacher, WDA, teacher_scale=2.0, wda_scale=1.0).eval()
    outs = {}
    for name, (ts, s) in (("mix", (2.0, 1.0)), ("a", (1.0, 0.0)), ("w", (0.0, 1.0))):
        set_wda_scale(model, 1.0)  # never both 0 on the way
        set_teacher_scale(model, ts)
        set_wda_scale(model, s)
        seen: list[torch.Tensor] = []
        hook = model.model.layers[0].self_attn.register_forward_hook(
            lambda m, a, o, seen=seen: seen.append(o[0])
        )
        logits(model, ids, mask)
        hook.remove()
        outs[name] = seen[0]
    want = (2.0 * outs["a"] + 1.0 * outs["w"]) / 5**0.5
    torch.testing.assert_close(outs["mix"], want, atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------ save and load
def save_student(model, out, teacher_dir) -> None:
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(teacher_dir).save_pretrained(out)


def test_save_load_and_bbi_backend(teacher, teacher_dir, pad_id, tmp_path):
    from bbi.backends import GenerationConfig, load_backend

    model = transplant(teacher, WDA, teacher_scale=1.0, wda_scale=1.0, seed=3).eval()
    set_temperature(model, 0.5)
    out = tmp_path / "wda"
    save_student(model, out, teacher_dir)
    register_wda()
    loaded = AutoModelForCausalLM.from_pretrained(out)  # no trust_remote_code
    assert type(loaded) is WDALlamaForCausalLM
    ids, mask = ids_batch(pad_id)
    torch.testing.assert_close(logits(loaded, ids, mask), logits(model, ids, mask), atol=0, rtol=0)
    assert float(loaded.model.layers[1].self_attn.wda.temperature) == 0.5

    # bbi's own decode loop (KV + WDA cache, rows leave the batch at EOS) = full-forward greedy
    backend = load_backend("hf:" + str(out), device="cpu")
    prompts = ["what is the capital of france", "hi", "name three colours of the sea"]
    cfg = GenerationConfig(max_new_tokens=6, temperature=0.0, batch_size=3)
    gens = backend.generate(prompts, cfg, seeds=[0, 1, 2])
    eos = set(backend.eos_ids)
    for prompt, gen in zip(prompts, gens, strict=True):
        p = torch.tensor([backend.encode_prompt(prompt)])
        row = greedy(model, p, torch.ones_like(p), 6)[0, p.shape[1] :].tolist()
        cut = next((k for k, t in enumerate(row) if t in eos), len(row))
        want = backend.tokenizer.decode(row[:cut], skip_special_tokens=True)
        assert gen.n_tokens == min(cut + 1, 6) and gen.text.strip() == want.strip()
    backend.close()


def test_dropped_teacher_saves_and_loads(teacher, teacher_dir, pad_id, tmp_path):
    model = transplant(teacher, WDA, teacher_scale=1.0, wda_scale=1.0).eval()
    with pytest.raises(BbiError, match="teacher scale to 0"):
        drop_teacher(model)
    set_teacher_scale(model, 0.0)
    ids, mask = ids_batch(pad_id)
    before = logits(model, ids, mask)
    drop_teacher(model)
    save_student(model, tmp_path / "s", teacher_dir)
    assert not any(".teacher." in k for k in load_file(tmp_path / "s" / "model.safetensors"))
    loaded = load_wda_student(tmp_path / "s")
    assert loaded.config.has_teacher is False
    torch.testing.assert_close(logits(loaded, ids, mask), before, atol=0, rtol=0)


@pytest.mark.parametrize("tamper", ["shape", "missing", "extra"])
def test_strict_loading(teacher, teacher_dir, tmp_path, tamper):
    save_student(transplant(teacher, WDA), tmp_path / "s", teacher_dir)
    path = tmp_path / "s" / "model.safetensors"
    tensors = load_file(path)
    name = "model.layers.1.self_attn.wda.freqs"
    if tamper == "shape":
        tensors[name] = tensors[name][:, :, :3].clone()
    elif tamper == "missing":
        del tensors[name]
    else:
        name = "model.layers.1.self_attn.wda.bogus"
        tensors[name] = torch.zeros(3)
    save_file(tensors, path, metadata={"format": "pt"})
    with pytest.raises(BbiError) as err:
        load_wda_student(tmp_path / "s")
    msg = str(err.value)
    assert name in msg and "\n" not in msg
    # the same refusal through bbi's hf: backend (a one-line BbiError, not a re-init)
    from bbi.backends import load_backend

    with pytest.raises(BbiError, match=name.replace(".", r"\.")):
        load_backend("hf:" + str(tmp_path / "s"), device="cpu")


# --------------------------------------------------------------------- generation
@pytest.mark.parametrize("scales", [(1.0, 1.0), (0.0, 1.0)])
def test_generate_equals_greedy_full_forward(teacher, pad_id, scales):
    model = transplant(teacher, WDA, teacher_scale=scales[0], wda_scale=scales[1]).eval()
    ids, mask = ids_batch(pad_id)
    want = greedy(model, ids, mask, 7)
    got = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=7,
        do_sample=False,
        pad_token_id=pad_id,
        eos_token_id=None,
    )
    assert torch.equal(got, want)


def test_cache_follows_batch_selection(teacher, pad_id):
    """bbi drops finished rows with cache.batch_select_indices: the WDA state must follow."""
    model = transplant(teacher, WDA, teacher_scale=1.0, wda_scale=1.0).eval()
    ids, mask = ids_batch(pad_id, lengths=(6, 9))
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    with torch.no_grad():
        first = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache).logits
        nxt = first[:, -1].argmax(-1)
        cache.batch_select_indices(torch.tensor([0]))
        row_mask = torch.cat([mask[:1], mask.new_ones(1, 1)], 1)
        step = model(
            input_ids=nxt[:1, None],
            attention_mask=row_mask,
            position_ids=pos[:1, -1:] + 1,
            cache=cache,
        ).logits[:, -1]
    full = torch.cat([ids[:1], nxt[:1, None]], 1)
    torch.testing.assert_close(step, logits(model, full, row_mask)[:, -1], atol=1e-4, rtol=0)
    assert cache.get_seq_length() == full.shape[1]


# ------------------------------------------------------------------ residual stream
def test_residual_stream_is_pre_norm(teacher, pad_id):
    model = transplant(teacher, WDA).eval()
    ids, mask = ids_batch(pad_id)
    with torch.no_grad():
        stream = residual_stream(model, ids, mask)
        final = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        assert len(stream) == model.config.num_hidden_layers + 1
        torch.testing.assert_close(stream[0], model.model.embed_tokens(ids))
        assert (stream[-1] - final).abs().max() > 1e-2
        torch.testing.assert_close(model.model.norm(stream[-1]), final, atol=1e-6, rtol=0)
        assert len(residual_stream(teacher, ids, mask)) == teacher.config.num_hidden_layers + 1


# ----------------------------------------------------------------- training, seeding
def test_gradients_reach_wda_not_frozen_teacher(teacher, pad_id):
    model = transplant(teacher, WDA, teacher_scale=1.0, wda_scale=1.0).train()
    assert freeze_teacher(model) == 4 * model.config.num_hidden_layers
    ids, mask = ids_batch(pad_id)
    out = model(input_ids=ids, attention_mask=mask, labels=ids.masked_fill(mask == 0, -100))
    out.loss.backward()
    for layer in model.model.layers:
        fused = layer.self_attn
        assert all(p.grad is None for p in fused.teacher.parameters())
        for name in ("gate_w1", "freqs", "amps"):
            grad = getattr(fused.wda, name).grad
            assert grad is not None and grad.abs().sum() > 0, name
        assert fused.wda.v_proj.weight.grad.abs().sum() > 0
    stats = routing_stats(model)
    assert len(stats["layers"]) == 2 and stats["active_masks"] == 2.0


def test_seeded_transplant(teacher):
    a, b = transplant(teacher, WDA, seed=5), transplant(teacher, WDA, seed=5)
    c = transplant(teacher, WDA, seed=6)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    wda_keys = [k for k in sa if ".self_attn.wda." in k and "temperature" not in k]
    assert wda_keys and all(not torch.equal(sa[k], sc[k]) for k in wda_keys if "start" not in k)
    assert all(torch.equal(sa[k], sc[k]) for k in sa if ".self_attn.wda." not in k)
    assert isinstance(a.model.layers[0].self_attn.wda, WaveDensityAttention)
    # WDA keeps its own init (nn.Linear's U(+-1/sqrt(48)), std 0.083), not HF's N(0, 0.02)
    assert a.model.layers[0].self_attn.wda.q_mod.weight.std() > 0.06


# --------------------------------------------------------------------- Qwen2 family
def test_qwen2_family(micro_zoo, pad_id):
    from bbi import zoo

    qwen = AutoModelForCausalLM.from_pretrained(zoo.model_path("student")).eval()
    ids, mask = ids_batch(pad_id)
    same = transplant(qwen, WDA, teacher_scale=1.0, wda_scale=0.0).eval()
    assert same.config.model_type == "bbi_wda_qwen2"
    torch.testing.assert_close(logits(same, ids, mask), logits(qwen, ids, mask), atol=1e-5, rtol=0)
    mixed = transplant(qwen, WDA, teacher_scale=1.0, wda_scale=1.0).eval()
    got = mixed.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=5, do_sample=False,
        pad_token_id=pad_id, eos_token_id=None,
    )  # fmt: skip
    assert torch.equal(got, greedy(mixed, ids, mask, 5))


def test_padding_mask_reaches_wda(teacher, pad_id):
    """A left-padded row gives the logits of the same prompt alone: the 2-D mask got through."""
    model = transplant(teacher, WDA, teacher_scale=1.0, wda_scale=1.0).eval()
    ids, mask = ids_batch(pad_id)
    alone = ids[1:, mask[1] == 1]
    padded = logits(model, ids, mask)[1, mask[1] == 1]
    torch.testing.assert_close(padded, logits(model, alone)[0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="2-D padding"), torch.no_grad():
        model(input_ids=ids, attention_mask=mask[:, None, None, :].bool())
