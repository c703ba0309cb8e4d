"""Hostile input against the real CLI: one ``error:`` line, exit 2, the run untouched.

One regression test per class of defect found by a wide matrix of hostile invocations
(empty values, files where directories belong, backups mistaken for models, results from
another schema, reports written over run files, non-UTF-8 names, ``bbi run`` settings
that could only fail after hours of probing). No model is loaded: runs come from
``discriminators.synthetic`` or imported responses, and every command here fails (or
finishes) before it would need one.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml
from hostile_helpers import assert_one_line_error, suite_records, write_jsonl
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.errors import BbiError
from discriminators import synthetic

runner = CliRunner()
ATTACK = ["--adversary", "surface", "--seeds", "1", "--budget", "8", "--strategy", "random"]
ATTACK += ["--test-queries", "1", "--n-bootstrap", "20", "--n-permutations", "20", "--no-progress"]


@pytest.fixture(autouse=True)
def _no_real_zoo(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Guard: nothing here may build or read the real zoo or cache (tests that need a
    model use the session's micro zoo, which sets both itself)."""
    if "micro_zoo" not in request.fixturenames:
        monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("BBI_ZOO_CONFIG", "micro")


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {
        str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(root.rglob("*"))
    }


def responses(tag: str, n: int = 10) -> list[dict]:
    return [{"prompt_id": f"q{i}", "text": f"answer {i} {tag}"} for i in range(n)]


@pytest.fixture()
def syn(tmp_path: Path) -> Path:
    return synthetic.make_run(tmp_path / "syn", n_per_category=5, test_fraction=0.4).path


@pytest.fixture()
def imported_run(tmp_path: Path) -> Path:
    suite = write_jsonl(tmp_path / "suite.jsonl", suite_records())
    run = tmp_path / "imp"
    for alias, role in (("teacher", "teacher"), ("mine", "student")):
        src = write_jsonl(tmp_path / f"{alias}.jsonl", responses(alias))
        res = invoke(
            "probe", "import", src, "--run", run, "--alias", alias, "--role", role,
            "--suite", suite, "--no-similarity",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
    return run


# ---- an empty value is an error, never "the current directory" or "the default" ----------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["attack", ""], "run_dir"),
        (["report", ""], "run_dir"),
        (["report", "RUN", "-o", ""], "--output"),
        (["probe", "show", ""], "file"),
        (["probe", "build", "-o", ""], "--output"),
        (["probe", "import", "R", "--run", "", "--alias", "x", "--suite", "S"], "--run"),
        (["probe", "import", "", "--run", "RUN", "--alias", "x"], "responses"),
        (["probe", "import", "R", "--run", "RUN", "--alias", "x", "--spec", ""], "--spec"),
        (["probe", "import", "R", "--run", "W/new", "--alias", "x", "--suite", ""], "--suite"),
        (["probe", "run", "--teacher", "zoo:teacher", "--run", "", "--suite", "S"], "--run"),
        (["probe", "run", "--teacher", "zoo:teacher", "--run", "W/new", "--suite", ""], "--suite"),
        (["probe", "run", "--teacher", "", "--run", "W/new"], "--teacher"),
        (["probe", "run", "--teacher", "zoo:teacher", "-s", "", "--run", "W/new"], "--student"),
        (["distill", "lora", "RUN", "--out", ""], "--out"),
        (["distill", "lora", "RUN", "--student", ""], "--student"),
        (["distill", "kd", "RUN", "--teacher-spec", ""], "--teacher-spec"),
        (["run", "--run", ""], "--run"),
        (["run", "--teacher", ""], "--teacher"),
        (["zoo", "path", "--config", ""], "--config"),
        (["attack", "RUN", "--test-queries", ""], "--test-queries"),
        (["attack", "RUN", "--strategy", ","], "--strategy"),
        (["attack", "RUN", "--adversary", ""], "--adversary"),
        (["attack", "RUN", "--compare", ""], "--compare"),
    ],
)
def test_empty_values_are_refused(
    args: list[str], needle: str, syn: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)  # where Path("") would have written a run
    src = write_jsonl(tmp_path / "r.jsonl", responses("x"))
    suite = write_jsonl(tmp_path / "s.jsonl", suite_records())
    subst = {"RUN": str(syn), "R": str(src), "S": str(suite), "W/new": str(tmp_path / "new")}
    before = snapshot(syn)
    res = invoke(*[subst.get(a, a) for a in args])
    assert_one_line_error(res, needle)
    assert snapshot(syn) == before
    assert list(cwd.iterdir()) == [] and not (tmp_path / "new").exists()


def test_empty_names_in_a_config_are_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    for key in ("run", "teacher", "student", "suite"):
        cfg.write_text(f"{key}: ''\n")
        assert_one_line_error(invoke("run", "--config", cfg), f"{key}: must not be empty")
    cfg.write_text("teacher: ' '\nrun: r\n")
    assert_one_line_error(invoke("probe", "run", "--config", cfg), "teacher: must not be empty")


# ---- the run's layout: a file where a directory belongs, and the reverse -------------------
@pytest.mark.parametrize(
    ("make", "args", "needle"),
    [
        ("attack", ["attack", "RUN", *ATTACK], "expected the run's attack/ directory"),
        ("responses", ["attack", "RUN", *ATTACK], "expected the run's responses/ directory"),
        ("responses", ["probe", "import", "R", "--run", "RUN", "--alias", "x"], "responses/"),
        ("adapters", ["distill", "lora", "RUN", "--student", "zoo:student"], "adapters/"),
        ("run.yaml/", ["attack", "RUN", *ATTACK], "expected the run's run.yaml file"),
        ("results.json/", ["report", "RUN"], "expected the run's results.json file"),
    ],
)
def test_a_file_where_the_run_has_a_directory(
    make: str, args: list[str], needle: str, syn: Path, tmp_path: Path
) -> None:
    target = syn / make.rstrip("/")
    if target.is_dir():
        for p in sorted(target.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        target.rmdir()
    elif target.exists():
        target.unlink()
    if make.endswith("/"):
        target.mkdir()
    else:
        target.write_text("not a directory\n")
    src = write_jsonl(tmp_path / "r.jsonl", responses("x"))
    before = snapshot(syn)
    res = invoke(*[{"RUN": str(syn), "R": str(src)}.get(a, a) for a in args])
    assert_one_line_error(res, needle)
    assert snapshot(syn) == before


def test_run_dir_that_is_a_file_and_a_responses_file_that_is_a_directory(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_text("x")
    assert_one_line_error(invoke("attack", f, *ATTACK), "is a file, expected a run directory")
    res = invoke("probe", "import", tmp_path, "--run", tmp_path / "r", "--alias", "x")
    assert_one_line_error(res, "is a directory, expected a responses file")


# ---- backups of old responses are not models -----------------------------------------------
def test_replaced_responses_are_kept_and_never_attacked(imported_run: Path, tmp_path: Path) -> None:
    new = write_jsonl(tmp_path / "new.jsonl", responses("new"))
    for _ in range(2):  # twice within a second: two backups, neither overwritten
        res = invoke(
            "probe", "import", new, "--run", imported_run, "--alias", "mine", "--replace",
            "--no-similarity",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
    backups = sorted((imported_run / "responses").glob("mine.replaced-*.jsonl"))
    assert len(backups) == 2
    assert backups[0].read_bytes() != backups[1].read_bytes()  # the original and the 1st
    res = invoke("attack", imported_run, *ATTACK)
    assert res.exit_code == 0, res.output
    results = json.loads((imported_run / "results.json").read_text())
    assert list(results["attack"]["comparisons"]) == ["mine"]
    # A name of that form cannot be given to a model, and hidden files are not models.
    (imported_run / "responses" / ".x.jsonl").write_text("not json\n")
    res = invoke("probe", "import", new, "--run", imported_run, "--alias", "mine.stale-7")
    assert_one_line_error(res, "backups")
    res = invoke("attack", imported_run, *ATTACK)
    assert res.exit_code == 0, res.output


def test_a_stray_file_in_responses_is_named(syn: Path) -> None:
    (syn / "responses" / "my model.jsonl").write_text("{}\n")
    before = snapshot(syn)
    res = invoke("attack", syn, *ATTACK)
    assert_one_line_error(res, "my model.jsonl", "not a model's responses")
    assert snapshot(syn) == before


# ---- results.json of another schema, damaged run files found before anything is written ----
@pytest.mark.parametrize(("version", "needle"), [(99, "newer bbi"), ("1", "schema_version")])
@pytest.mark.parametrize("command", ["attack", "report"])
def test_results_of_another_schema_are_refused(
    syn: Path, command: str, version: object, needle: str
) -> None:
    res = invoke("attack", syn, *ATTACK)
    assert res.exit_code == 0, res.output
    results = json.loads((syn / "results.json").read_text())
    (syn / "results.json").write_text(json.dumps({**results, "schema_version": version}))
    before = snapshot(syn)
    res = invoke(command, syn, *(ATTACK if command == "attack" else []))
    assert_one_line_error(res, "results.json", needle)
    assert snapshot(syn) == before


@pytest.mark.parametrize(
    ("name", "damage"),
    [
        ("results.json", "{"),
        ("results.json", "[]"),
        ("results.json", '{"similarity": []}'),
        ("results.json", '{"schema_version": 7}'),
        ("similarity.jsonl", '{"student": "mine", "cos\n'),
        ("similarity.jsonl", "[1]\n"),
    ],
)
def test_import_checks_the_files_it_updates_before_writing(
    imported_run: Path, tmp_path: Path, name: str, damage: str
) -> None:
    (imported_run / name).write_text(damage)
    before = snapshot(imported_run)
    src = write_jsonl(tmp_path / "r.jsonl", responses("x"))
    res = invoke("probe", "import", src, "--run", imported_run, "--alias", "x")
    assert_one_line_error(res, name)
    assert snapshot(imported_run) == before


def test_a_damaged_checkpoint_is_one_line(micro_zoo, imported_run: Path) -> None:
    train = ["distill", "lora", imported_run, "--student", "zoo:student", "--epochs", "2"]
    train += ["--batch-size", "4", "--no-progress"]
    res = invoke(*train, "--stop-after-steps", "1")
    assert res.exit_code == 0, res.output
    ckpt = imported_run / "adapters" / "student_lora" / "checkpoint"
    for name in ("trainable.safetensors", "optimizer.pt", "scheduler.pt", "rng_0.pt"):
        good = (ckpt / name).read_bytes()
        (ckpt / name).write_bytes(good[: len(good) // 2])  # a save cut short
        before = snapshot(imported_run)
        assert_one_line_error(invoke(*train, "--resume"), name, "damaged checkpoint")
        assert snapshot(imported_run) == before
        (ckpt / name).write_bytes(good)
    (ckpt / "state.json").write_text("[1]")
    assert_one_line_error(invoke(*train, "--resume"), "state.json", "invalid checkpoint state")


@pytest.mark.parametrize("generation", [[1], "fast", {"max_new_tokens": "x"}])
def test_run_yaml_sections_of_the_wrong_shape(syn: Path, tmp_path: Path, generation) -> None:
    cfg = yaml.safe_load((syn / "run.yaml").read_text())
    cfg["generation"] = generation
    (syn / "run.yaml").write_text(yaml.safe_dump(cfg))
    before = snapshot(syn)
    res = invoke(
        "distill", "kd", syn, "--teacher-spec", "zoo:teacher", "--student", "zoo:student",
        "--no-progress",
    )  # fmt: skip
    assert_one_line_error(res, "run.yaml", "generation")
    assert snapshot(syn) == before
    if not isinstance(generation, dict):  # every reader of run.yaml checks its sections
        src = write_jsonl(tmp_path / "r.jsonl", responses("x"))
        res = invoke("probe", "import", src, "--run", syn, "--alias", "x")
        assert_one_line_error(res, "run.yaml", "'generation' must be an object")


# ---- a report never overwrites the run it reports on ---------------------------------------
@pytest.mark.parametrize("name", ["results.json", "run.yaml", "suite.jsonl", "responses/x.html"])
def test_report_output_onto_a_run_file_is_refused(syn: Path, name: str) -> None:
    assert invoke("attack", syn, *ATTACK).exit_code == 0
    before = snapshot(syn)
    res = invoke("report", syn, "-o", syn / name)
    assert_one_line_error(res, "is one of the run's own files")
    assert snapshot(syn) == before
    res = invoke("report", syn, "-o", syn / "other.md", "--format", "md")
    assert res.exit_code == 0, res.output


# ---- non-UTF-8 names ---------------------------------------------------------------------
@pytest.mark.skipif(os.name != "posix", reason="bytes in file names")
def test_a_run_whose_name_is_not_utf8_still_works(tmp_path: Path) -> None:
    bad = os.fsdecode(b"r\xff")  # what Python makes of such a name: a lone surrogate
    suite = write_jsonl(tmp_path / "suite.jsonl", suite_records())
    run = tmp_path / bad
    for alias, role in (("teacher", "teacher"), ("mine", "student")):
        src = write_jsonl(tmp_path / os.fsdecode(alias.encode() + b"\xfe.jsonl"), responses(alias))
        res = invoke(
            "probe", "import", src, "--run", run, "--alias", alias, "--role", role,
            "--suite", suite, "--no-similarity",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
    text = (run / "run.yaml").read_text(encoding="utf-8")
    assert "spec: imported:mine\\xfe.jsonl\n" in text  # readable text, not a YAML escape
    res = invoke("attack", run, *ATTACK)
    assert res.exit_code == 0, res.output
    assert json.loads((run / "results.json").read_text())["run"] == "r\\xff"
    res = invoke("probe", "import", src, "--run", run, "--alias", "x", "--spec", bad)
    assert_one_line_error(res, "--spec", "not valid UTF-8")


# ---- `bbi run`: what would only fail after probing fails first, in one line ------------------
@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--limit", "1"], "the attack needs at least 2 train prompts"),
        (["--limit", "8"], "attack.budgets starts at 40"),
        (["--teacher", "nosuch:x"], "unknown model kind"),
        (["--student", "zoo:nosuch"], "unknown zoo model"),
        (["--run", "FILE"], "exists and is not a directory"),
        (["--run", "FILE", "--fresh"], "exists and is not a directory"),
    ],
)
def test_bbi_run_checks_before_its_first_step(tmp_path: Path, args: list[str], needle: str) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    args = [str(blocker) if a == "FILE" else a for a in args]
    if "--run" not in args:
        args += ["--run", str(tmp_path / "new")]
    res = invoke("run", "--no-progress", "--no-distill", *args)
    assert_one_line_error(res, needle)  # no stage header before it
    assert not (tmp_path / "new").exists() and blocker.read_text() == "x"
    assert not (tmp_path / "cache").exists()  # no model was built or fetched


def test_bbi_run_refuses_a_run_it_would_mix_into(imported_run: Path, tmp_path: Path) -> None:
    before = snapshot(imported_run)
    res = invoke("run", "--run", imported_run, "--no-progress", "--no-distill")
    assert_one_line_error(res, "already holds a different suite")
    assert snapshot(imported_run) == before


def test_a_damaged_embeddings_cache_is_recomputed(tmp_path: Path) -> None:
    """Embedding caches are only caches: garbage in one is recomputed, never an error."""
    import numpy as np

    from bbi.similarity import embeddings_for, prompt_embeddings

    run = synthetic.make_run(tmp_path / "emb", n_per_category=2, test_fraction=0.5)
    first = embeddings_for(run, "teacher")
    for f in (run.path / "embeddings").glob("*.npz"):
        f.write_bytes(b"garbage")
    again = embeddings_for(run, "teacher")
    assert set(again) == set(first)
    assert all(np.allclose(again[k], first[k], atol=1e-5) for k in first)
    (run.path / "embeddings" / "_prompts.npz").write_bytes(b"\x00" * 10)
    assert set(prompt_embeddings(run)) == set(run.suite().index)


@pytest.mark.parametrize(
    "text", ['{"models": ', "[]", '{"models": {}}', '{"models": {"teacher": 1}}']
)
def test_a_damaged_zoo_build_record_is_one_line(micro_zoo, tmp_path: Path, text: str) -> None:
    import shutil

    from bbi import zoo

    cache = tmp_path / "cache"
    shutil.copytree(os.environ["BBI_CACHE_DIR"], cache)
    record = next(cache.glob("zoo/*/zoo.json"))
    record.write_text(text, encoding="utf-8")
    old = os.environ["BBI_CACHE_DIR"]
    os.environ["BBI_CACHE_DIR"] = str(cache)
    try:
        with pytest.raises(BbiError, match="damaged zoo build record.*bbi zoo build --force"):
            zoo.fingerprint("teacher")
        assert_one_line_error(invoke("zoo", "list"), "damaged zoo build record")
    finally:
        os.environ["BBI_CACHE_DIR"] = old
