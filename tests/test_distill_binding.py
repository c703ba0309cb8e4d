"""The binding teacher (distill.binding): its curriculum, its checkpoint chosen on the
validation split only, and its content-keyed cache; and ``--teacher binding``."""

from __future__ import annotations

import json
import random
from dataclasses import replace

import pytest
import torch

import distill.binding as binding
from bbi.config import CircuitSettings
from bbi.errors import BbiError
from distill.binding import (
    BindingConfig,
    Curriculum,
    build_binding_teacher,
    curriculum_boxes,
    task_tokenizer,
    train_binding,
    training_sequences,
)
from distill.tasks import entity_recall_sequences, entity_tracking, entity_vocabulary

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = BindingConfig(hidden_size=16, intermediate_size=32, num_layers=1, num_heads=2, steps=12,
                     batch_size=4, queries=2, n_val=16, eval_every=4, warmup=1, min_boxes=2,
                     max_boxes=2, val_boxes=(2, 2))  # fmt: skip


def test_curriculum_starts_small_and_grows_on_accuracy():
    cur = Curriculum(2, 4, advance_at=0.9)
    assert cur.cap == 2
    assert not any(cur.update(s, 0.5) for s in range(200))  # a plateau never advances
    raised = [s for s in range(200, 400) if cur.update(s, 1.0)]
    assert cur.cap == 4 and len(raised) == 2 and raised[0] < raised[1]
    assert cur.raised_at == {2: 0, 3: raised[0] + 1, 4: raised[1] + 1}
    assert not any(cur.update(s, 1.0) for s in range(400, 500))  # capped at max_boxes
    rng = random.Random(0)
    counts = {curriculum_boxes(rng, 4, 2) for _ in range(300)}
    assert counts == {2, 3, 4}  # the smaller counts stay in the mix
    with pytest.raises(Exception, match="curriculum"):
        Curriculum(1, 3, 0.9)


def test_training_batches_follow_the_cap():
    tok = task_tokenizer()
    objects, boxes = entity_vocabulary([tok])
    cfg = replace(TINY, batch_size=64, max_boxes=5, queries=3)
    rng = random.Random(1)
    for cap in (2, 3, 5):
        seqs = training_sequences(rng, cfg, cap, objects, boxes)
        n = {segs[0][0].split(".")[0].count("Box") for segs in seqs}
        assert n <= set(range(2, cap + 1)) and max(n) == cap
        assert all(sum(a for _, a in segs) == 3 for segs in seqs)  # queries answers each


def test_adjacent_layout_is_the_binding_teachers_task():
    """Each object right after its box label, the query ending on the label; ``auto``
    picks it with the binding teacher and keeps Kim & Schuster's wording otherwise."""
    tok = task_tokenizer()
    objects, boxes = entity_vocabulary([tok])
    for ex in entity_tracking(40, 3, objects, boxes, template="adjacent"):
        assert ex.prompt.endswith(f". Box {ex.query_box}")
        assert f"Box {ex.query_box}{ex.answer}" in ex.prompt
        assert all(f"Box {b} {o}" in ex.prompt for b, o in ex.placements)
    examples = entity_tracking(20, 3, objects, boxes, template="adjacent")
    seqs = entity_recall_sequences(20, 3, objects, boxes, template="adjacent", queries=3)
    for ex, segs in zip(examples, seqs, strict=True):
        placed = dict(ex.placements)
        queried = [t.rsplit(" ", 1)[-1] for t, a in segs if not a]
        answers = [t for t, a in segs if a]
        assert len(answers) == 3 and answers == [" " + placed[b] for b in queried]
    assert CircuitSettings(teacher="binding").task_template() == "adjacent"
    assert CircuitSettings().task_template() == "contains"
    assert CircuitSettings(teacher="binding", template="contains").task_template() == "contains"
    assert BindingConfig().template == "adjacent"


def test_answers_any_copies_an_object_of_the_context_without_binding():
    """The plateau student's data: the same sequences, each answer a random object of the
    context (so nothing rewards binding), not always the queried box's."""
    tok = task_tokenizer()
    objects, boxes = entity_vocabulary([tok])
    cfg = replace(TINY, batch_size=64, min_boxes=3, max_boxes=3, queries=4)
    bound = training_sequences(random.Random(5), cfg, 3, objects, boxes)
    anyof = training_sequences(random.Random(5), replace(cfg, answers="any"), 3, objects, boxes)
    hits = total = 0
    for b, a in zip(bound, anyof, strict=True):
        assert [t for t, x in b if not x] == [t for t, x in a if not x]  # same prompts
        context = {o for o in objects if f" {o}" in b[0][0]}
        for (tb, _), (ta, _) in zip([s for s in b if s[1]], [s for s in a if s[1]], strict=True):
            assert ta.strip() in context
            hits, total = hits + (ta == tb), total + 1
    assert 0.2 < hits / total < 0.5  # about 1/3: a copy, not the bound answer
    with pytest.raises(BbiError, match="answers"):
        training_sequences(random.Random(0), replace(cfg, answers="maybe"), 3, objects, boxes)


def test_checkpoint_is_chosen_on_validation_and_the_test_split_is_never_read(monkeypatch):
    """Every prompt the build draws comes from the binding streams (never the circuit
    command's splits, 'heldout' its test split), and the kept weights are those of the
    evaluation with the best validation accuracy."""
    seen: list[str] = []
    real_track, real_recall = binding.entity_tracking, binding.entity_recall_sequences

    def track(n, seed, *a, **k):
        seen.append(str(seed))
        return real_track(n, seed, *a, **k)

    def recall(n, seed, *a, **k):
        seen.append(str(seed))
        return real_recall(n, seed, *a, **k)

    scripted = iter([0.2, 0.9, 0.5])
    states = []

    def fake_accuracy(model, tokenizer, examples):
        assert {e.n_boxes for e in examples} == {2}  # the validation split's range
        states.append({k: v.clone() for k, v in model.state_dict().items()})
        return {"accuracy": next(scripted)}

    monkeypatch.setattr(binding, "entity_tracking", track)
    monkeypatch.setattr(binding, "entity_recall_sequences", recall)
    monkeypatch.setattr(binding, "prompt_accuracy", fake_accuracy)
    model, rec = train_binding(task_tokenizer(), TINY)
    assert seen and all(s.startswith(("binding-train:", "binding-val:")) for s in seen)
    assert not any(s.split(":")[0] in ("heldout", "scan", "ablation", "teacher") for s in seen)
    assert sum(s.startswith("binding-val:") for s in seen) == 1  # drawn once, before training
    assert rec["selected"] == {"step": 8, "val_accuracy": 0.9, "split": "binding-val",
                               "rule": "best_val"}  # fmt: skip
    assert [e["step"] for e in rec["validation"]] == [4, 8, 12]
    kept = model.state_dict()
    assert all(torch.equal(kept[k], states[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], states[2][k]) for k in kept)


def test_curriculum_that_never_reaches_the_task_is_an_error(tmp_path, monkeypatch):
    """No teacher is kept (or cached); the curve is, beside the cache entry."""
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path))
    cfg = replace(TINY, steps=4, max_boxes=3, val_boxes=(2, 3), advance_at=1.1)
    with pytest.raises(BbiError, match="never reached 3 boxes"):
        build_binding_teacher(task_tokenizer(), cfg, progress=False)
    final = binding.binding_dir(task_tokenizer(), cfg)
    assert not final.exists()
    stalled = json.loads(final.with_name(final.name + ".stalled.json").read_text())
    assert stalled["selected"] is None and stalled["curve"][-1]["step"] == 4


def test_build_is_cached_by_content_and_reused(tmp_path, monkeypatch):
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path))
    tok = task_tokenizer()
    path, rec = build_binding_teacher(tok, TINY, progress=False)
    assert path.parent == tmp_path / "binding" and (path / "config.json").is_file()
    assert rec["selected"]["split"] == "binding-val" and rec["curve"]

    def no_training(*a, **k):
        raise AssertionError("the cached teacher was retrained")

    monkeypatch.setattr(binding, "train_binding", no_training)
    again, rec2 = build_binding_teacher(tok, TINY, progress=False)
    assert again == path and rec2 == rec
    other = replace(TINY, seed=1)
    assert binding.binding_dir(tok, other) != path  # another config, another key
    with pytest.raises(AssertionError, match="retrained"):
        build_binding_teacher(tok, other, progress=False)
    assert sorted(p.name for p in path.parent.iterdir() if not p.name.startswith(".")) == [
        path.name
    ]


def test_circuit_with_the_binding_teacher(task_models, tmp_path, monkeypatch):
    """``--teacher binding``: the teacher is built on the student's tokenizer (once) and
    used as it is; its record travels with the results."""
    from distill import circuit
    from distill.student import load_model

    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(circuit, "binding_config", lambda s: replace(TINY, keep="last"))
    settings = CircuitSettings(
        teacher="binding", n_train=32, n_scan=16, n_ablation=16, n_eval=32, epochs=1,
        seeds=[0], arms=["none", "circuit"], batch_size=16,
    )  # fmt: skip
    rec = circuit.distill_circuit(task_models["student"], settings, tmp_path / "out",
                                  progress=False)  # fmt: skip
    _, s_tok, _ = load_model(task_models["student"])
    expected = binding.binding_dir(s_tok, replace(TINY, keep="last"))
    assert rec["teacher_tuned"] == expected.as_posix()
    assert rec["teacher"] == "binding" or rec["teacher"].endswith(expected.name)
    assert rec["binding_teacher"]["selected"]["rule"] == "last"
    assert not (tmp_path / "out" / "teacher").exists()  # never tuned
