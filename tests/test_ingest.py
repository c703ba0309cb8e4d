"""`bbi probe import` of files in the shapes users have them: field mapping, long and wide
tables, joins on prompt text, suites built from the imported prompts, any import order,
any model name, several samples per prompt and the A/A null made from them."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.runstore import RunDir, read_jsonl

runner = CliRunner()
MAP = ["--prompt-field", "instruction", "--response-field", "output"]
MAP += ["--category-field", "dataset", "--model-field", "generator"]


def invoke(*args: object):
    return runner.invoke(app, [str(a) for a in args])


def snapshot(root: Path) -> dict[str, bytes]:
    if not root.exists():
        return {}
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def assert_one_line_error(result, *needles: str) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def instructions(n: int = 40) -> list[tuple[str, str]]:
    """(instruction, dataset) pairs, two datasets, one instruction spanning lines."""
    out = [
        (f"Explain topic number {i} in a few words.", "koala" if i % 2 else "vicuna")
        for i in range(n)
    ]
    out[3] = ('Write a poem,\nwith two lines, about "quotes".', out[3][1])
    return out


def teacher_text(i: int) -> str:
    return f"Topic {i} is about the history and the meaning of item {i}, explained at length."


def student_text(i: int) -> str:
    return f"Sure! Topic {i}: item {i}."


def alpaca_file(path: Path, generator: str, text, n: int = 40) -> Path:
    """An AlpacaEval-shaped results/<model>/model_outputs.json (a JSON array)."""
    items = [
        {"instruction": ins, "output": text(i), "generator": generator, "dataset": ds}
        for i, (ins, ds) in enumerate(instructions(n))
    ]
    path.write_text(json.dumps(items, indent=1), encoding="utf-8")
    return path


# ---- the whole path: AlpacaEval-shaped files, student first, attack, report ---------------
def test_alpaca_shaped_pair_imported_student_first_attacks_and_reports(tmp_path: Path) -> None:
    student = alpaca_file(tmp_path / "student.json", "alpaca-7b", student_text)
    teacher = alpaca_file(tmp_path / "teacher.json", "text_davinci_003", teacher_text)
    run = tmp_path / "run"
    build = ["--build-suite", "--split-seed", "3", "--test-fraction", "0.25"]
    res = invoke("probe", "import", student, "--run", run, *MAP, *build)
    assert res.exit_code == 0, res.output
    assert "once the teacher is imported" in res.output
    res = invoke("probe", "import", teacher, "--run", run, *MAP, *build, "--role", "teacher")
    assert res.exit_code == 0, res.output
    assert "alpaca-7b" in res.output and "[" in res.output  # the similarity, with its CI
    results = json.loads((run / "results.json").read_text())
    sim = results["similarity"]["alpaca-7b"]["overall"]
    assert 0 < sim["value"] < 1 and sim["ci"][0] <= sim["value"] <= sim["ci"][1]
    assert results["suite"]["hash"].startswith("sha256:")
    assert results["suite"]["categories"] == ["vicuna", "koala"]
    assert (results["suite"]["n_train"], results["suite"]["n_test"]) == (30, 10)
    cfg = yaml.safe_load((run / "run.yaml").read_text())
    assert {a: m["role"] for a, m in cfg["models"].items()} == {
        "alpaca-7b": "student",
        "text_davinci_003": "teacher",
    }
    res = invoke(
        "attack", run, "--budget", "20,60", "--seeds", "1", "--adversary", "surface,tfidf",
        "--strategy", "random", "--test-queries", "1", "--n-bootstrap", "50",
        "--n-permutations", "50", "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "alpaca-7b" in json.loads((run / "results.json").read_text())["attack"]["comparisons"]
    res = invoke("report", run, "-o", tmp_path / "report.html")
    assert res.exit_code == 0, res.output
    html = (tmp_path / "report.html").read_text()
    assert "no hash recorded" not in html and results["suite"]["hash"] in html


# ---- every file shape reads the same ----------------------------------------------------
def _rows(n: int = 12) -> list[dict]:
    return [
        {"question": ins, "answer": teacher_text(i), "topic": ds}
        for i, (ins, ds) in enumerate(instructions(n))
    ]


def _write_shape(tmp_path: Path, shape: str) -> Path:
    rows = _rows()
    if shape == "json":
        path = tmp_path / "r.json"
        path.write_text(json.dumps(rows), encoding="utf-8")
    elif shape == "jsonl":
        path = tmp_path / "r.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif shape in ("csv", "tsv"):
        path = tmp_path / f"r.{shape}"
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.DictWriter(
                fh, ["question", "answer", "topic"], delimiter="," if shape == "csv" else "\t"
            )
            w.writeheader()
            w.writerows(rows)
        assert "\n" in rows[3]["question"]  # a multi-line quoted cell
    elif shape == "parquet":
        pd = pytest.importorskip("pandas")
        pytest.importorskip("pyarrow", reason="Parquet needs pyarrow")
        path = tmp_path / "r.parquet"
        pd.DataFrame(rows).to_parquet(path)
    else:
        datasets = pytest.importorskip("datasets")
        path = tmp_path / "r_ds"
        datasets.Dataset.from_list(rows).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("shape", ["json", "jsonl", "csv", "tsv", "parquet", "datasets"])
def test_every_shape_imports_to_the_same_run(tmp_path: Path, shape: str) -> None:
    src = _write_shape(tmp_path, shape)
    run = tmp_path / "run"
    res = invoke(
        "probe", "import", src, "--run", run, "--alias", "m", "--prompt-field", "question",
        "--response-field", "answer", "--category-field", "topic", "--build-suite",
        "--test-size", "4", "--no-similarity",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    suite = [json.loads(x) for x in (run / "suite.jsonl").read_text().splitlines()]
    assert [r["prompt"] for r in suite] == [r["question"] for r in _rows()]
    assert sum(r["split"] == "test" for r in suite) == 4
    lines = list(read_jsonl(run / "responses" / "m.jsonl"))
    assert [x["text"] for x in lines] == [r["answer"] for r in _rows()]
    # The same prompts give the same suite whatever the shape: a fixed reference.
    ref = tmp_path / "ref"
    (tmp_path / "ref_src").mkdir()
    src2 = _write_shape(tmp_path / "ref_src", "json")
    res = invoke(
        "probe", "import", src2, "--run", ref, "--alias", "m", "--prompt-field", "question",
        "--response-field", "answer", "--category-field", "topic", "--build-suite",
        "--test-size", "4", "--no-similarity",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert (ref / "suite.jsonl").read_bytes() == (run / "suite.jsonl").read_bytes()


# ---- the split: seeded, sized, stratified, independent of row order ------------------------
def test_split_is_seeded_sized_stratified_and_order_free(tmp_path: Path) -> None:
    from probes.ingest import FieldMap, SplitSpec, suite_from_file

    src = _write_shape(tmp_path, "json")
    fields = FieldMap(prompt="question", category="topic")
    a, note = suite_from_file(src, fields, SplitSpec(seed=1, test_fraction=0.5))
    b, _ = suite_from_file(src, fields, SplitSpec(seed=1, test_fraction=0.5))
    c, _ = suite_from_file(src, fields, SplitSpec(seed=2, test_fraction=0.5))
    assert a == b and [r["split"] for r in a] != [r["split"] for r in c]
    for cat in ("koala", "vicuna"):
        assert sum(r["split"] == "test" for r in a if r["category"] == cat) == 3
    assert "seeded with 1" in note
    rev = tmp_path / "rev.json"
    rev.write_text(json.dumps(_rows()[::-1]), encoding="utf-8")
    d, _ = suite_from_file(rev, fields, SplitSpec(seed=1, test_fraction=0.5))
    assert {r["id"]: r["split"] for r in d} == {r["id"]: r["split"] for r in a}
    sized, _ = suite_from_file(src, fields, SplitSpec(seed=0, test_size=5))
    assert sum(r["split"] == "test" for r in sized) == 5
    # `bbi probe build --from` writes the suite --build-suite would build.
    out = tmp_path / "built.jsonl"
    res = invoke(
        "probe", "build", "--from", src, "--prompt-field", "question", "--category-field",
        "topic", "--split-seed", "1", "--test-fraction", "0.5", "-o", out,
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert [json.loads(x) for x in out.read_text().splitlines()] == a


# ---- long and wide tables, any model name ---------------------------------------------------
def test_wide_table_with_model_names_as_columns(tmp_path: Path) -> None:
    src = tmp_path / "wide.csv"
    with src.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "gpt-4", "openai/gpt-4o"])
        for i, (ins, _) in enumerate(instructions(10)):
            w.writerow([ins, teacher_text(i), student_text(i)])
    run = tmp_path / "run"
    res = invoke(
        "probe", "import", src, "--run", run, "--prompt-field", "question",
        "--response-field", "gpt-4,openai/gpt-4o", "--teacher", "gpt-4", "--build-suite",
        "--no-similarity",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    cfg = yaml.safe_load((run / "run.yaml").read_text())
    assert cfg["models"]["openai/gpt-4o"]["role"] == "student"  # verbatim
    assert cfg["models"]["gpt-4"]["role"] == "teacher"
    assert sorted(p.name for p in (run / "responses").iterdir()) == [
        "gpt-4.jsonl",
        "openai_gpt-4o.jsonl",
    ]
    rd = RunDir(run)
    assert rd.teacher_alias() == "gpt-4" and "openai/gpt-4o" in rd.models()
    assert rd.paired("openai/gpt-4o")["other"].tolist() == [student_text(i) for i in range(10)]
    res = invoke(
        "attack", run, "--budget", "4", "--seeds", "1", "--adversary", "surface",
        "--strategy", "random", "--test-queries", "1", "--n-bootstrap", "20",
        "--n-permutations", "20", "--no-progress",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert [p.name for p in (run / "attack").iterdir()] == ["openai_gpt-4o"]
    res = invoke("report", run, "-o", tmp_path / "r.md", "--format", "md")
    assert res.exit_code == 0, res.output
    assert "openai/gpt-4o" in (tmp_path / "r.md").read_text()
    # A name whose file name is taken is refused, and nothing changes.
    other = tmp_path / "o.csv"
    with other.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "openai_gpt-4o"])
        for i, (ins, _) in enumerate(instructions(10)):
            w.writerow([ins, student_text(i)])
    before = snapshot(run)
    res = invoke(
        "probe", "import", other, "--run", run, "--prompt-field", "question",
        "--response-field", "openai_gpt-4o", "--alias", "openai_gpt-4o",
    )  # fmt: skip
    assert_one_line_error(res, "'openai/gpt-4o'", "share the file")
    assert snapshot(run) == before


def test_long_table_imports_each_model_under_its_name(tmp_path: Path) -> None:
    rows = []
    for i, (ins, ds) in enumerate(instructions(10)):
        rows.append({"prompt": ins, "model": "big", "text": teacher_text(i), "cat": ds})
        rows.append({"prompt": ins, "model": "small", "text": student_text(i), "cat": ds})
        rows.append({"prompt": ins, "model": "other", "text": "x", "cat": ds})
    src = tmp_path / "long.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = tmp_path / "run"
    res = invoke(
        "probe", "import", src, "--run", run, "--model-field", "model", "--models", "big,small",
        "--teacher", "big", "--category-field", "cat", "--build-suite", "--no-similarity",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rd = RunDir(run)
    assert {a: m["role"] for a, m in rd.models().items()} == {"big": "teacher", "small": "student"}
    res = invoke("probe", "import", src, "--run", tmp_path / "r2", "--model-field", "model",
                 "--models", "nobody", "--build-suite")  # fmt: skip
    assert_one_line_error(res, "'nobody'", "'big'")
    assert not (tmp_path / "r2").exists()


# ---- samples and the A/A null -------------------------------------------------------------
def test_several_rows_per_prompt_are_samples_and_give_the_null(tmp_path: Path) -> None:
    rows = [
        {"instruction": ins, "output": f"{teacher_text(i)} (draw {k})", "dataset": ds}
        for i, (ins, ds) in enumerate(instructions(10))
        for k in range(2)
    ]
    src = tmp_path / "t.json"
    src.write_text(json.dumps(rows), encoding="utf-8")
    run = tmp_path / "run"
    res = invoke(
        "probe", "import", src, "--run", run, "--alias", "teacher", "--role", "teacher",
        "--prompt-field", "instruction", "--response-field", "output", "--build-suite",
        "--no-similarity",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "A/A null" in res.output
    rd = RunDir(run)
    assert rd.models()["teacher_null"]["role"] == "null"
    t, n = rd.responses("teacher"), rd.responses("teacher_null")
    assert set(t["sample"]) == {0} and set(n["sample"]) == {0}
    assert all(x.endswith("(draw 0)") for x in t["text"])
    assert all(x.endswith("(draw 1)") for x in n["text"])  # no text on both sides
    man = json.loads((run / "manifest.json").read_text())
    assert "null_from" in man["models"]["teacher_null"]


def test_a_sample_column_keeps_the_samples(tmp_path: Path) -> None:
    from bbi.ingest import split_null

    rows = [
        {"prompt": ins, "text": f"s{i}-{k}", "sample": k}
        for i, (ins, _) in enumerate(instructions(6))
        for k in (2, 0, 1, 3)
    ]
    src = tmp_path / "s.jsonl"
    src.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    run = tmp_path / "run"
    res = invoke(
        "probe", "import", src, "--run", run, "--alias", "stu", "--build-suite",
        "--test-size", "2", "--no-similarity",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "4 samples per prompt" in res.output
    got = RunDir(run).responses("stu")
    assert sorted(set(got["sample"])) == [0, 1, 2, 3]
    assert all(t.endswith(f"-{s}") for t, s in zip(got["text"], got["sample"], strict=True))
    lines = [{"prompt_id": "a", "sample": s, "text": str(s)} for s in range(4)]
    teacher, null = split_null(lines)
    assert [x["text"] for x in teacher] == ["0", "1"] and [x["text"] for x in null] == ["2", "3"]
    assert [x["sample"] for x in null] == [0, 1]
    assert split_null(lines[:1]) is None


# ---- order of imports, and the repair of an old run ---------------------------------------
def test_refresh_repairs_a_run_imported_student_first(tmp_path: Path) -> None:
    student = alpaca_file(tmp_path / "s.json", "stu", student_text, n=12)
    teacher = alpaca_file(tmp_path / "t.json", "tea", teacher_text, n=12)
    run = tmp_path / "run"
    for src, role in ((student, "student"), (teacher, "teacher")):
        res = invoke(
            "probe", "import", src, "--run", run, *MAP, "--build-suite", "--role", role,
            "--no-similarity",
        )  # fmt: skip
        assert res.exit_code == 0, res.output
    assert "similarity" not in json.loads((run / "results.json").read_text())
    res = invoke("probe", "refresh", run)
    assert res.exit_code == 0, res.output
    assert "stu" in json.loads((run / "results.json").read_text())["similarity"]
    assert "stu" in res.output


# ---- bad input: one line, exit 2, nothing written ------------------------------------------
def test_validate_names_the_missing_column(tmp_path: Path) -> None:
    src = tmp_path / "q.csv"
    with src.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["question", "kind"])
        for ins, ds in instructions(8):
            w.writerow([ins + "\n\nmore\nlines", ds])
    msg = assert_one_line_error(
        invoke("probe", "validate", src), "no column 'prompt'", "'question'"
    )
    assert "q.csv: no column" in msg  # no line number
    res = invoke("probe", "validate", src, "--prompt-field", "question", "--category-field", "kind")
    assert res.exit_code == 0, res.output
    assert "ok: 8 prompts" in res.output
    res = invoke("probe", "validate", src, "--prompt-field", "query")
    assert_one_line_error(res, "no column 'query'", "'question'", "--prompt-field")


@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["--response-field", "answer"], ["no column 'answer'", "'output'"]),
        (["--prompt-field", "instruction", "--response-field", "output"], ["--alias"]),
        (
            ["--alias", "x", "--response-field", "output"],
            ["'prompt_id' or 'prompt'", "'instruction'"],
        ),
        (["--alias", "x", *MAP[:4], "--test-size", "3"], ["--build-suite"]),
        (["--alias", "x", *MAP[:4], "--build-suite", "--test-size", "99"], ["--test-size 99"]),
        ([*MAP, "--alias", "x"], ["no suite yet"]),
        ([*MAP, "--build-suite", "--suite", "default"], ["--build-suite and --suite"]),
        ([*MAP, "--build-suite", "--teacher", "nobody"], ["--teacher 'nobody'"]),
    ],
)
def test_bad_imports_are_one_line_and_write_nothing(
    tmp_path: Path, args: list[str], needles: list[str]
) -> None:
    src = alpaca_file(tmp_path / "m.json", "mod", student_text, n=10)
    run = tmp_path / "run"
    assert_one_line_error(invoke("probe", "import", src, "--run", run, *args), *needles)
    assert not run.exists()


def test_prompts_not_in_the_suite_and_other_prompt_sets_are_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    first = alpaca_file(tmp_path / "a.json", "a", student_text, n=10)
    res = invoke("probe", "import", first, "--run", run, *MAP, "--build-suite", "--no-similarity")
    assert res.exit_code == 0, res.output
    before = snapshot(run)
    more = alpaca_file(tmp_path / "b.json", "b", teacher_text, n=12)
    res = invoke("probe", "import", more, "--run", run, *MAP, "--build-suite", "--role", "teacher")
    assert_one_line_error(res, "b.json: item 10", "not in the run's suite")
    fewer = alpaca_file(tmp_path / "c.json", "c", teacher_text, n=8)
    res = invoke("probe", "import", fewer, "--run", run, *MAP, "--role", "teacher")
    assert_one_line_error(res, "prompt set of 'c'", "differs")
    assert snapshot(run) == before


def test_a_datasets_dict_keeps_its_own_split_unless_a_split_is_asked_for(tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    rows = _rows()
    path = tmp_path / "dd"
    parts = {"train": rows[:9], "test": rows[9:]}
    datasets.DatasetDict({k: datasets.Dataset.from_list(v) for k, v in parts.items()}).save_to_disk(
        str(path)
    )
    common = ["--alias", "m", "--prompt-field", "question", "--response-field", "answer"]
    common += ["--build-suite", "--no-similarity"]
    res = invoke("probe", "import", path, "--run", tmp_path / "own", *common)
    assert res.exit_code == 0, res.output
    assert "own split: 9 train / 3 test" in res.output
    suite = [json.loads(x) for x in (tmp_path / "own" / "suite.jsonl").read_text().splitlines()]
    assert [r["split"] for r in suite] == ["train"] * 9 + ["test"] * 3
    res = invoke("probe", "import", path, "--run", tmp_path / "seeded", *common, "--test-size", "6")
    assert res.exit_code == 0, res.output
    suite = [json.loads(x) for x in (tmp_path / "seeded" / "suite.jsonl").read_text().splitlines()]
    assert sum(r["split"] == "test" for r in suite) == 6
