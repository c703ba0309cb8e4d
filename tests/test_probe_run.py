"""`bbi probe run` / `bbi probe import` on the real micro zoo: run dir, cache, resume, import."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.errors import BbiError
from bbi.probe_run import ModelEntry, ProbeSettings, probe_model, run_probe, select_limit
from bbi.runstore import RunDir, read_jsonl

CATS = ("factual", "reasoning", "style_format")


def tiny_suite(n_per_cat: int = 4) -> list[dict]:
    recs = []
    for c in CATS:
        for i in range(n_per_cat):
            recs.append(
                {
                    "id": f"{c}-{i:05d}",
                    "category": c,
                    "subcategory": "t",
                    "split": "test" if i % 4 == 0 else "train",
                    "prompt": f"Question {i} about {c}: what is {i} plus {i + 1}?",
                    "reference": None,
                    "source": "test",
                    "perturbation": None,
                    "base_id": None,
                }
            )
    return recs


def models():
    return [
        ModelEntry("teacher", "zoo:teacher", "teacher"),
        ModelEntry("teacher_null", "zoo:teacher", "null"),
        ModelEntry("student", "zoo:student", "student"),
    ]


SETTINGS = dict(max_new_tokens=12, batch_size=4, seed=3)


def test_run_writes_contract_and_rerun_is_cached(micro_zoo, tmp_path):
    run_dir = tmp_path / "r"
    man = run_probe(run_dir, models(), tiny_suite(), ProbeSettings(**SETTINGS), progress=False)
    rd = RunDir(run_dir)
    for f in ("run.yaml", "manifest.json", "suite.jsonl", "similarity.jsonl", "results.json"):
        assert (run_dir / f).exists(), f
    for alias in ("teacher", "teacher_null", "student"):
        lines = list(read_jsonl(rd.responses_path(alias)))
        assert len(lines) == 12
        assert {ln["finish_reason"] for ln in lines} <= {"stop", "length"}
        assert all(ln["n_tokens"] <= 12 for ln in lines)
    assert man["models"]["teacher"]["chat_format"] == "plain"
    assert man["timings"]["generate:teacher"]["generated"] == 12
    # The A/A resample uses an independent seed stream: with sampling it differs somewhere.
    t = rd.responses("teacher").set_index("prompt_id")["text"]
    n = rd.responses("teacher_null").set_index("prompt_id")["text"]
    assert (t != n.loc[t.index]).any()
    res = rd.read_results()
    assert set(res["similarity"]) == {"teacher_null", "student"}
    assert res["similarity"]["student"]["overall"]["n"] == 12
    assert set(res["similarity"]["student"]["per_category"]) == set(CATS)
    assert res["suite"]["n"] == 12 and res["suite"]["n_test"] == 3
    # One suite hash everywhere: the probes package's, of exactly the bytes in suite.jsonl.
    from probes import suite_hash

    raw = (run_dir / "suite.jsonl").read_bytes()
    assert (
        res["suite"]["hash"]
        == suite_hash(tiny_suite())
        == "sha256:" + hashlib.sha256(raw).hexdigest()
    )

    before = {a: rd.responses_path(a).read_text() for a in ("teacher", "student")}
    man2 = run_probe(run_dir, models(), tiny_suite(), ProbeSettings(**SETTINGS), progress=False)
    assert man2["timings"]["generate:teacher"]["generated"] == 0
    assert man2["timings"]["generate:student"]["cached"] == 12
    assert {a: rd.responses_path(a).read_text() for a in before} == before


def test_resume_after_crash_loses_and_duplicates_nothing(micro_zoo, tmp_path):
    from bbi.backends import load_backend

    suite = tiny_suite()
    entry = ModelEntry("teacher", "zoo:teacher", "teacher")
    settings = ProbeSettings(**SETTINGS)

    ref = RunDir(tmp_path / "ref", create=True)
    (ref.path / "suite.jsonl").write_text("".join(json.dumps(r) + "\n" for r in suite))
    probe_model(ref, entry, suite, settings, chunk=5)
    shutil.rmtree(Path(os.environ["BBI_CACHE_DIR"]) / "generations")  # only the run dir may help

    class Crashing:
        def __init__(self, inner):
            self.inner, self.calls, self.chat_format = inner, 0, inner.chat_format

        def generate(self, prompts, config, seeds, progress=False):
            self.calls += 1
            if self.calls == 2:
                raise KeyboardInterrupt  # killed mid-run
            return self.inner.generate(prompts, config, seeds)

    crashed = RunDir(tmp_path / "crash", create=True)
    with pytest.raises(KeyboardInterrupt):
        probe_model(
            crashed,
            entry,
            suite,
            settings,
            chunk=5,
            backend_factory=lambda spec, **kw: Crashing(load_backend(spec, **kw)),
        )
    assert len(list(read_jsonl(crashed.responses_path("teacher")))) == 5  # first chunk kept
    st = probe_model(crashed, entry, suite, settings, chunk=5)
    assert st["cached"] == 5 and st["generated"] == 7
    lines = list(read_jsonl(crashed.responses_path("teacher")))
    assert len(lines) == 12 and len({ln["prompt_id"] for ln in lines}) == 12
    # Sampling depends on each request's own seed, so the resumed run equals the clean one.
    got = {ln["prompt_id"]: ln["text"] for ln in lines}
    want = {ln["prompt_id"]: ln["text"] for ln in read_jsonl(ref.responses_path("teacher"))}
    assert got == want


def test_global_cache_serves_a_second_run(micro_zoo, tmp_path):
    settings = ProbeSettings(**SETTINGS)
    run_probe(tmp_path / "a", models()[:1], tiny_suite(), settings, progress=False)
    man = run_probe(tmp_path / "b", models()[:1], tiny_suite(), settings, progress=False)
    assert man["timings"]["generate:teacher"]["generated"] == 0


def test_changed_settings_regenerate_and_keep_old_lines(micro_zoo, tmp_path):
    run_probe(
        tmp_path / "r", models()[:1], tiny_suite(2), ProbeSettings(**SETTINGS), progress=False
    )
    man = run_probe(
        tmp_path / "r",
        models()[:1],
        tiny_suite(2),
        ProbeSettings(**{**SETTINGS, "max_new_tokens": 8}),
        progress=False,
    )
    assert man["timings"]["generate:teacher"]["generated"] == 6
    assert list((tmp_path / "r" / "responses").glob("teacher.stale-*.jsonl"))


def test_fingerprint_without_loading_matches_backend(micro_zoo):
    from bbi.backends import load_backend
    from bbi.fingerprint import spec_fingerprint

    for spec in ("zoo:teacher", f"hf:{micro_zoo / 'student'}"):
        assert spec_fingerprint(spec) == load_backend(spec).fingerprint


def test_select_limit_is_stratified_and_deterministic():
    suite = tiny_suite(8)
    part = select_limit(suite, 6)
    assert len(part) == 6 and part == select_limit(suite, 6)
    assert {r["category"] for r in part} == set(CATS)
    with pytest.raises(BbiError):
        select_limit(suite, 0)


def _suite_80_20(n_cats: int = 10, n_per_cat: int = 50) -> list[dict]:
    """The default suite's shape: per category 80% train, then 20% test (file order)."""
    recs = []
    for c in range(n_cats):
        for i in range(n_per_cat):
            split = "train" if i < n_per_cat * 4 // 5 else "test"
            recs.append({"id": f"c{c}-{i:03d}", "category": f"c{c}", "split": split})
    return recs


def test_select_limit_always_has_both_splits_when_there_is_room():
    suite = _suite_80_20()
    for limit in range(1, 60):
        part = select_limit(suite, limit)
        assert len(part) == limit and part == select_limit(suite, limit)
        splits = [r["split"] for r in part]
        if limit >= 2:
            assert "test" in splits and "train" in splits, (limit, splits)
        counts = {}
        for r in part:
            counts[r["category"]] = counts.get(r["category"], 0) + 1
        # the category round-robin: no category has two more prompts than another
        assert len(counts) == min(limit, 10) and max(counts.values()) - min(counts.values()) <= 1
    # proportions are kept once a limit is large enough
    assert sum(r["split"] == "test" for r in select_limit(suite, 100)) == 20
    # a suite with mostly test prompts still gets a train prompt
    flipped = [{**r, "split": "test" if r["split"] == "train" else "train"} for r in suite]
    assert {r["split"] for r in select_limit(flipped, 5)} == {"train", "test"}
    # a single-split suite is left alone
    only_train = [{**r, "split": "train"} for r in suite]
    assert {r["split"] for r in select_limit(only_train, 20)} == {"train"}


def _write_responses(path, ids, text="same answer"):
    path.write_text("".join(json.dumps({"prompt_id": i, "text": text}) + "\n" for i in ids))


def _import_pair(tmp_path, student_ids=None):
    """Import a teacher and a student answering ``student_ids``; return the student's result."""
    suite = tiny_suite(2)
    suite_file = tmp_path / "suite.jsonl"
    suite_file.write_text("".join(json.dumps(r) + "\n" for r in suite))
    ids = [r["id"] for r in suite]
    _write_responses(tmp_path / "t.jsonl", ids)
    _write_responses(tmp_path / "s.jsonl", ids if student_ids is None else student_ids(ids))
    run = str(tmp_path / "run")
    runner = CliRunner()
    r1 = runner.invoke(
        app,
        [
            "probe",
            "import",
            str(tmp_path / "t.jsonl"),
            "--run",
            run,
            "--alias",
            "teacher",
            "--role",
            "teacher",
            "--suite",
            str(suite_file),
        ],
    )
    assert r1.exit_code == 0, r1.output
    return ids, runner.invoke(
        app, ["probe", "import", str(tmp_path / "s.jsonl"), "--run", run, "--alias", "student"]
    )


def test_import_and_similarity_of_identical_texts_is_one(tmp_path):
    ids, res = _import_pair(tmp_path)
    assert res.exit_code == 0, res.output
    sims = [r["cosine"] for r in read_jsonl(tmp_path / "run" / "similarity.jsonl")]
    assert len(sims) == len(ids) and np.allclose(sims, 1.0, atol=1e-5)


@pytest.mark.parametrize(
    "lines, message",
    [
        (['{"prompt_id": "factual-00000", "text": "a"', ""], "invalid JSON"),
        (['{"text": "a"}'], "prompt_id"),
        (['{"prompt_id": "factual-00000"}'], "text"),
        (['{"prompt_id": "nope", "text": "a"}'], "not in the run's suite"),
        (
            [
                '{"prompt_id": "factual-00000", "text": "a"}',
                '{"prompt_id": "factual-00000", "text": "b"}',
            ],
            "duplicate",
        ),
        (['{"prompt_id": "factual-00000", "text": "a", "finish_reason": "eos"}'], "finish_reason"),
    ],
)
def test_import_rejects_bad_files(tmp_path, lines, message):
    suite_file = tmp_path / "suite.jsonl"
    suite_file.write_text("".join(json.dumps(r) + "\n" for r in tiny_suite(2)))
    bad = tmp_path / "bad.jsonl"
    bad.write_text("\n".join(lines) + "\n")
    res = CliRunner().invoke(
        app,
        [
            "probe",
            "import",
            str(bad),
            "--run",
            str(tmp_path / "run"),
            "--alias",
            "x",
            "--suite",
            str(suite_file),
            "--no-similarity",
        ],
    )
    assert res.exit_code == 2
    assert message in res.output and "Traceback" not in res.output


def test_import_rejects_mismatched_prompt_sets(tmp_path):
    _, res = _import_pair(tmp_path, student_ids=lambda ids: ids[:-1])
    assert res.exit_code == 2 and "differs" in res.output


def test_probe_run_cli_errors_are_one_line(tmp_path):
    res = CliRunner().invoke(
        app,
        [
            "probe",
            "run",
            "--teacher",
            "nosuchkind:x",
            "--run",
            str(tmp_path / "r"),
            "--suite",
            "missing.jsonl",
        ],
    )
    assert res.exit_code == 2 and "Traceback" not in res.output
    res = CliRunner().invoke(app, ["probe", "run", "--run", str(tmp_path / "r")])
    assert res.exit_code == 2 and "--teacher" in res.output


def test_existing_run_probes_what_run_yaml_lists(micro_zoo, tmp_path):
    """`bbi probe run --run DIR` alone answers the run's models, e.g. a distilled student."""
    run_dir = tmp_path / "r"
    run_probe(run_dir, models(), tiny_suite(), ProbeSettings(**SETTINGS), progress=False)
    rd = RunDir(run_dir)
    cfg = rd.config()
    cfg["models"]["student_new"] = {"spec": "zoo:student", "role": "student"}  # as distil does
    rd.write_config(cfg)
    before = {a: rd.responses_path(a).read_bytes() for a in ("teacher", "student")}
    res = CliRunner().invoke(app, ["probe", "run", "--run", str(run_dir), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert len(rd.responses("student_new")) == len(tiny_suite())
    assert {a: rd.responses_path(a).read_bytes() for a in before} == before  # cached, untouched
    assert rd.config()["generation"]["max_new_tokens"] == SETTINGS["max_new_tokens"]
