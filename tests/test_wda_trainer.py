"""`bbi distill wda` end to end on the micro zoo teacher: phases, held-out CE, the student."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import teacher_run
from typer.testing import CliRunner

from bbi.runstore import RunDir

TINY = ["--masks", "4", "--top-k", "2", "--batch-size", "8", "--max-length", "64",
        "--align-epochs", "1", "--detach-epochs", "1", "--free-epochs", "1", "--sft-epochs", "1",
        "--lr", "3e-3", "--no-progress"]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def wda_run_template(tmp_path_factory, micro_teacher, synthetic_corpus):
    """A run whose micro zoo teacher answered 48 prompts (1 in 8 on the test split)."""
    run, _, _ = teacher_run(
        tmp_path_factory.mktemp("wda") / "run", micro_teacher, synthetic_corpus(5, 12), 20, "w"
    )
    return run.path


@pytest.fixture
def wda_run(wda_run_template, tmp_path) -> RunDir:
    return RunDir(shutil.copytree(wda_run_template, tmp_path / "run"))


def test_cli_runs_every_phase_and_the_student_generates(wda_run):
    from bbi.app.cli import app
    from bbi.backends import load_backend
    from bbi.backends.base import GenerationConfig

    res = CliRunner().invoke(app, ["distill", "wda", str(wda_run.path), *TINY])
    assert res.exit_code == 0, res.output
    spec = res.output.strip().splitlines()[-1]
    assert spec.startswith("hf:") and wda_run.models()["student_wda"]["spec"] == spec
    rec = wda_run.read_results()["distill"]["student_wda"]
    names = [r["phase"] for r in rec["phases"]]
    assert names == ["teacher", "transplant", "align", "detach", "free1", "sft"]
    ce = {r["phase"]: r["ce"] for r in rec["phases"]}
    assert all(0 < v < 20 for v in ce.values())
    # Training moves the teacher-free student from the untrained transplant toward the teacher.
    assert ce["free1"] < ce["transplant"]
    align = next(r for r in rec["phases"] if r["phase"] == "align")
    assert align["teacher_scale"] == 1.0 and "ce_with_teacher_attention" in align
    assert 0 <= align["routing"]["entropy_norm"] <= 1
    # Routing health is in every step's metrics line too (at the temperature in use).
    out_dir = wda_run.path / "models" / "student_wda" / "phases"
    lines = [json.loads(x) for x in (out_dir / "free1" / "metrics.jsonl").read_text().splitlines()]
    steps = [x for x in lines if "loss" in x]
    assert steps and all(0 <= x["routing_entropy_norm"] <= 1 for x in steps)
    assert all(x["routing_active_masks"] <= 2 for x in steps)  # top-2 routing
    assert rec["n_eval_prompts"] > 0 and rec["hyperparameters"]["kl_weight"] == 0.0
    # The saved student is teacher-free and loads through bbi's own backend.
    out = wda_run.path / "models" / "student_wda"
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["model_type"] == "bbi_wda_llama" and cfg["teacher_scale"] == 0
    backend = load_backend(spec, device="cpu")
    try:
        g = backend.generate(["What is 2 plus 2?"], GenerationConfig(max_new_tokens=4), [0])
        assert g[0].n_tokens >= 1
    finally:
        backend.close()
    # Phases already done are skipped by --resume; without it the directory is refused.
    again = CliRunner().invoke(app, ["distill", "wda", str(wda_run.path), *TINY])
    assert again.exit_code == 2 and "--resume" in again.output
    resumed = CliRunner().invoke(app, ["distill", "wda", str(wda_run.path), *TINY, "--resume"])
    assert resumed.exit_code == 0, resumed.output


def test_bad_wda_settings_are_one_line_errors(wda_run, tmp_path):
    from bbi.app.cli import app

    runner = CliRunner()
    for extra, needle in [
        (["--phases", "sft,align"], "order"),
        (["--top-k", "9", "--masks", "4"], "top_k"),
        (["--energy-weight", "-1"], "--energy-weight"),
    ]:
        res = runner.invoke(app, ["distill", "wda", str(wda_run.path), "--no-progress", *extra])
        assert res.exit_code == 2 and needle in res.output and "Traceback" not in res.output
    bad = tmp_path / "wda.yaml"
    bad.write_text("masks: lots\n")
    res = runner.invoke(app, ["distill", "wda", str(wda_run.path), "--config", str(bad)])
    assert res.exit_code == 2 and "masks" in res.output
    assert "distill" not in wda_run.read_results()


def test_heldout_prompts_never_reach_training(wda_run, monkeypatch):
    """The held-out set is carved out by prompt; a split that leaks is refused before
    any training (the reference evaluated on its training stream)."""
    import distill.wda.trainer as trainer
    from bbi.config import WDASettings
    from distill.data import distillation_pairs, split_eval

    pairs = distillation_pairs(wda_run)
    tr, ev = split_eval(pairs, 0.1, 0)
    assert set(tr["prompt_id"]).isdisjoint(ev["prompt_id"]) and len(ev)
    monkeypatch.setattr(trainer, "split_eval", lambda p, f, s: (p, p.iloc[:3]))
    with pytest.raises(RuntimeError, match="leaked"):
        trainer.distill_wda(wda_run, settings=WDASettings(masks=4, top_k=2), progress=False)


def test_interrupted_and_resumed_equals_uninterrupted(wda_run, tmp_path):
    """Stopped inside a phase, then in another, and resumed: the same student and the same
    held-out numbers as one uninterrupted run (checkpoints hold model, optimizer,
    scheduler, RNG and data position; finished phases hand over their whole model)."""
    from safetensors.torch import load_file

    from bbi.config import WDASettings
    from distill.wda.trainer import distill_wda

    hp = WDASettings(masks=4, top_k=2, batch_size=8, max_length=64, lr=3e-3)
    whole = distill_wda(wda_run, settings=hp, out=tmp_path / "a", alias="a", progress=False)
    first = distill_wda(wda_run, settings=hp, out=tmp_path / "b", alias="b",
                        stop_after_steps=3, progress=False)  # fmt: skip
    assert first["completed"] is False and "b" not in wda_run.models()
    second = distill_wda(wda_run, settings=hp, out=tmp_path / "b", alias="b", resume=True,
                         stop_after_steps=6, progress=False)  # fmt: skip
    assert second["completed"] is False
    done = distill_wda(wda_run, settings=hp, out=tmp_path / "b", alias="b", resume=True,
                       progress=False)  # fmt: skip
    assert [r["ce"] for r in done["phases"]] == pytest.approx(
        [r["ce"] for r in whole["phases"]], abs=1e-5
    )
    wa = load_file(tmp_path / "a" / "model.safetensors")
    wb = load_file(tmp_path / "b" / "model.safetensors")
    assert wa.keys() == wb.keys()
    assert all(torch.allclose(wa[k], wb[k], atol=1e-5) for k in wa)
