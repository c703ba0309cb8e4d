"""KD for real pairs: the chunked loss and the cached top-k teacher, on the micro zoo pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bbi.config import KDSettings
from bbi.runstore import RunDir
from distill.data import Collator, encode_pair
from distill.objectives.kd import KD, divergence, topk_divergence

pytestmark = pytest.mark.usefixtures("one_thread")

FAST_KD = dict(epochs=2, batch_size=8, max_length=64, eval_fraction=0.2, dropout=0.0)

# Chunked and unchunked losses are the same float32 computation row by row; only the
# order of the final reductions can differ. Measured: |diff| < 1e-6 on these models.
LOSS_TOL = dict(rel=1e-5, abs=1e-6)
GRAD_TOL = dict(rtol=1e-4, atol=1e-6)
# Top-64 + one tail bucket vs the full-vocabulary forward KL on the micro pair (384 tokens,
# a barely trained teacher whose top 64 hold ~80% of the mass): measured 3.2% below it.
TOPK_REL_GAP = 0.05


@pytest.fixture(scope="module")
def pair(micro_zoo):
    """The micro zoo's student (trainable, full weights) and teacher, and a batch."""
    from conftest import make_synthetic_corpus

    from distill.student import load_model

    student, tok, _ = load_model("zoo:student")
    teacher, _, _ = load_model("zoo:teacher")
    items = make_synthetic_corpus(3, 4)
    examples = [encode_pair(tok, it["prompt"], it["reference"], 64) for it in items]
    return student, teacher, tok, Collator(tok.pad_token_id)(examples)


def _loss_and_grads(student, objective, batch):
    student.zero_grad(set_to_none=True)
    sums, counts = objective.token_losses(student, batch)
    loss = sums.sum() / counts.sum()
    loss.backward()
    grads = {n: p.grad.clone() for n, p in student.named_parameters() if p.grad is not None}
    return sums.detach(), float(loss.detach()), grads


@pytest.mark.parametrize("loss", ["forward_kl", "jsd"])
def test_chunked_kd_equals_unchunked_loss_and_gradients(pair, loss):
    from distill.objectives.chunked import _HEAD_OK

    student, teacher, tok, batch = pair
    results = {}
    for chunk in (0, 5, 16):
        hp = KDSettings(loss=loss, beta=0.3, temperature=1.5, kl_chunk=chunk)
        kd = KD(teacher, hp, max_new_tokens=8, pad_id=tok.pad_token_id)
        results[chunk] = _loss_and_grads(student, kd, batch)
    assert _HEAD_OK[type(student)] is True  # the chunked path really split at the head
    ref_sums, ref_loss, ref_grads = results[0]
    assert len(ref_grads) == len(list(student.parameters()))
    for chunk in (5, 16):
        sums, value, grads = results[chunk]
        assert value == pytest.approx(ref_loss, **LOSS_TOL)
        torch.testing.assert_close(sums, ref_sums, rtol=1e-5, atol=1e-6)
        assert grads.keys() == ref_grads.keys()
        for name, g in grads.items():
            torch.testing.assert_close(g, ref_grads[name], **GRAD_TOL, msg=name)


def test_chunked_rows_fall_back_to_logits_where_the_head_does_not_split(pair):
    """A model whose logits are not head(hidden) (here: soft-capped) is detected."""
    from distill.objectives.chunked import _HEAD_OK, response_rows

    student, _, _, batch = pair

    class Capped(type(student)):
        def forward(self, input_ids=None, attention_mask=None, logits_to_keep=0, **kw):
            out = super().forward(input_ids, attention_mask, logits_to_keep=logits_to_keep, **kw)
            out.logits = 30 * torch.tanh(out.logits / 30)
            return out

    capped = Capped(student.config)
    capped.load_state_dict(student.state_dict())
    rows, head, mask = response_rows(capped, batch)
    assert head is None and _HEAD_OK[Capped] is False
    assert rows.shape == (int(mask.sum()), student.config.vocab_size)


def test_topk_divergence_is_exact_when_k_covers_the_vocabulary():
    from distill.teacher_cache import topk_rows

    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(20, 50, generator=g), 3 * torch.randn(20, 50, generator=g)
    ids, lp, tail = (torch.from_numpy(x) for x in topk_rows(t, 50, 2.0))
    assert torch.isneginf(tail).all()
    for loss in ("forward_kl", "reverse_kl", "jsd"):
        full = divergence(s, t, loss, 0.4, 2.0)
        approx = topk_divergence(s, ids, lp, tail, loss, 0.4, 2.0)
        torch.testing.assert_close(approx, full, rtol=2e-3, atol=2e-4)  # float16 values


def test_topk_kl_is_close_below_the_full_kl_on_the_zoo_pair(pair):
    from distill.teacher_cache import topk_rows

    student, teacher, _, batch = pair
    with torch.no_grad():
        kw = dict(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        s, t = student(**kw).logits[:, :-1], teacher(**kw).logits[:, :-1]
    mask = batch["labels"][:, 1:] != -100
    s, t = s[mask], t[mask]
    full = float(divergence(s, t, "forward_kl", 0.5).mean())
    gaps = []
    for k in (16, 64, 128):
        ids, lp, tail = (torch.from_numpy(x) for x in topk_rows(t, k, 1.0))
        approx = float(topk_divergence(s, ids, lp, tail, "forward_kl", 0.5).mean())
        assert approx <= full * (1 + 1e-4)  # the coarsened KL never exceeds the full one
        gaps.append((full - approx) / full)
    assert gaps == sorted(gaps, reverse=True)  # more of the teacher kept, closer
    assert gaps[1] < TOPK_REL_GAP, gaps


# ---------------------------------------------------------------------------------------
# --teacher-logits cache, end to end
# ---------------------------------------------------------------------------------------
def _kd(run: RunDir, **kwargs):
    from distill.kd import distill_kd

    flags = {k: kwargs.pop(k) for k in list(kwargs) if k in KDSettings.model_fields}
    kwargs.setdefault("progress", False)
    return distill_kd(run, settings=KDSettings().updated(**{**FAST_KD, **flags}), **kwargs)


def test_cached_kd_trains_without_the_teacher_and_resumes_its_cache(kd_run, monkeypatch):
    import distill.kd
    import distill.teacher_cache as tc

    monkeypatch.setattr(tc, "SHARD_EXAMPLES", 8)
    loads = []
    real_load = distill.kd.load_model

    def counting_load(spec, dtype="float32"):
        loads.append(spec)
        return real_load(spec, dtype)

    monkeypatch.setattr(distill.kd, "load_model", counting_load)
    flags = dict(teacher_logits="cache", top_k=16, full=True, lr=1e-2, kl_chunk=7)
    res = _kd(kd_run, alias="s1", **flags)
    assert res.completed and loads == ["zoo:teacher"]
    ev = res.record["eval_loss_per_epoch"]
    assert ev[-1] < 0.8 * ev[0], ev
    obj = res.record["objective"]
    assert obj["teacher_logits"] == "cache" and obj["top_k"] == 16
    root = kd_run.path / distill.kd.TEACHER_CACHE_DIR
    dirs = sorted(p for p in root.iterdir())
    assert len(dirs) == 2  # train and held-out sets
    train_dir = max(dirs, key=lambda p: len(list(p.glob("shard-*.npz"))))
    shards = sorted(train_dir.glob("shard-*.npz"))
    assert len(shards) >= 3 and (train_dir / "manifest.json").exists()
    with np.load(shards[0]) as z:
        assert z["ids"].dtype == np.int32 and z["logprobs"].dtype == np.float16
        assert z["ids"].shape[1] == 16

    # Cached: the teacher is never loaded again, and training is the same.
    res2 = _kd(kd_run, alias="s2", **flags)
    assert loads == ["zoo:teacher"]
    assert res.record["objective_stats"]["cache_shards_computed"] >= len(shards) + 1
    assert res2.record["objective_stats"]["cache_shards_computed"] == 0
    assert res2.record["eval_loss_per_epoch"] == ev

    # A lost shard (an interrupted build) is recomputed alone, to the same numbers.
    before = np.load(shards[1])["logprobs"]
    shards[1].unlink()
    res3 = _kd(kd_run, alias="s3", **flags)
    assert loads == ["zoo:teacher"] * 2
    np.testing.assert_array_equal(np.load(shards[1])["logprobs"], before)
    assert res3.record["eval_loss_per_epoch"] == ev


def test_cached_kd_refuses_on_policy(kd_run):
    from bbi.errors import BbiError

    with pytest.raises(BbiError, match="on-policy"):
        _kd(kd_run, teacher_logits="cache", lambda_on_policy=0.5)


# ---------------------------------------------------------------------------------------
# across tokenizers: --loss uld
# ---------------------------------------------------------------------------------------
def test_uld_distance_ignores_which_token_is_which_and_vocabulary_size():
    from distill.objectives.uld import uld_distance

    g = torch.Generator().manual_seed(0)
    t = torch.randn(6, 40, generator=g)
    perm = t[:, torch.randperm(40, generator=g)]
    padded = torch.cat([perm, torch.full((6, 25), -1e4)], dim=-1)  # 25 tokens of no mass
    torch.testing.assert_close(uld_distance(padded, t), torch.zeros(6), atol=1e-6, rtol=0)
    other = torch.randn(6, 40, generator=g)
    assert (uld_distance(other, t) > 0.05).all()
    assert (uld_distance(other, t) <= 2.0).all()  # an L1 distance of two distributions


@pytest.fixture(scope="module")
def other_tokenizer_student(tmp_path_factory, synthetic_corpus) -> str:
    """A tiny Qwen2 model on a byte-level BPE tokenizer trained here (not the zoo's)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    root = tmp_path_factory.mktemp("other_tok") / "student"
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, special_tokens=["<pad>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )  # fmt: skip
    texts = [f"{it['prompt']} {it['reference']}" for it in synthetic_corpus(2, 12)]
    tk.train_from_iterator(texts, trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>")
    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, intermediate_size=64, max_position_embeddings=512,
        pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
    )  # fmt: skip
    Qwen2ForCausalLM(cfg).save_pretrained(root)
    tok.save_pretrained(root)
    return f"hf:{root}"


def test_uld_distils_across_tokenizers(kd_run, other_tokenizer_student):
    from bbi.errors import BbiError
    from distill.student import load_model

    _, s_tok, _ = load_model(other_tokenizer_student)
    _, t_tok, _ = load_model("zoo:teacher")
    assert s_tok.get_vocab() != t_tok.get_vocab()
    with pytest.raises(BbiError, match="shared vocabulary"):
        _kd(kd_run, student=other_tokenizer_student, alias="kl", epochs=1)
    res = _kd(kd_run, student=other_tokenizer_student, loss="uld", full=True, lr=1e-2)
    assert res.completed and res.record["objective"]["name"] == "kd_uld"
    ev = res.record["eval_loss_per_epoch"]
    assert ev[-1] < 0.8 * ev[0], ev
    assert kd_run.models()["student_kd"]["spec"] == res.spec


def test_uld_batch_pairs_each_model_with_its_own_tokens(kd_run, other_tokenizer_student):
    """The teacher sees its own tokenization of the same text, the student its own."""
    from distill.data import DistillDataset, distillation_pairs
    from distill.objectives.uld import TeacherTokensDataset, TwoTokenizerCollator
    from distill.student import load_model

    _, s_tok, _ = load_model(other_tokenizer_student)
    _, t_tok, _ = load_model("zoo:teacher")
    ds = DistillDataset(distillation_pairs(kd_run).head(4), s_tok, 64)
    both = TeacherTokensDataset(ds, t_tok, 128)
    batch = TwoTokenizerCollator(s_tok.pad_token_id, t_tok.pad_token_id)(
        [both[i] for i in range(4)]
    )
    for i, (_, response) in enumerate(ds.texts):
        s_resp = batch["labels"][i][batch["labels"][i] != -100].tolist()
        t_resp = batch["teacher_labels"][i][batch["teacher_labels"][i] != -100].tolist()
        assert s_tok.decode(s_resp, skip_special_tokens=True).strip() == response.strip()
        assert t_tok.decode(t_resp, skip_special_tokens=True).strip() == response.strip()
    assert both.fingerprint() == ds.fingerprint()


# ---------------------------------------------------------------------------------------
# more data: the builders' training corpus (--corpus-prompts)
# ---------------------------------------------------------------------------------------
def test_corpus_prompts_add_data_and_never_a_suite_prompt(kd_run):
    import pandas as pd

    from bbi.app.corpus import corpus_pairs, corpus_records
    from bbi.errors import BbiError
    from distill.method import with_extra_pairs
    from probes import default_suite

    cfg = kd_run.config()
    cfg["generation"] = {**(cfg.get("generation") or {}), "max_new_tokens": 16}
    kd_run.write_config(cfg)
    suite_prompts = set(kd_run.suite()["prompt"]) | {r["prompt"] for r in default_suite()}
    records = corpus_records(kd_run, 30, seed=0)
    assert len(records) == 30 and len({r["category"] for r in records}) == 10
    assert not {r["prompt"] for r in records} & suite_prompts

    extra = corpus_pairs(kd_run, 30, seed=0)
    assert len(extra) == 30 and set(extra["split"]) == {"train"}
    assert not set(extra["prompt"]) & suite_prompts
    again = corpus_pairs(kd_run, 30, seed=0)  # answered from the response cache
    pd.testing.assert_frame_equal(extra, again)

    base = _kd(kd_run, alias="base", epochs=1)
    more = _kd(kd_run, alias="more", epochs=1, extra_pairs=extra)
    assert more.record["n_corpus_prompts"] == 30 and "n_corpus_prompts" not in base.record
    assert more.record["n_train_prompts"] + more.record["n_eval_prompts"] == (
        base.record["n_train_prompts"] + base.record["n_eval_prompts"] + 30
    )
    assert more.record["loss_tokens"] > base.record["loss_tokens"]

    leak = extra.head(2).copy()
    leak.loc[leak.index[0], "prompt"] = kd_run.suite()["prompt"].iloc[-1]  # a test prompt
    with pytest.raises(BbiError, match="never hold a suite prompt"):
        with_extra_pairs(kd_run, distillation_pairs_of(kd_run), leak)


def distillation_pairs_of(run):
    from distill.data import distillation_pairs

    return distillation_pairs(run)


# ---------------------------------------------------------------------------------------
# on-policy samples through bbi's generation path
# ---------------------------------------------------------------------------------------
def test_on_policy_backend_sampler_trains_deterministically_and_times_sampling(kd_run):
    opts = dict(epochs=1, lambda_on_policy=1.0, max_new_tokens=6, on_policy_sampler="backend")
    a = _kd(kd_run, alias="a", **opts)
    b = _kd(kd_run, alias="b", **opts)
    assert a.completed and a.record["eval_loss_per_epoch"] == b.record["eval_loss_per_epoch"]
    stats = a.record["objective_stats"]
    assert stats["on_policy_samples"] == a.record["n_train_examples"]
    assert 0 < stats["generate_s"] < a.record["train_time_s"]


def test_decode_rows_is_the_backend_generation(micro_teacher):
    """HFBackend generates through decode_rows: the same ids for the same seeds."""
    from bbi.backends.base import GenerationConfig
    from bbi.backends.hf import decode_rows

    prompts = ["Write the word apple in capital letters.", "List these words: a, b."]
    cfg = GenerationConfig(max_new_tokens=8)
    gens = micro_teacher.generate(prompts, cfg, seeds=[3, 4])
    rows = decode_rows(
        micro_teacher.model, [micro_teacher.encode_prompt(p) for p in prompts], [3, 4],
        pad_id=micro_teacher.pad_id, eos_ids=micro_teacher.eos_ids, max_new_tokens=8,
        temperature=cfg.temperature, top_p=cfg.top_p, do_sample=cfg.do_sample,
        keeps_logits=micro_teacher._keeps_logits,
    )  # fmt: skip
    for g, row in zip(gens, rows, strict=True):
        assert micro_teacher._finish(row, cfg).text == g.text
