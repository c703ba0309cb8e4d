"""LoRA distillation on a tiny real Llama-architecture model built in the test."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from bbi.chat import format_prompt
from bbi.config import LoraSettings
from bbi.errors import BbiError
from bbi.runstore import RunDir, append_jsonl, write_json
from distill.lora import (
    IGNORE_INDEX,
    Collator,
    DistillDataset,
    default_target_modules,
    distillation_pairs,
    encode_pair,
    split_eval,
    token_losses,
)

WORDS = [
    "red",
    "blue",
    "green",
    "gold",
    "pink",
    "gray",
    "cyan",
    "lime",
    "navy",
    "teal",
    "plum",
    "rose",
    "sand",
    "snow",
]
TEST_WORDS = ["alpha", "omega", "zeta", "sigma"]  # only ever in test-split prompts
# Wider than the usual 0.02 so the random base's output layer can express a peaked
# distribution: LoRA adapts the inner projections only, as on a pretrained student.
INIT_RANGE = 0.3
FAST = dict(rank=4, alpha=8, epochs=2, lr=3e-2, batch_size=8, max_length=48)


def distill_lora(run: RunDir, **kwargs):
    """``distill.lora.distill_lora`` with hyperparameters given flag-style, as the CLI does."""
    from distill.lora import distill_lora as run_lora

    flags = {k: kwargs.pop(k) for k in list(kwargs) if k in LoraSettings.model_fields}
    kwargs.setdefault("progress", False)
    return run_lora(run, settings=LoraSettings().updated(**flags), **kwargs)


def _corpus() -> list[str]:
    lines = [
        f"User: Repeat twice: {a} {b}\nAssistant: {a} {b} {a} {b} done."
        for a in WORDS
        for b in WORDS
    ]
    lines += [f"Repeat twice: {a} {b}" for a in TEST_WORDS for b in TEST_WORDS]
    return lines


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A 2-layer Llama with a BPE tokenizer trained here; saved like any HF checkpoint."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<unk>", "<eos>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(_corpus(), trainer)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<eos>", pad_token="<pad>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(hf_tok),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=128,
        pad_token_id=hf_tok.pad_token_id,
        eos_token_id=hf_tok.eos_token_id,
        bos_token_id=None,
        initializer_range=INIT_RANGE,
    )
    path = tmp_path_factory.mktemp("tiny-llama")
    LlamaForCausalLM(config).save_pretrained(path)
    hf_tok.save_pretrained(path)
    return path


def _make_run(root: Path, model_path: Path, n_train: int = 60, with_teacher: bool = True) -> RunDir:
    """A run dir whose teacher answers a learnable pattern; test prompts use other words."""
    run = RunDir(root, create=True)
    rng = random.Random(0)
    suite, responses = [], []
    for i in range(n_train + 8):
        test = i >= n_train
        words = TEST_WORDS if test else WORDS
        a, b = rng.choice(words), rng.choice(words)
        pid = f"factual-{i:05d}"
        suite.append(
            {"id": pid, "category": "factual", "subcategory": "repeat",
             "prompt": f"Repeat twice: {a} {b}", "split": "test" if test else "train",
             "reference": None, "source": "generated", "perturbation": None, "base_id": None}
        )  # fmt: skip
        for sample in range(2 if i % 5 == 0 else 1):
            text = f"{a} {b} {a} {b} done."
            responses.append(
                {"prompt_id": pid, "sample": sample, "text": text,
                 "n_tokens": 5, "finish_reason": "stop"}
            )  # fmt: skip
    append_jsonl(run.suite_path, suite)
    if with_teacher:
        append_jsonl(run.responses_path("teacher"), responses)
    run.write_config(
        {"models": {"teacher": {"spec": "zoo:teacher", "role": "teacher"},
                    "student": {"spec": f"hf:{model_path}", "role": "student"}}}
    )  # fmt: skip
    return run


def _adapter_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(path / "adapter_model.safetensors")


# ---------------------------------------------------------------------------------------
def test_loss_mask_covers_only_response_tokens(tiny_model):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    for template in (None, "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}<|assistant|>"):  # fmt: skip
        tok.chat_template = template
        prompt, response = "Repeat twice: red blue", "red blue red blue done."
        enc = encode_pair(tok, prompt, response, max_length=64)
        text, fmt = format_prompt(tok, prompt)
        n_prompt = len(tok(text, add_special_tokens=(fmt == "plain"))["input_ids"])
        assert fmt == ("plain" if template is None else "chat_template")
        assert enc["labels"][:n_prompt] == [IGNORE_INDEX] * n_prompt
        assert enc["labels"][n_prompt:] == enc["input_ids"][n_prompt:]
        assert all(lab != IGNORE_INDEX for lab in enc["labels"][n_prompt:])
        assert enc["labels"][-1] == tok.eos_token_id
        # The response tokens decode back to the response (the boundary is clean).
        assert tok.decode(enc["input_ids"][n_prompt:-1]).strip() == response
    # A prompt that fills max_length leaves nothing to learn: the example is dropped.
    assert encode_pair(tok, "red " * 40, "x", max_length=8) is None

    batch = Collator(tok.pad_token_id)([{"input_ids": [5, 6, 7], "labels": [-100, 6, 7]},
                                        {"input_ids": [5], "labels": [5]}])  # fmt: skip
    assert batch["labels"][1].tolist() == [5, IGNORE_INDEX, IGNORE_INDEX]
    assert batch["attention_mask"][1].tolist() == [1, 0, 0]


def test_no_test_prompt_enters_distillation_data(tmp_path, tiny_model):
    from transformers import AutoTokenizer

    run = _make_run(tmp_path / "run", tiny_model)
    suite = run.suite()
    pairs = distillation_pairs(run)
    assert set(suite.loc[pairs["prompt_id"], "split"]) == {"train"}
    assert not any(w in p for p in pairs["prompt"] for w in TEST_WORDS)
    # every train prompt and every sample of it is used
    assert len(pairs) == sum(1 for i in range(60) for _ in range(2 if i % 5 == 0 else 1))
    train, held = split_eval(pairs, 0.1, seed=0)
    assert set(train["prompt_id"]).isdisjoint(held["prompt_id"])
    assert held["prompt_id"].nunique() == 6 and len(train) + len(held) == len(pairs)
    ds = DistillDataset(train, AutoTokenizer.from_pretrained(tiny_model), max_length=48)
    test_ids = set(suite.index[suite["split"] == "test"])
    assert test_ids and not test_ids & set(ds.prompt_ids)


def test_training_lowers_heldout_loss_and_adapter_loads(tmp_path, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    run = _make_run(tmp_path / "run", tiny_model)
    res = distill_lora(run, eval_fraction=0.15, dropout=0.0, **{**FAST, "epochs": 3})
    assert res.completed
    ev = res.record["eval_loss_per_epoch"]
    assert len(ev) == 4  # base model, then one per epoch
    assert ev[-1] < 0.6 * ev[0], ev
    assert res.record["n_train_examples"] + res.record["n_eval_examples"] == len(
        distillation_pairs(run)
    )
    assert res.record["tokens_per_s"] > 0 and res.record["seed"] == 0
    assert sorted(res.record["target_modules"]) == sorted(
        ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )

    # Registered: results.json and run.yaml carry the new student and its spec.
    adapter = tmp_path / "run" / "adapters" / "student_lora"
    assert res.spec == f"hf:{tiny_model}+lora:{adapter.as_posix()}"
    assert json.loads(run.results_path.read_text())["distill"]["student_lora"]["spec"] == res.spec
    assert run.models()["student_lora"] == {"spec": res.spec, "role": "student"}

    # A standard peft directory: PeftModel loads it, and it reproduces the final eval loss.
    assert (adapter / "adapter_config.json").exists()
    tok = AutoTokenizer.from_pretrained(tiny_model)
    loaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    loaded.eval()
    _, held = split_eval(distillation_pairs(run), 0.15, seed=0)
    batch = Collator(tok.pad_token_id)(list(DistillDataset(held, tok, 48).examples))
    with torch.no_grad():
        sums, counts = token_losses(loaded, batch)
    assert float(sums.sum() / counts.sum()) == pytest.approx(ev[-1], rel=1e-4)


def test_resume_reproduces_uninterrupted_run(tmp_path, tiny_model):
    run = _make_run(tmp_path / "run", tiny_model)
    opts = {**FAST, "dropout": 0.2, "grad_accum": 2, "batch_size": 4, "eval_fraction": 0.1}
    full = distill_lora(run, out=tmp_path / "full", save_every_steps=2, **opts)
    part = distill_lora(run, out=tmp_path / "part", stop_after_steps=3, alias="part", **opts)
    assert not part.completed and "part" not in run.models()
    state = json.loads((tmp_path / "part" / "checkpoint" / "state.json").read_text())
    assert state["global_step"] == 3 and state["micro_in_epoch"] == 6 and state["epoch"] == 0
    resumed = distill_lora(run, out=tmp_path / "part", alias="part", resume=True, **opts)
    assert resumed.completed and resumed.record["resumed"]
    a, b = _adapter_weights(tmp_path / "full"), _adapter_weights(tmp_path / "part")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert any(k for k in a if "lora_B" in k and a[k].abs().sum() > 0)
    assert resumed.record["train_loss_per_epoch"] == full.record["train_loss_per_epoch"]
    assert resumed.record["eval_loss_per_epoch"] == full.record["eval_loss_per_epoch"]


def test_resume_refuses_mismatched_or_missing_checkpoint(tmp_path, tiny_model):
    run = _make_run(tmp_path / "run", tiny_model)
    opts = {**FAST, "epochs": 1}
    with pytest.raises(BbiError, match="nothing to resume"):
        distill_lora(run, resume=True, **opts)
    distill_lora(run, stop_after_steps=1, **opts)
    with pytest.raises(BbiError, match=r"does not match.*hyperparameters\.lr: checkpoint 0\.03"):
        distill_lora(run, resume=True, **{**opts, "lr": 3e-3})
    # Other teacher responses are other training data: the checkpoint cannot continue.
    lines = run.responses_path("teacher").read_text().replace("done.", "end.")
    run.responses_path("teacher").write_text(lines)
    with pytest.raises(BbiError, match="does not match.*train_data"):
        distill_lora(run, resume=True, **opts)
    # The mismatch left the checkpoint alone: the original settings and data still resume.
    run.responses_path("teacher").write_text(lines.replace("end.", "done."))
    assert distill_lora(run, resume=True, **opts).completed


def test_bad_options_are_user_errors(tmp_path, tiny_model):
    run = _make_run(tmp_path / "run", tiny_model)
    with pytest.raises(BbiError, match="--rank"):
        distill_lora(run, **{**FAST, "rank": 0})
    with pytest.raises(BbiError, match="--eval-fraction"):
        distill_lora(run, **{**FAST, "eval_fraction": 1.0})
    with pytest.raises(BbiError, match="teacher"):
        distill_lora(run, alias="teacher", **FAST)
    with pytest.raises(BbiError, match="target modules"):
        distill_lora(run, target_modules=["no_such_layer"], **FAST)
    bare = _make_run(tmp_path / "bare", tiny_model, with_teacher=False)
    with pytest.raises(BbiError, match="no responses"):
        distill_lora(bare, **FAST)
    only_test = _make_run(tmp_path / "only_test", tiny_model)
    write_json(only_test.path / "x.json", {})
    suite = [dict(r, split="test") for r in only_test.suite().to_dict("records")]
    only_test.suite_path.unlink()
    append_jsonl(only_test.suite_path, suite)
    with pytest.raises(BbiError, match="train-split"):
        distill_lora(RunDir(only_test.path), **FAST)

    from bbi.app.cli import app

    out = CliRunner().invoke(app, ["distill", "lora", str(run.path), "--rank", "0"])
    assert out.exit_code == 2 and "--rank: Input should be greater than or equal to 1" in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert "Traceback" not in out.output


def test_cli_distils_and_prints_spec(tmp_path, tiny_model):
    from bbi.app.cli import app

    run = _make_run(tmp_path / "run", tiny_model, n_train=24)
    args = ["distill", "lora", str(run.path), "--alias", "lora1", "--rank", "4", "--epochs", "1",
            "--batch-size", "8", "--max-length", "48", "--target-modules", "q_proj,v_proj",
            "--no-progress"]  # fmt: skip
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    spec = f"hf:{tiny_model}+lora:{(run.path / 'adapters' / 'lora1').as_posix()}"
    assert spec in out.output
    rec = run.read_results()["distill"]["lora1"]
    assert rec["target_modules"] == ["q_proj", "v_proj"] and rec["hyperparameters"]["rank"] == 4


def test_default_target_modules_per_architecture():
    from transformers import GPT2Config, GPT2LMHeadModel, OPTConfig, OPTForCausalLM

    gpt2 = GPT2LMHeadModel(GPT2Config(n_embd=16, n_layer=1, n_head=2, vocab_size=50))
    assert default_target_modules(gpt2) == ["c_attn", "c_proj"]
    opt = OPTForCausalLM(
        OPTConfig(hidden_size=16, num_hidden_layers=1, ffn_dim=32, num_attention_heads=2,
                  vocab_size=50, word_embed_proj_dim=16)
    )  # fmt: skip
    assert default_target_modules(opt) == ["q_proj", "v_proj"]  # peft's table for opt


def test_token_losses_match_full_logits(tiny_model):
    """Skipping prompt-prefix logits must not change the loss."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model)
    model = AutoModelForCausalLM.from_pretrained(tiny_model).eval()
    examples = [
        encode_pair(tok, p, r, 48)
        for p, r in [("Repeat twice: red blue", "red blue red blue done."),
                     ("Repeat twice: teal", "teal teal done."),
                     ("Repeat twice: gold gold gold pink", "x")]
    ]  # fmt: skip
    batch = Collator(tok.pad_token_id)(examples)
    with torch.no_grad():
        sums, counts = token_losses(model, batch)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    labels = batch["labels"][:, 1:]
    full = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, logits.size(-1)), labels.reshape(-1), reduction="none"
    ).view(labels.shape)
    assert torch.allclose(sums, full.sum(1), atol=1e-4)
    assert counts.tolist() == (labels != IGNORE_INDEX).sum(1).tolist()


def test_adapter_files_do_not_depend_on_hash_seed(tmp_path, tiny_model):
    """peft keeps target modules as a set; written in hash order, a LoRA student's files
    (and its fingerprint) would change with PYTHONHASHSEED."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bbi.config import AdapterSettings
    from distill.student import make_lora_model, save_student

    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    model = make_lora_model(
        AutoModelForCausalLM.from_pretrained(tiny_model), AdapterSettings(target_modules=targets)
    )
    save_student(model, AutoTokenizer.from_pretrained(tiny_model), tmp_path / "a")
    written = json.loads((tmp_path / "a" / "adapter_config.json").read_text())
    assert written["target_modules"] == sorted(targets)
