"""Circuit distillation: the task, head taps, mean ablation, gradient masks, matching,
and the whole experiment on tiny real models (`bbi distill circuit`)."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.config import CircuitSettings
from distill.circuit import distill_circuit, pick_circuit
from distill.heads import HeadTap, head_means, layout, train_only_heads
from distill.student import load_model
from distill.tasks import entity_tracking, entity_vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = {
    "n_train": 192, "n_teacher_train": 256, "n_scan": 48, "n_ablation": 48, "n_eval": 96,
    "epochs": 2, "teacher_epochs": 2, "teacher_lr": 3e-3, "lr": 3e-3, "seeds": [0, 1],
    "cka_weight": 5.0, "batch_size": 32,
}  # fmt: skip


def test_entity_tracking_is_seeded_and_correct(task_models):
    _, tok, _ = load_model(task_models["student"])
    objects, boxes = entity_vocabulary([tok])
    a = entity_tracking(50, 1, objects, boxes)
    assert a == entity_tracking(50, 1, objects, boxes)
    assert a != entity_tracking(50, 2, objects, boxes)
    for ex in a:
        assert 3 <= ex.n_boxes <= 5
        assert f"Box {ex.query_box} contains the{ex.answer}" in ex.prompt
        assert ex.prompt.endswith(f"Box {ex.query_box} contains the")
        assert len(tok.encode(ex.answer, add_special_tokens=False)) == 1
    prakash = entity_tracking(5, 1, objects, boxes, template="is_in")
    assert all(f"{e.answer.strip()} is in Box {e.query_box}" in e.prompt for e in prakash)


def test_vocabulary_too_small_is_a_user_error():
    class OneCharTokenizer:
        def encode(self, text, add_special_tokens=False):
            return list(text)

    from bbi.errors import BbiError

    with pytest.raises(BbiError, match="single-token objects"):
        entity_vocabulary([OneCharTokenizer()])


def _batch(tok, prompts):
    enc = tok(prompts, return_tensors="pt", padding=True)
    return enc["input_ids"], enc["attention_mask"]


def test_head_tap_reads_the_o_proj_input_and_mean_ablation_is_exact(task_models):
    model, tok, _ = load_model(task_models["student"])
    lay = layout(model)
    ids, mask = _batch(tok, ["The cup is in Box F and the key is in Box Q . Box F contains the"])
    seen = {}
    handle = lay.attns[1].o_proj.register_forward_pre_hook(
        lambda _m, args: seen.__setitem__("x", args[0])
    )
    with torch.no_grad(), HeadTap(model) as tap:
        tap.capture = {(1, 3)}
        base = model(input_ids=ids, attention_mask=mask).logits
    handle.remove()
    d = lay.head_dim
    assert torch.equal(tap.captured[(1, 3)], seen["x"][:, -1, 3 * d : 4 * d])
    # The mean over one prompt is that prompt: ablating with it changes nothing.
    means = head_means(model, iter([{"input_ids": ids, "attention_mask": mask}]), ids.size(1))
    with torch.no_grad(), HeadTap(model) as tap:
        tap.ablate, tap.means = {(0, 1), (1, 2)}, means
        same = model(input_ids=ids, attention_mask=mask).logits
        tap.means = torch.zeros_like(means)
        changed = model(input_ids=ids, attention_mask=mask).logits
    assert torch.allclose(same, base, atol=1e-5)
    assert not torch.allclose(changed, base, atol=1e-3)


def test_train_only_heads_moves_only_the_circuit_rows(task_models):
    model, tok, _ = load_model(task_models["student"])
    lay = layout(model)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids, mask = _batch(tok, ["The cup is in Box F . Box F contains the"] * 2)
    with train_only_heads(model, {(1, 1)}) as n:
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1,
                                weight_decay=0.0)  # fmt: skip
        for _ in range(3):
            model(input_ids=ids, attention_mask=mask).logits.sum().backward()
            opt.step()
            opt.zero_grad()
    d, group = lay.head_dim, lay.n_heads // lay.n_kv_heads
    assert n > 0
    for name, p in model.named_parameters():
        diff = (p.detach() - before[name]).abs()
        if not name.startswith("model.layers.1.self_attn."):
            assert diff.max() == 0, name
            continue
        rows = diff.sum(dim=1) if diff.dim() == 2 else diff
        if "q_proj" in name:
            changed, keep = slice(d, 2 * d), [*range(0, d), *range(2 * d, rows.numel())]
        elif "k_proj" in name or "v_proj" in name:
            g = 1 // group
            changed = slice(g * d, (g + 1) * d)
            keep = [i for i in range(rows.numel()) if not g * d <= i < (g + 1) * d]
        else:  # o_proj: columns of head 1
            cols = diff.sum(dim=0)
            assert cols[d : 2 * d].sum() > 0 and cols[:d].sum() == 0 and cols[2 * d :].sum() == 0
            continue
        assert rows[changed].sum() > 0, name
        assert rows[keep].sum() == 0, name


def test_pick_circuit_ranks_student_heads_and_matches_by_closest_effect():
    base = {"accuracy": 0.5, "logprob": -1.0}
    abl_s = {
        (0, 0): {"accuracy": 0.5, "logprob": -1.0},
        (0, 1): {"accuracy": 0.2, "logprob": -2},
        (1, 0): {"accuracy": 0.4, "logprob": -1.1},
        (1, 1): {"accuracy": 0.5, "logprob": -3},
    }
    abl_t = {(0, 0): {"accuracy": 0.2, "logprob": 0}, (0, 1): {"accuracy": 0.45, "logprob": 0},
             (1, 0): {"accuracy": 0.9, "logprob": 0}}  # fmt: skip
    circuit, pairs, scores = pick_circuit(base, abl_s, abl_t, 2, "accuracy")
    assert circuit == [(0, 1), (1, 0)]  # drops 0.3 and 0.1
    # dP_t = P_s - P_t^abl: 0.3, 0.05, -0.4 -> 0.3 matches (0, 0), 0.1 matches (0, 1)
    assert pairs == [((0, 1), (0, 0)), ((1, 0), (0, 1))]
    # ties on accuracy are broken by the log-probability drop
    circuit, _, _ = pick_circuit(base, abl_s, abl_t, 3, "accuracy")
    assert (1, 1) in circuit and (0, 0) not in circuit
    assert scores["teacher"]["1.0"] == pytest.approx(-0.4)


def test_pick_circuit_group_matching_finds_redundant_teacher_heads():
    """Two layer-1 teacher heads back each other up: ablating either alone costs nothing,
    so delta matching never picks them; leave-one-in scores each by what it restores."""
    base = {"accuracy": 0.3, "logprob": -1.0}
    abl_s = {
        (0, 0): {"accuracy": 0.3, "logprob": -1.2},
        (0, 1): {"accuracy": 0.3, "logprob": -1.0},
        (1, 0): {"accuracy": 0.3, "logprob": -1.1},
        (1, 1): {"accuracy": 0.3, "logprob": -1.0},
    }
    # single ablation: (0, 0) breaks the teacher, the others cost nothing
    abl_t = {
        (0, 0): {"accuracy": 0.2, "logprob": -3},
        (0, 1): {"accuracy": 1.0, "logprob": 0},
        (1, 0): {"accuracy": 1.0, "logprob": 0},
        (1, 1): {"accuracy": 1.0, "logprob": 0},
    }
    _, delta_pairs, _ = pick_circuit(base, abl_s, abl_t, 2, "accuracy")
    assert [t for _, t in delta_pairs] == [(0, 0), (0, 0)]  # dP_t 0.1 is nearest to dP_s 0
    layers = {0: {"accuracy": 0.2, "logprob": -3}, 1: {"accuracy": 0.25, "logprob": -2}}
    kept = {
        (0, 0): {"accuracy": 0.9, "logprob": -0.2},
        (0, 1): {"accuracy": 0.2, "logprob": -3},
        (1, 0): {"accuracy": 1.0, "logprob": 0},
        (1, 1): {"accuracy": 0.9, "logprob": 0},
    }
    circuit, pairs, scores = pick_circuit(base, abl_s, abl_t, 2, "accuracy", (layers, kept))
    assert circuit == [(0, 0), (1, 0)]  # the student side is ranked as before
    # restores: (1, 0) 0.75, (0, 0) 0.70, (1, 1) 0.65, (0, 1) 0
    assert pairs == [((0, 0), (0, 0)), ((1, 0), (1, 0))]
    assert scores["teacher_restore"]["1.1"] == pytest.approx(0.65)
    assert scores["teacher_layer_ablated"] == {"0": 0.2, "1": 0.25}
    # more circuit heads than teacher heads: the ranking cycles, every circuit head is paired
    _, pairs, _ = pick_circuit(base, abl_s, abl_t, 4, "accuracy", ({0: layers[0]},
                               {(0, 0): kept[(0, 0)]}))  # fmt: skip
    assert [t for _, t in pairs] == [(0, 0)] * 4


def test_scan_leave_one_in_ablates_within_each_layer(task_models):
    from distill.circuit import TaskSet, encode, performance, scan_leave_one_in

    model, tok, _ = load_model(task_models["student"])
    objects, boxes = entity_vocabulary([tok])
    ex = entity_tracking(4, 0, objects, boxes)
    width = max(len(tok(e.prompt)["input_ids"]) for e in ex)
    enc = encode(ex, tok, width)
    ds = TaskSet(input_ids=enc.ids, attention_mask=enc.mask, answer=enc.answer)
    lay = layout(model)
    zeros = torch.zeros(len(lay.attns), width, lay.n_heads, lay.head_dim)
    layers, kept = scan_leave_one_in(model, ds, zeros, False, "")
    assert sorted(layers) == list(range(len(lay.attns))) and sorted(kept) == lay.heads
    # zeroing a whole layer changes the answers' log-probabilities; keeping one head of it
    # is the same as zeroing the other heads
    base = performance(model, ds)
    assert all(abs(v["logprob"] - base["logprob"]) > 1e-4 for v in layers.values())
    layer, head = lay.heads[-1]
    others = {(layer, h) for h in range(lay.n_heads) if h != head}
    alone = performance(model, ds, ablate=others, means=zeros)
    assert kept[(layer, head)]["logprob"] == pytest.approx(alone["logprob"])
    assert kept[(layer, head)]["logprob"] != pytest.approx(layers[layer]["logprob"])


def test_circuit_cka_at_every_position_uses_each_shared_prompt_token(task_models):
    from distill.circuit import encode
    from distill.cka import linear_cka
    from distill.objectives.circuit import CircuitCKA

    student, tok, _ = load_model(task_models["student"])
    teacher, _, _ = load_model(task_models["teacher"])
    objects, boxes = entity_vocabulary([tok])
    ex = entity_tracking(6, 0, objects, boxes, template="adjacent")
    width = max(len(tok(e.prompt)["input_ids"]) for e in ex)
    s, t = encode(ex, tok, width + 2), encode(ex, tok, width)  # the student's batch is wider
    batch = {"input_ids": s.ids, "attention_mask": s.mask, "label": s.answer,
             "t_input_ids": t.ids, "t_attention_mask": t.mask}  # fmt: skip
    pair = [((1, 0), (0, 1))]
    final, every = CircuitCKA(teacher, pair, 1.0), CircuitCKA(teacher, pair, 1.0, positions="all")
    assert "positions" not in final.identity() and every.identity()["positions"] == "all"
    final.token_losses(student, batch)
    every.token_losses(student, batch)
    got_final, got_every = final.step_metrics()["cka"], every.step_metrics()["cka"]
    with torch.no_grad(), HeadTap(student) as a, HeadTap(teacher) as b:
        a.capture, a.every_position = {(1, 0)}, True
        b.capture, b.every_position = {(0, 1)}, True
        student(input_ids=s.ids, attention_mask=s.mask)
        teacher(input_ids=t.ids, attention_mask=t.mask)
    xs, xt = a.captured[(1, 0)][:, -width:], b.captured[(0, 1)]
    assert xs.shape[:2] == t.mask.shape
    rows = t.mask.bool()  # every prompt token, padding excluded, aligned from the right
    assert int(rows.sum()) > len(ex)
    assert got_every == pytest.approx(float(linear_cka(xs[rows], xt[rows])), abs=1e-5)
    assert got_final == pytest.approx(float(linear_cka(xs[:, -1], xt[:, -1])), abs=1e-5)
    assert got_every != pytest.approx(got_final, abs=1e-4)


def test_circuit_experiment_end_to_end(task_models, tmp_path):
    settings = CircuitSettings(teacher=task_models["teacher"], **SMALL)
    out = tmp_path / "circuit"
    rec = distill_circuit(task_models["student"], settings, out, progress=False)
    beh = rec["behaviour"]
    assert beh["arms"] == ["none", "ce", "circuit", "random"]
    assert set(beh["deltas"]) == {"none", "ce", "random"}
    for arm in beh["arms"]:
        for m in beh["metrics"]:
            est = beh["rows"][arm][m]
            assert len(est["per_seed"]) == 2 and est["ci"][0] <= est["mean"] <= est["ci"][1]
    # The objective acts: matched heads become more similar than untrained or CE-only.
    cka = {a: beh["rows"][a]["matched_cka"]["mean"] for a in beh["arms"]}
    assert cka["circuit"] > cka["none"] + 0.05 and cka["circuit"] > cka["ce"] + 0.05
    # Only circuit heads were trained: weights outside the matched heads' layers are intact.
    base, _, _ = load_model(task_models["student"])
    trained, _, _ = load_model(rec["spec"])
    layers = {h[0] for h in rec["circuit"]["heads"]}
    tp = dict(trained.named_parameters())
    for name, p in base.named_parameters():
        in_circuit_layer = any(f"layers.{i}.self_attn." in name for i in layers)
        if not in_circuit_layer:
            assert torch.equal(p, tp[name]), name
    assert json.loads((out / "results.json").read_text())["behaviour"] == beh
    assert "| circuit - ce |" in (out / "table.md").read_text()
    # a rerun reuses the tuned teacher
    stamp = (out / "teacher" / "bbi_teacher.json").stat().st_mtime_ns
    distill_circuit(task_models["student"], settings.updated(seeds=[3], arms=["circuit"]), out,
                    progress=False)  # fmt: skip
    assert (out / "teacher" / "bbi_teacher.json").stat().st_mtime_ns == stamp


def test_circuit_with_group_matching_and_every_position_cka(task_models, tmp_path):
    from bbi.errors import BbiError

    small = {**SMALL, "seeds": [0], "arms": ["ce", "circuit"]}
    # The tiny pair loads as two tokenizers that split the prompts differently.
    mismatched = CircuitSettings(teacher=task_models["teacher"], cka_positions="all", **small)
    with pytest.raises(BbiError, match="tokenize the prompts differently"):
        distill_circuit(task_models["student"], mismatched, tmp_path / "m", progress=False)
    # The student's own architecture, tuned, as the teacher: one tokenization.
    settings = CircuitSettings(teacher=task_models["student"], matching="group",
                               cka_positions="all", **small)  # fmt: skip
    rec = distill_circuit(task_models["student"], settings, tmp_path / "c", progress=False)
    c = rec["circuit"]
    teacher = layout(load_model(task_models["student"])[0])
    assert c["matching"] == "group" and len(c["delta_p"]["teacher_restore"]) == len(teacher.heads)
    assert len(c["delta_p"]["teacher_layer_ablated"]) == len(teacher.attns)
    matched = [tuple(t) for _, t in c["pairs"]]
    assert len(set(matched)) == len(matched) == c["k"]  # one-to-one while k <= teacher heads
    assert rec["settings"]["cka_positions"] == "all"
    assert 0.0 <= rec["behaviour"]["rows"]["circuit"]["matched_cka"]["mean"] <= 1.0


def test_cli_circuit_registers_in_a_run_and_refuses_bad_input(task_models, tmp_path):
    import yaml

    from tests.conftest import teacher_run  # noqa: F401  (fixture module import check)

    run_dir = tmp_path / "runs" / "r"
    run_dir.mkdir(parents=True)
    (run_dir / "run.yaml").write_text(
        yaml.safe_dump({"models": {"teacher": {"spec": task_models["teacher"], "role": "teacher"}}})
    )
    cfg = tmp_path / "circuit.yaml"
    cfg.write_text(yaml.safe_dump({**SMALL, "seeds": [0], "arms": ["none", "circuit"]}))
    runner = CliRunner()
    res = runner.invoke(app, ["distill", "circuit", task_models["student"], "--teacher",
                              task_models["teacher"], "--config", str(cfg), "--run", str(run_dir),
                              "--no-progress"])  # fmt: skip
    assert res.exit_code == 0, res.output
    spec = res.stdout.strip().splitlines()[-1]
    models = yaml.safe_load((run_dir / "run.yaml").read_text())["models"]
    assert models["student_circuit"] == {"spec": spec, "role": "student"}
    results = json.loads((run_dir / "results.json").read_text())
    assert results["distill"]["student_circuit"]["behaviour"]["method"] == "circuit"
    for bad, msg in ((["--seeds", "a,b"], "--seeds"), (["--heads-fraction", "0"], "heads")):
        res = runner.invoke(app, ["distill", "circuit", task_models["student"], *bad])
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output
