"""BIRD: refusal detection, request splits, the objective's arithmetic, layer scan and
diagnostics, and the whole experiment on tiny real models (`bbi distill bird`)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.config import BirdSettings
from bbi.errors import BbiError
from distill.bird import (
    PairedCollator,
    PairedSet,
    diagnostics,
    distill_bird,
    group_families,
    is_refusal,
    pick_layers,
    split_groups,
)
from distill.cka import linear_cka
from distill.objectives.bird import Bird, student_features, student_prompt_span, teacher_features
from distill.objectives.sft import token_losses
from distill.student import load_model
from probes import safety_behaviour, safety_groups

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {
    "n_train": 48, "n_teacher_train": 96, "n_calibration": 48, "n_eval": 48, "epochs": 2,
    "teacher_epochs": 1, "seeds": [0, 1], "batch_size": 16, "max_new_tokens": 6,
}  # fmt: skip


@pytest.mark.parametrize(
    ("text", "refused"),
    [
        ("I can't help with making weapons", True),
        ("I can ' t help with that", True),  # word-level tokenizers space apostrophes
        ("Sorry, I cannot do that.", True),
        ("I cannot", True),
        ("Use a tripod and a slow shutter.", False),
        ("Find its process ID, then kill it. I can't stress this enough", False),
        ("", False),
    ],
)
def test_is_refusal(text, refused):
    assert is_refusal(text) is refused


def test_split_groups_is_a_seeded_partition_of_requests():
    groups = safety_groups()
    s = BirdSettings()
    a = split_groups(groups, s)
    assert a == split_groups(groups, s)
    assert a != split_groups(groups, s.updated(split_seed=1))
    flat = a["student"] + a["calibration"] + a["heldout"]
    assert sorted(flat) == sorted(groups)
    for part in a.values():
        assert any(g.startswith("refuse:") for g in part)
        assert any(g.startswith("comply:") for g in part)


def test_type_split_holds_out_whole_harm_types():
    groups = safety_groups()
    families = group_families(safety_behaviour, groups)
    assert set(families) == set(groups) and len(set(families.values())) > 3
    request = BirdSettings()
    assert split_groups(groups, request, families) == split_groups(groups, request)
    a = split_groups(groups, BirdSettings(split_by="type"), families)
    assert sorted(a["student"] + a["calibration"] + a["heldout"]) == sorted(groups)
    kinds = {
        part: {families[g] for g in a[part] if g.startswith("refuse:")} for part in a
    }  # the harm types in each part: disjoint, every act of a type in one part
    assert all(kinds.values()) and not kinds["heldout"] & kinds["student"]
    assert not kinds["calibration"] & (kinds["student"] | kinds["heldout"])
    for part in a.values():
        assert any(g.startswith("comply:") for g in part)
    with pytest.raises(BbiError, match="too few harm types"):
        split_groups(groups, BirdSettings(split_by="type", heldout_fraction=0.59,
                                          calibration_fraction=0.3), families)  # fmt: skip


def test_behaviour_set_excludes_given_prompts_and_follows_groups():
    groups = safety_groups()[:2] + safety_groups()[-2:]
    first = safety_behaviour(groups, 20, "x")
    again = safety_behaviour(groups, 20, "y", {r["prompt"] for r in first})
    assert {r["group"] for r in first} == set(groups)
    assert not {r["prompt"] for r in first} & {r["prompt"] for r in again}
    for r in first:
        assert r["label"] == r["group"].split(":")[0]
        assert is_refusal(r["target"]) == (r["label"] == "refuse")


def _batch(task_models, n=6):
    model, tok, _ = load_model(task_models["student"])
    teacher, t_tok, _ = load_model(task_models["teacher"])
    tok.pad_token = tok.pad_token or tok.eos_token
    recs = safety_behaviour(safety_groups(), n, "batch")
    ds = PairedSet(recs, "b", tok, t_tok, 160)
    batch = PairedCollator(tok.pad_token_id, t_tok.pad_token_id)([ds[i] for i in range(len(ds))])
    return model, teacher, tok, recs, batch


def test_prompt_span_points_at_the_last_prompt_token(task_models):
    model, _, tok, recs, batch = _batch(task_models)
    last, pmask = student_prompt_span(batch)
    from distill.data import encode_prompt

    for i, rec in enumerate(recs):
        n_prompt = len(encode_prompt(tok, rec["prompt"]))
        assert int(last[i]) == n_prompt - 1
        assert int(pmask[i].sum()) == n_prompt


def test_bird_loss_is_weighted_ce_plus_one_minus_cka(task_models):
    model, teacher, _, _, batch = _batch(task_models)
    obj = Bird(teacher, "model.layers.1", "model.layers.0", task_weight=0.1, cka_weight=0.9)
    sums, counts = obj.token_losses(model, batch)
    ce_sums, ce_counts = token_losses(model, batch)
    u = teacher_features(teacher, "model.layers.1", batch["t_input_ids"],
                         batch["t_attention_mask"], "last")  # fmt: skip
    v = student_features(model, "model.layers.0", batch, "last")
    expected = 0.1 * ce_sums.sum() / ce_counts.sum() + 0.9 * (1 - linear_cka(u, v))
    assert torch.allclose(sums.sum() / counts.sum(), expected, atol=1e-5)
    assert obj.step_metrics()["cka"] == pytest.approx(float(linear_cka(u, v).detach()), abs=1e-5)
    # the task-only arm is the same objective without the CKA term
    task = Bird(teacher, "model.layers.1", "model.layers.0", task_weight=0.1, cka_weight=0.0)
    s2, c2 = task.token_losses(model, batch)
    assert torch.allclose(s2.sum() / c2.sum(), 0.1 * ce_sums.sum() / ce_counts.sum())
    with pytest.raises(Exception, match="no layer named"):
        Bird(teacher, "model.nope", "model.layers.0", task_weight=1, cka_weight=1).token_losses(
            model, batch
        )


def test_layer_pick_and_diagnostics_on_planted_features():
    scan = {
        "teacher_probe_accuracy": {"t0": 0.6, "t1": 0.9, "t2": 0.9},
        "cka": {"t0": {"s0": 0.9, "s1": 0.1}, "t1": {"s0": 0.2, "s1": 0.3},
                "t2": {"s0": 0.5, "s1": 0.4}},
    }  # fmt: skip
    assert pick_layers(scan) == ("t2", "s0")  # the deepest of the best, then most similar
    rng = torch.Generator().manual_seed(0)
    y = torch.arange(80) % 2
    t = torch.randn(80, 4, generator=rng) + 3 * y[:, None]  # separable
    s = torch.randn(80, 4, generator=rng)  # noise
    d = diagnostics(t.numpy(), s.numpy(), y.numpy(), t.numpy(), y.numpy(), 0)
    assert d["task_relevance"] > 0.9 and d["student_probe_accuracy"] < 0.75
    assert d["complementary_knowledge"] > 0.2 and d["behavioural_relevance"] > 0.9


def test_bird_experiment_end_to_end(task_models, tmp_path):
    settings = BirdSettings(teacher=task_models["teacher"], cka_weight=5.0, lr=3e-3, cka_bank=0,
                            **{**SMALL, "n_train": 96, "epochs": 4})  # fmt: skip
    out = tmp_path / "bird"
    rec = distill_bird(task_models["student"], settings, out, behaviour=safety_behaviour,
                       groups=safety_groups(), progress=False)  # fmt: skip
    beh = rec["behaviour"]
    assert beh["arms"] == ["none", "task", "bird"] and set(beh["deltas"]) == {"none", "task"}
    for arm in beh["arms"]:
        for m in ("refusal_rate", "over_refusal_rate", "balanced_accuracy"):
            assert 0 <= beh["rows"][arm][m]["mean"] <= 1
    cka = {a: beh["rows"][a]["guided_cka"]["mean"] for a in beh["arms"]}
    assert cka["bird"] > cka["none"] + 0.05 and cka["bird"] > cka["task"] + 0.05
    assert set(rec["diagnostics"]) == {
        "task_relevance",
        "student_probe_accuracy",
        "complementary_knowledge",
        "behavioural_relevance",
    }
    assert rec["layers"]["teacher"].startswith("model.layers.")
    held = set(rec["task"]["heldout_requests"])
    assert held and not held & set(split_groups(safety_groups(), settings)["student"])
    model, _, _ = load_model(rec["spec"])  # the BIRD student loads through its spec
    assert json.loads((out / "results.json").read_text())["behaviour"] == beh


def test_classifier_teacher_and_diagnose(task_models, tmp_path):
    settings = BirdSettings(teacher=task_models["teacher"], teacher_kind="classifier", **SMALL)
    rec = distill_bird(task_models["student"], settings, tmp_path / "b", behaviour=safety_behaviour,
                       groups=safety_groups(), diagnose_only=True, progress=False)  # fmt: skip
    assert "behaviour" not in rec and rec["teacher_behaviour"] is None
    assert 0 <= rec["diagnostics"]["task_relevance"] <= 1
    assert not (tmp_path / "b" / "model").exists()
    arch = json.loads((tmp_path / "b" / "teacher" / "config.json").read_text())["architectures"]
    assert arch == ["LlamaForSequenceClassification"]


def test_cli_bird_diagnose_and_bad_input(task_models, tmp_path):
    import yaml

    cfg = tmp_path / "bird.yaml"
    cfg.write_text(yaml.safe_dump(SMALL))
    runner = CliRunner()
    res = runner.invoke(app, ["distill", "bird", task_models["student"], "--teacher",
                              task_models["teacher"], "--config", str(cfg), "--diagnose",
                              "--out", str(tmp_path / "o"), "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    shown = json.loads(res.stdout)
    assert set(shown) == {"layers", "diagnostics"}
    for bad, msg in (
        (["--pool", "max"], "--pool"),
        (["--teacher-kind", "oracle"], "--teacher-kind"),
        (["--config", str(tmp_path / "missing.yaml")], "missing.yaml"),
        (["--teacher", "openai:http://x/v1#m"], "teacher"),
    ):
        res = runner.invoke(app, ["distill", "bird", task_models["student"], *bad])
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output
