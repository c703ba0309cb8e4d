"""Attack-guided distillation: train-split leak scores steer which examples are trained on.

The student here copies the teacher everywhere except one category, where it adds a
give-away phrase; the cross-fitted adversary must find that category (from train prompts
only) and the guided sampler must spend its extra budget there.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from conftest import teacher_run
from typer.testing import CliRunner

from bbi.errors import BbiError
from bbi.runstore import RunDir, append_jsonl
from discriminators.leak import fold_of, guide_weights, train_leak

LEAKY = "factual"


@pytest.fixture(scope="module")
def leak_run_template(tmp_path_factory, micro_teacher, synthetic_corpus):
    """Teacher = micro zoo teacher; student = the teacher's answers, plus a tell in LEAKY."""
    run, suite, gens = teacher_run(
        tmp_path_factory.mktemp("guide") / "run", micro_teacher, synthetic_corpus(11, 16), 16, "g"
    )
    append_jsonl(
        run.responses_path("student"),
        [
            {"prompt_id": r["id"], "sample": 0, "n_tokens": g.n_tokens,
             "text": f"{g.text} Indeed, certainly so." if r["category"] == LEAKY else g.text}
            for r, g in zip(suite, gens, strict=True)
        ],
    )  # fmt: skip
    cfg = run.config()
    cfg["models"]["student"] = {"spec": "zoo:student", "role": "student"}
    run.write_config(cfg)
    return run.path


@pytest.fixture
def leak_run(leak_run_template, tmp_path) -> RunDir:
    return RunDir(shutil.copytree(leak_run_template, tmp_path / "run"))


def test_folds_are_balanced_within_categories():
    cats = np.array(["a"] * 10 + ["b"] * 7 + ["c"] * 3)
    fold = fold_of(cats, 5, seed=3)
    for c in "ab":
        counts = np.bincount(fold[cats == c], minlength=5)
        assert counts.max() - counts.min() <= 1
    assert np.bincount(fold, minlength=5).min() >= 3  # small categories spread too
    assert (fold == fold_of(cats, 5, seed=3)).all() and (fold != fold_of(cats, 5, seed=4)).any()


@pytest.mark.parametrize("adversary", ["tfidf", "pairwise"])
def test_leak_finds_the_leaky_category_on_train_prompts_only(leak_run, adversary):
    leak = train_leak(leak_run, "student", adversary=adversary, folds=4, seed=0)
    suite = leak_run.suite()
    assert set(leak.prompts["prompt_id"]) == set(suite.index[suite["split"] == "train"])
    by_cat = leak.by_category()
    others = [v["leak"] for c, v in by_cat.items() if c != LEAKY]
    assert by_cat[LEAKY]["leak"] > 0.5 > max(others)
    again = train_leak(leak_run, "student", adversary=adversary, folds=4, seed=0)
    assert np.array_equal(leak.prompts["leak"], again.prompts["leak"])  # seeded


def test_guide_weights_move_mass_to_the_leak(leak_run):
    leak = train_leak(leak_run, "student", folds=4, seed=0)
    ids = leak.prompts["prompt_id"].tolist()
    cats = leak.prompts["category"].tolist()
    for mode in ("category", "prompt"):
        w, summary = guide_weights(leak, ids, cats, mode, mix=0.5)
        assert w.sum() == pytest.approx(1.0) and (w > 0).all()  # every example stays drawable
        share = summary["categories"][LEAKY]
        assert share["share"] > 0.5 + 0.5 * share["uniform_share"] - 0.05
        assert summary["split"] == "train" and summary["measured_on"] == "student"
    w0, _ = guide_weights(leak, ids, cats, "category", mix=0.0)
    assert np.allclose(w0, 1 / len(ids))


def test_guided_kd_trains_where_the_student_leaks(leak_run):
    from bbi.app.guide import guide_weights_for
    from bbi.config import KDSettings
    from distill.data import DistillDataset, distillation_pairs, split_eval
    from distill.kd import distill_kd
    from distill.student import load_student

    hp = KDSettings(epochs=1, batch_size=8, max_length=64, eval_fraction=0.2, guide="category",
                    guide_mix=0.8, guide_folds=4)  # fmt: skip
    weights = guide_weights_for(leak_run, hp)
    res = distill_kd(leak_run, settings=hp, alias="kd_guided", stop_after_steps=2, progress=False,
                     sample_weights=weights)  # fmt: skip
    state = json.loads((res.out_dir / "checkpoint" / "state.json").read_text())
    _, tok, _ = load_student("zoo:student", "float32")
    ds = DistillDataset(split_eval(distillation_pairs(leak_run), 0.2, 0)[0], tok, 64)
    drawn = [ds.categories[i] for i in state["data_order"]]
    assert drawn.count(LEAKY) / len(drawn) > 0.6  # uniform would give about a quarter
    done = distill_kd(leak_run, settings=hp, alias="kd_guided", resume=True, progress=False,
                      sample_weights=weights)  # fmt: skip
    rec = leak_run.read_results()["distill"]["kd_guided"]
    assert done.completed and rec["guide"]["mode"] == "category"
    assert rec["guide"]["categories"][LEAKY]["share"] > 0.6 and rec["loss_tokens"] > 0


def test_cli_guide_flags_and_errors(leak_run):
    from bbi.app.cli import app

    base = ["distill", "lora", str(leak_run.path), "--epochs", "1", "--batch-size", "8",
            "--max-length", "64", "--rank", "2", "--no-progress"]  # fmt: skip
    runner = CliRunner()
    for extra, msg in [
        (["--guide", "bogus"], "--guide"),
        (["--guide", "prompt", "--guide-mix", "1.5"], "--guide-mix"),
        (["--guide", "prompt", "--guide-adversary", "nope"], "--guide-adversary"),
        (["--guide", "prompt", "--guide-adversary", "mmd"], "two-sample"),
        (["--guide", "prompt", "--guide-from", "teacher"], "--guide-from"),
        (["--guide", "prompt", "--guide-folds", "40"], "--guide-folds"),
    ]:
        out = runner.invoke(app, base + extra)
        assert out.exit_code == 2, (extra, out.output)
        assert msg in out.output and "Traceback" not in out.output
    assert "distill" not in leak_run.read_results()  # nothing registered by a failed run
    out = runner.invoke(app, base + ["--guide", "prompt", "--alias", "g"])
    assert out.exit_code == 0, out.output
    rec = leak_run.read_results()["distill"]["g"]
    assert rec["guide"]["mode"] == "prompt" and rec["hyperparameters"]["guide"] == "prompt"


def test_guide_needs_an_unambiguous_student(leak_run):
    cfg = leak_run.config()
    cfg["models"]["student2"] = {"spec": "zoo:student", "role": "student"}
    leak_run.write_config(cfg)
    shutil.copy(leak_run.responses_path("student"), leak_run.responses_path("student2"))
    from distill.method import guide_source

    with pytest.raises(BbiError, match="--guide-from"):
        guide_source(leak_run, "zoo:student", None)
    assert guide_source(leak_run, "zoo:student", "student2") == "student2"
