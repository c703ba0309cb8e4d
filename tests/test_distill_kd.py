"""White-box KD (``bbi distill kd``) and the shared loop, on the micro zoo pair.

The micro teacher and student share a tokenizer (as zoo models do), so the teacher's
responses to a few train-split prompts are enough for a real, fast KD run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from bbi.config import KDSettings, LoraSettings
from bbi.errors import BbiError
from bbi.runstore import RunDir
from distill.data import Collator, DistillDataset, distillation_pairs, split_eval
from distill.objectives.kd import divergence, generalized_jsd

FAST_KD = dict(epochs=2, batch_size=8, max_length=64, eval_fraction=0.2, dropout=0.0)


pytestmark = pytest.mark.usefixtures("one_thread")


def _kd(run: RunDir, **kwargs):
    from distill.kd import distill_kd

    flags = {k: kwargs.pop(k) for k in list(kwargs) if k in KDSettings.model_fields}
    kwargs.setdefault("progress", False)
    return distill_kd(run, settings=KDSettings().updated(**{**FAST_KD, **flags}), **kwargs)


# ---------------------------------------------------------------------------------------
# the divergences
# ---------------------------------------------------------------------------------------
def _direct(s_logits: torch.Tensor, t_logits: torch.Tensor, beta: float, tau: float):
    """Textbook formulas in float64 from probabilities (not log-space tricks)."""
    s = torch.softmax(s_logits.double() / tau, -1)
    t = torch.softmax(t_logits.double() / tau, -1)

    def kl(p, q):
        return (p * (p / q).log()).sum(-1)

    m = beta * t + (1 - beta) * s
    return kl(t, s), kl(s, t), beta * kl(t, m) + (1 - beta) * kl(s, m)


def test_divergences_match_direct_computation():
    g = torch.Generator().manual_seed(0)
    s_logits, t_logits = torch.randn(5, 11, generator=g) * 2, torch.randn(5, 11, generator=g) * 2
    for tau in (1.0, 2.0):
        for beta in (0.1, 0.5, 0.9):
            fwd, rev, jsd = _direct(s_logits, t_logits, beta, tau)
            got = divergence(s_logits, t_logits, "jsd", beta, tau).double()
            assert torch.allclose(got, jsd, atol=1e-6)
        assert torch.allclose(divergence(s_logits, t_logits, "forward_kl", 0.7, tau).double(), fwd)
        assert torch.allclose(divergence(s_logits, t_logits, "reverse_kl", 0.7, tau).double(), rev)
        # TRL's end points: beta 0 is forward KL(T||S), beta 1 reverse KL(S||T) ...
        assert torch.allclose(divergence(s_logits, t_logits, "jsd", 0.0, tau).double(), fwd)
        assert torch.allclose(divergence(s_logits, t_logits, "jsd", 1.0, tau).double(), rev)
        # ... which are the limits of jsd/beta and jsd/(1-beta).
        ls, lt = (torch.log_softmax(x.double() / tau, -1) for x in (s_logits, t_logits))
        eps = 1e-6
        near0, near1 = generalized_jsd(ls, lt, eps) / eps, generalized_jsd(ls, lt, 1 - eps) / eps
        assert torch.allclose(near0, fwd, rtol=1e-4) and torch.allclose(near1, rev, rtol=1e-4)
    # A divergence: >= 0, and 0 exactly when the distributions agree (shifted logits too).
    assert (divergence(s_logits, t_logits, "jsd", 0.5) >= 0).all()
    same = divergence(t_logits + 3.0, t_logits, "jsd", 0.5)
    assert torch.allclose(same, torch.zeros_like(same), atol=1e-6)
    lp = torch.log_softmax(t_logits, -1)
    assert torch.allclose(generalized_jsd(lp, lp, 0.3), torch.zeros(5), atol=1e-6)


def test_divergences_match_trl_gkd():
    pytest.importorskip("trl")
    gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    g = torch.Generator().manual_seed(1)
    s, t = torch.randn(2, 6, 13, generator=g), torch.randn(2, 6, 13, generator=g)
    labels = torch.tensor([[-100, -100, 4, 5, 6, 7], [-100, 3, 4, 5, -100, -100]])
    mask = labels != -100
    for beta, tau in ((0.0, 1.0), (0.5, 0.9), (0.2, 2.0), (1.0, 1.0)):
        trl = gkd.GKDTrainer.generalized_jsd_loss(s, t, labels=labels, beta=beta, temperature=tau)
        ours = divergence(s[mask], t[mask], "jsd", beta, tau).mean()
        assert float(ours) == pytest.approx(float(trl), rel=1e-5)


# ---------------------------------------------------------------------------------------
# KD on the micro pair
# ---------------------------------------------------------------------------------------
def _forward_kl(student, teacher, examples, pad_id) -> float:
    """Mean KL(teacher || student) over response tokens, computed directly."""
    batch = Collator(pad_id)(examples)
    with torch.no_grad():
        s = student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        t = teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    mask = batch["labels"][:, 1:] != -100
    p_t = F.softmax(t[:, :-1][mask].double(), -1)
    log_s = F.log_softmax(s[:, :-1][mask].double(), -1)
    return float((p_t * (p_t.log() - log_s)).sum(-1).mean())


def test_kd_lowers_heldout_kl_to_teacher(kd_run):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bbi import zoo

    res = _kd(kd_run, full=True, lr=1e-2, epochs=3)
    assert res.completed and res.spec.startswith("hf:") and res.spec.endswith("models/student_kd")
    ev = res.record["eval_loss_per_epoch"]
    assert len(ev) == 4 and ev[-1] < 0.8 * ev[0], ev

    # Recompute KL(teacher || student) directly on the held-out TRAIN prompts.
    model_dir = Path(res.record["model_dir"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    _, held = split_eval(distillation_pairs(kd_run), 0.2, seed=0)
    assert set(kd_run.suite().loc[held["prompt_id"], "split"]) == {"train"}
    examples = DistillDataset(held, tok, 64).examples
    teacher = AutoModelForCausalLM.from_pretrained(zoo.model_path("teacher")).eval()
    base = AutoModelForCausalLM.from_pretrained(zoo.model_path("student")).eval()
    tuned = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    kl_base = _forward_kl(base, teacher, examples, tok.pad_token_id)
    kl_tuned = _forward_kl(tuned, teacher, examples, tok.pad_token_id)
    assert kl_base == pytest.approx(ev[0], rel=1e-4) and kl_tuned == pytest.approx(ev[-1], rel=1e-4)
    assert kl_tuned < 0.8 * kl_base

    rec = kd_run.read_results()["distill"]["student_kd"]
    assert rec["method"] == "kd" and rec["finetune"] == "full" and rec["target_modules"] is None
    assert rec["objective"]["teacher"] == "zoo:teacher" and rec["hyperparameters"]["loss"] == (
        "forward_kl"
    )
    assert kd_run.models()["student_kd"] == {"spec": res.spec, "role": "student"}


def test_kd_resume_equals_uninterrupted_with_on_policy_steps(kd_run, tmp_path):
    """Full fine-tuning (every weight checkpointed), half the steps on the student's samples."""
    from safetensors.torch import load_file

    opts = dict(full=True, lr=1e-2, grad_accum=2, batch_size=4, lambda_on_policy=0.5,
                max_new_tokens=6, loss="jsd", beta=0.3, eval_every_steps=2)  # fmt: skip
    whole = _kd(kd_run, out=tmp_path / "whole", alias="whole", save_every_steps=2, **opts)
    part = _kd(kd_run, out=tmp_path / "part", alias="part", stop_after_steps=3, **opts)
    assert not part.completed and "part" not in kd_run.models()
    resumed = _kd(kd_run, out=tmp_path / "part", alias="part", resume=True, **opts)
    assert resumed.completed and resumed.record["resumed"]
    a = load_file(tmp_path / "whole" / "model.safetensors")
    b = load_file(tmp_path / "part" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.record["eval_loss_per_epoch"] == whole.record["eval_loss_per_epoch"]
    # The metrics log reads as if the run had never stopped.
    lines_a = (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()
    lines_b = (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()
    assert lines_a == lines_b
    steps = [json.loads(x) for x in lines_a if "loss" in json.loads(x)]
    assert [s["step"] for s in steps] == list(range(1, whole.record["steps"] + 1))
    fractions = {s["on_policy"] for s in steps}  # per step: the share of sampled batches
    assert max(fractions) > 0 and min(fractions) < 1
    assert all(s["grad_norm"] > 0 and s["lr"] > 0 for s in steps)


def test_kd_refuses_checkpoint_with_other_divergence(kd_run):
    _kd(kd_run, epochs=1, stop_after_steps=1)
    with pytest.raises(BbiError, match=r"does not match.*hyperparameters\.loss"):
        _kd(kd_run, epochs=1, resume=True, loss="reverse_kl")


def test_full_sft_saves_a_model_bbi_loads(kd_run):
    from bbi.backends import load_backend
    from bbi.backends.base import GenerationConfig
    from distill.lora import distill_lora

    hp = LoraSettings(epochs=1, batch_size=8, max_length=64, lr=1e-2, eval_fraction=0.2)
    res = distill_lora(kd_run, settings=hp, full=True, alias="sft_full", progress=False)
    out = kd_run.path / "models" / "sft_full"
    assert res.spec == f"hf:{out.as_posix()}" and res.record["finetune"] == "full"
    assert (out / "config.json").exists() and (out / "tokenizer_config.json").exists()
    ev = res.record["eval_loss_per_epoch"]
    assert ev[-1] < ev[0]
    backend = load_backend(res.spec, device="cpu")
    try:
        (gen,) = backend.generate(["What is 2 plus 3?"], GenerationConfig(max_new_tokens=4), [0])
        assert gen.n_tokens >= 1
    finally:
        backend.close()
    # Relative output directories are spelled as local paths, never as hub ids.
    from distill.student import student_spec

    assert student_spec("zoo:student", Path("runs/x/models/a"), full=True) == "hf:./runs/x/models/a"


def test_weighted_sampling_spends_the_budget_by_weight(kd_run):
    from distill.lora import distill_lora
    from distill.trainer import epoch_order

    w = [0.0, 1.0, 0.0, 3.0]
    order = epoch_order(4, seed=0, epoch=0, weights=w)
    assert set(order) <= {1, 3} and order == epoch_order(4, 0, 0, w) != epoch_order(4, 0, 1, w)
    assert sorted(epoch_order(6, 0, 0)) == list(range(6))  # no weights: a permutation

    def factual_only(ds):
        return [1.0 if c == "factual" else 0.0 for c in ds.categories]

    hp = LoraSettings(epochs=1, batch_size=8, max_length=64)
    res = distill_lora(kd_run, settings=hp, sample_weights=factual_only, stop_after_steps=1,
                       progress=False)  # fmt: skip
    state = json.loads((res.out_dir / "checkpoint" / "state.json").read_text())
    ds_cats = DistillDataset(
        split_eval(distillation_pairs(kd_run), hp.eval_fraction, 0)[0], _student_tok(), 64
    ).categories
    assert {ds_cats[i] for i in state["data_order"]} == {"factual"}
    assert state["sample_weights"].startswith("sha256:")
    with pytest.raises(BbiError, match="sample_weights"):
        distill_lora(kd_run, settings=hp, resume=True, progress=False)


def _student_tok():
    from transformers import AutoTokenizer

    from bbi import zoo

    return AutoTokenizer.from_pretrained(zoo.model_path("student"))


# ---------------------------------------------------------------------------------------
# the command
# ---------------------------------------------------------------------------------------
def test_cli_kd_end_to_end(kd_run):
    from bbi.app.cli import app
    from bbi.backends import load_backend
    from bbi.backends.base import GenerationConfig

    args = ["distill", "kd", str(kd_run.path), "--alias", "kd1", "--epochs", "1",
            "--batch-size", "8", "--max-length", "64", "--lambda-on-policy", "1",
            "--max-new-tokens", "6", "--loss", "reverse_kl", "--rank", "4", "--no-progress"]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    spec = f"zoo:student+lora:{(kd_run.path / 'adapters' / 'kd1').as_posix()}"
    assert out.output.strip().splitlines()[-1] == spec
    assert kd_run.models()["kd1"] == {"spec": spec, "role": "student"}
    rec = kd_run.read_results()["distill"]["kd1"]
    assert rec["method"] == "kd" and rec["hyperparameters"]["loss"] == "reverse_kl"
    assert rec["objective"]["max_new_tokens"] == 6 and rec["hyperparameters"]["rank"] == 4
    backend = load_backend(spec, device="cpu")
    try:
        assert backend.generate(["Hi"], GenerationConfig(max_new_tokens=3), [0])[0].n_tokens >= 1
    finally:
        backend.close()


def _tiny_other_vocab_model(root: Path) -> Path:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.train_from_iterator(
        ["other words entirely"] * 4,
        trainers.BpeTrainer(vocab_size=300, special_tokens=["<pad>", "<unk>", "<eos>"],
                            initial_alphabet=pre_tokenizers.ByteLevel.alphabet()),
    )  # fmt: skip
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=16, intermediate_size=32,
                      num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(root)
    hf_tok.save_pretrained(root)
    return root


def test_cli_kd_user_errors_are_one_line(kd_run, tmp_path):
    from bbi.app.cli import app

    def fails(*extra: str, run: RunDir = kd_run) -> str:
        out = CliRunner().invoke(app, ["distill", "kd", str(run.path), "--no-progress", *extra])
        lines = out.output.strip().splitlines()
        assert out.exit_code == 2 and len(lines) == 1 and "Traceback" not in out.output, out.output
        return lines[0]

    assert "--loss: Input should be 'forward_kl', 'reverse_kl', 'jsd' or 'uld'" in fails(
        "--loss", "x"
    )
    assert "--beta: Input should be less than or equal to 1" in fails("--beta", "2")
    assert "--lambda-on-policy" in fails("--lambda-on-policy", "-0.5")
    assert "--temperature" in fails("--temperature", "0")
    assert "no local weights" in fails("--teacher-spec", "openai:http://127.0.0.1:9/v1#m")
    other = _tiny_other_vocab_model(tmp_path / "other")
    assert "tokenizers of student" in fails("--teacher-spec", f"hf:{other}")
    # Responses brought with `bbi probe import` come without weights to distil from.
    cfg = kd_run.config()
    cfg["models"]["teacher"]["spec"] = "imported:teacher.jsonl"
    kd_run.write_config(cfg)
    assert "no local weights" in fails()
    with pytest.raises(BbiError, match="pass --teacher-spec"):
        _kd(kd_run)
