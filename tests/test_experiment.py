"""The method-beside-controls table: seed-mean t intervals, paired differences, output."""

from __future__ import annotations

import json

import pytest

from distill.experiment import mean_ci, save_model, summarise, table_markdown, write_outputs


def test_mean_ci_is_a_t_interval_of_the_seed_mean():
    est = mean_ci([1.0, 2.0, 3.0])
    assert est["mean"] == 2.0
    assert est["ci"] == pytest.approx([2 - 4.302653 / 3**0.5, 2 + 4.302653 / 3**0.5], rel=1e-5)
    assert est["p"] == pytest.approx(0.0742, abs=1e-3)
    assert mean_ci([0.9, 1.0, 0.95], bounds=(0, 1))["ci"][1] == 1.0
    assert mean_ci([0.5, 0.5])["ci"] == [0.5, 0.5]  # no spread: zero width
    assert mean_ci([0.5])["p"] is None


def test_summarise_pairs_differences_by_seed_and_renders():
    per_seed = {
        "none": [{"acc": 0.5}, {"acc": 0.5}, {"acc": 0.5}],
        "ce": [{"acc": 0.6}, {"acc": 0.2}, {"acc": 0.9}],
        "m": [{"acc": 0.7}, {"acc": 0.3}, {"acc": 1.0}],
    }
    beh = summarise(per_seed, method="m", controls=["none", "ce"], metrics=["acc"],
                    seeds=[0, 1, 2], confidence=0.95, higher_is_better={"acc": True},
                    unit_interval=("acc",))  # fmt: skip
    # paired: m - ce is exactly +0.1 on every seed, although both arms vary a lot
    assert beh["deltas"]["ce"]["acc"]["mean"] == pytest.approx(0.1)
    assert beh["deltas"]["ce"]["acc"]["ci"] == pytest.approx([0.1, 0.1])
    assert beh["rows"]["m"]["acc"]["ci"][1] <= 1.0
    assert beh["controls"] == ["none", "ce"]
    md = table_markdown(beh)
    assert "| m - ce | 0.100 [0.100, 0.100]" in md and "3 seeds" in md


def test_write_outputs_and_atomic_model_save(tmp_path, task_models):
    from distill.student import load_model

    beh = summarise({"m": [{"a": 1.0}]}, method="m", controls=[], metrics=["a"], seeds=[0],
                    confidence=0.9, higher_is_better={"a": True})  # fmt: skip
    write_outputs(tmp_path, {"spec": "hf:x", "behaviour": beh})
    assert json.loads((tmp_path / "results.json").read_text())["behaviour"] == beh
    model, tok, _ = load_model(task_models["student"])
    save_model(model, tok, tmp_path / "model", {"identity": {"k": 1}})
    save_model(model, tok, tmp_path / "model")  # replaces the old one
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "results.json", "table.md"]
    assert not (tmp_path / "model" / "bbi_teacher.json").exists()
