"""The typed records of a run directory: each writer's shape validates, drift does not."""

from __future__ import annotations

import json

import pytest
from fixtures_results import task_distill_record

from bbi.results_schema import (
    _DISTILL,
    AttackConfigRecord,
    LoopDistill,
    TaskDistill,
    WdaDistill,
    read_task_distill,
    validated_distill,
)

LOOP = {
    "spec": "zoo:student+lora:runs/x/adapters/student_lora",
    "method": "sft",
    "finetune": "lora",
    "objective": {"name": "sft"},
    "base": "zoo:student",
    "teacher": "teacher",
    "adapter_dir": "runs/x/adapters/student_lora",
    "n_train_examples": 10,
    "n_eval_examples": 2,
    "n_train_prompts": 10,
    "n_eval_prompts": 2,
    "eval_loss_per_epoch": [2.0, 1.5],
    "train_loss": 1.7,
    "hyperparameters": {"lr": 0.0002},
    "seed": 0,
    "time_s": 3.2,
}
WDA = {
    "spec": "hf:runs/x/wda",
    "method": "wda",
    "finetune": "full",
    "base": "zoo:teacher",
    "teacher": "teacher",
    "model_dir": "runs/x/wda",
    "phases": [{"phase": "sft", "eval_ce": 2.1}],
    "hyperparameters": {},
    "n_train_examples": 10,
    "n_eval_examples": 2,
    "n_train_prompts": 10,
    "n_eval_prompts": 2,
    "seed": 0,
    "time_s": 1.0,
    "resumed": False,
    "completed": True,
}


@pytest.mark.parametrize(
    ("record", "model"),
    [
        (LOOP, LoopDistill),
        ({**LOOP, "method": "kd"}, LoopDistill),
        (WDA, WdaDistill),
        (task_distill_record("bird", "hf:b"), TaskDistill),
        (task_distill_record("circuit", "hf:c"), TaskDistill),
    ],
)
def test_each_method_has_its_model(record, model):
    assert isinstance(_DISTILL.validate_python(record), model)
    assert validated_distill(record) is record  # written exactly as built


@pytest.mark.parametrize(
    "record",
    [
        {k: v for k, v in LOOP.items() if k != "n_train_examples"},
        {**WDA, "phases": "all"},
        {**task_distill_record("bird", "hf:b"), "behaviour": {"rows": {}}},
        {**LOOP, "spec": None},
    ],
)
def test_a_record_that_drifted_is_refused(record):
    with pytest.raises(RuntimeError, match="distill record does not follow the schema"):
        validated_distill(record)


def test_attack_config_dumps_as_written():
    raw = {"budgets": [8, 40], "strategies": ["random"], "seeds": [0], "test_queries": [1],
           "epsilon": 0, "alpha": 0.05, "adversaries": ["surface"], "n_bootstrap": 50,
           "n_permutations": 50, "threshold_folds": 2, "n_examples": 3, "blas_threads": 1,
           "adversary_params": {}, "statistics": "paired bootstrap"}  # fmt: skip
    cfg = AttackConfigRecord.model_validate(raw)
    assert json.dumps(cfg.dump()) == json.dumps(raw)  # same keys, order and number types
    with pytest.raises(ValueError):
        AttackConfigRecord.model_validate({**raw, "epsilon": True})
    with pytest.raises(ValueError):
        AttackConfigRecord.model_validate({**raw, "budgets": "8,40"})


def test_report_views_read_bad_fields_as_absent():
    rec = task_distill_record("circuit", "hf:c")
    rec["teacher_accuracy"] = "high"
    rec["circuit"] = {"k": "three", "heads": [[0, 1], "x", [1, "a"]]}
    rec["behaviour"]["rows"]["ce"] = "garbage"
    views = read_task_distill({"c": rec, "lora": LOOP, "bad": "x"})
    assert list(views) == ["c"]  # only records with a behaviour table
    v = views["c"]
    assert v.teacher_accuracy is None and v.circuit.k is None and v.circuit.heads == [(0, 1)]
    assert "ce" not in v.behaviour.rows and v.behaviour.metrics
