"""A command that fails leaves the run directory byte-identical; nothing mixes models or suites.

Each case builds a run, snapshots every file (path -> bytes and mode), runs the failing
command through the real CLI, and compares.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.runstore import RunDir

runner = CliRunner()


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def suite_file(tmp_path: Path, n: int = 10, name: str = "suite.jsonl", tag: str = "") -> Path:
    path = tmp_path / name
    lines = [
        {
            "id": f"q{i}",
            "category": "factual" if i % 2 else "reasoning",
            "prompt": f"What is {i} plus {i}?{tag}",
            "split": "test" if i % 5 == 0 else "train",
        }
        for i in range(n)
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines), encoding="utf-8")
    return path


def responses_file(tmp_path: Path, ids: list[str], name: str, torn: bool = False) -> Path:
    path = tmp_path / name
    text = "".join(json.dumps({"prompt_id": i, "text": f"answer {i} {name}"}) + "\n" for i in ids)
    if torn:
        text = text[:-9]  # an unterminated, invalid last line
    path.write_text(text, encoding="utf-8")
    return path


def invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def assert_one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.fixture()
def imported_run(tmp_path: Path) -> Path:
    """A run made only of imported responses (teacher + one student) on a 10-prompt suite."""
    suite = suite_file(tmp_path)
    ids = [f"q{i}" for i in range(10)]
    run = tmp_path / "run"
    for alias, role in (("teacher", "teacher"), ("mine", "student")):
        res = invoke(
            "probe",
            "import",
            responses_file(tmp_path, ids, f"{alias}.jsonl"),
            "--run",
            run,
            "--alias",
            alias,
            "--role",
            role,
            "--suite",
            suite,
            "--no-similarity",
        )
        assert res.exit_code == 0, res.output
    return run


def test_failed_probe_run_with_bad_setting_changes_nothing(imported_run: Path) -> None:
    before = snapshot(imported_run)
    res = invoke(
        "probe",
        "run",
        "--teacher",
        "openai:http://127.0.0.1:9/v1#m",
        "--student",
        "zoo:student",
        "--run",
        imported_run,
        "--temperature",
        "-1",
    )
    assert_one_line_error(res, "--temperature")
    assert snapshot(imported_run) == before


def test_probe_run_with_an_unreachable_model_changes_nothing(
    imported_run: Path, tmp_path: Path
) -> None:
    before = snapshot(imported_run)
    res = invoke(
        "probe",
        "run",
        "--teacher",
        "openai:http://127.0.0.1:9/v1#m",
        "--run",
        tmp_path / "new-run",
        "--suite",
        tmp_path / "suite.jsonl",
        "--no-null",
        "--no-progress",
    )
    assert res.exit_code == 2, res.output
    assert not (tmp_path / "new-run").exists()
    assert snapshot(imported_run) == before


def test_probe_run_never_mixes_a_model_into_an_imported_alias_or_suite(
    imported_run: Path, micro_zoo, tmp_path: Path
) -> None:
    before = snapshot(imported_run)
    # Another suite (the default one) into the same run: refused, names --fresh.
    res = invoke(
        "probe",
        "run",
        "--teacher",
        "zoo:teacher",
        "--run",
        imported_run,
        "--limit",
        "20",
        "--no-progress",
    )
    assert_one_line_error(res, "different suite", "--fresh")
    # The same suite, but a zoo model under the imported teacher alias: refused.
    res = invoke(
        "probe",
        "run",
        "--teacher",
        "zoo:teacher",
        "--run",
        imported_run,
        "--suite",
        tmp_path / "suite.jsonl",
        "--no-null",
        "--no-progress",
    )
    assert_one_line_error(res, "'teacher'", "imported", "--fresh")
    assert snapshot(imported_run) == before


def test_fresh_moves_the_old_run_aside(imported_run: Path, micro_zoo, tmp_path: Path) -> None:
    before = snapshot(imported_run)
    res = invoke(
        "probe",
        "run",
        "--teacher",
        "zoo:teacher",
        "--student",
        "zoo:student",
        "--run",
        imported_run,
        "--suite",
        tmp_path / "suite.jsonl",
        "--no-null",
        "--max-new-tokens",
        "4",
        "--no-progress",
        "--fresh",
    )
    assert res.exit_code == 0, res.output
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("run.old-")]
    assert len(kept) == 1 and snapshot(kept[0]) == before
    assert RunDir(imported_run).config()["models"]["teacher"]["spec"] == "zoo:teacher"


def test_rejected_import_keeps_the_suite(imported_run: Path, tmp_path: Path) -> None:
    before = snapshot(imported_run)
    other = suite_file(tmp_path, name="other.jsonl", tag=" (other)")
    ids = [f"q{i}" for i in range(10)]
    res = invoke(
        "probe",
        "import",
        responses_file(tmp_path, ids, "x.jsonl"),
        "--run",
        imported_run,
        "--alias",
        "x",
        "--suite",
        other,
    )
    assert_one_line_error(res, "--suite differs")
    assert snapshot(imported_run) == before


def test_import_refuses_a_second_teacher_and_a_used_alias(
    imported_run: Path, tmp_path: Path
) -> None:
    before = snapshot(imported_run)
    ids = [f"q{i}" for i in range(10)]
    src = responses_file(tmp_path, ids, "t2.jsonl")
    res = invoke(
        "probe", "import", src, "--run", imported_run, "--alias", "t2", "--role", "teacher"
    )
    assert_one_line_error(res, "already has the teacher")
    res = invoke("probe", "import", src, "--run", imported_run, "--alias", "mine")
    assert_one_line_error(res, "'mine'", "--replace")
    assert snapshot(imported_run) == before
    res = invoke(
        "probe", "import", src, "--run", imported_run, "--alias", "mine", "--replace",
        "--no-similarity",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    backups = list((imported_run / "responses").glob("mine.replaced-*.jsonl"))
    assert len(backups) == 1 and backups[0].read_bytes() == before["responses/mine.jsonl"][0]


def test_import_of_a_torn_user_file_is_an_error(imported_run: Path, tmp_path: Path) -> None:
    before = snapshot(imported_run)
    ids = [f"q{i}" for i in range(10)]
    src = responses_file(tmp_path, ids, "torn.jsonl", torn=True)
    res = invoke("probe", "import", src, "--run", imported_run, "--alias", "torn")
    assert_one_line_error(res, f"{src}:10")
    assert snapshot(imported_run) == before


def test_import_with_a_truncated_manifest_writes_nothing(
    imported_run: Path, tmp_path: Path
) -> None:
    man = imported_run / "manifest.json"
    man.write_text(man.read_text(encoding="utf-8")[:20], encoding="utf-8")
    before = snapshot(imported_run)
    ids = [f"q{i}" for i in range(10)]
    res = invoke(
        "probe", "import", responses_file(tmp_path, ids, "y.jsonl"), "--run", imported_run,
        "--alias", "y",
    )  # fmt: skip
    assert_one_line_error(res, "manifest.json")
    assert snapshot(imported_run) == before


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("generation:\n  limit: abc\n", "generation.limit"),
        ("generation:\n  temperature: [1]\n", "generation.temperature"),
        ("null: false\n", "aa_null"),
        ("attack:\n  budgets: [2]\n", "attack.budgets"),
        ("distill:\n  rank: 0\n", "distill.rank"),
        ("unknown_key: 1\n", "unknown_key: unknown key"),
        ("teacher: 5\n", "teacher"),
    ],
)
def test_bad_run_config_is_one_line(tmp_path: Path, yaml_text: str, needle: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml_text, encoding="utf-8")
    res = invoke("run", "--config", cfg, "--run", tmp_path / "r")
    assert_one_line_error(res, str(cfg), needle)
    assert not (tmp_path / "r").exists()


def test_probe_run_config_is_validated_and_unknown_keys_refused(tmp_path: Path) -> None:
    cfg = tmp_path / "probe.yaml"
    cfg.write_text("teacher: zoo:teacher\nrun: r\ngenration: {}\n", encoding="utf-8")
    assert_one_line_error(invoke("probe", "run", "--config", cfg), "genration: unknown key")
    cfg.write_text("teacher: zoo:teacher\nrun: r\ngeneration: {limit: abc}\n", encoding="utf-8")
    assert_one_line_error(invoke("probe", "run", "--config", cfg), "generation.limit")


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("results.json", '{"attack": [1]}', "'attack' must be an object"),
        ("results.json", '{"attack": {"comparisons": 5}}', "'attack.comparisons'"),
        ("results.json", '{"similarity": {"x": 3}}', "similarity.x"),
        ("manifest.json", '{"models": {"teacher": "zoo"}}', "models.teacher"),
        ("manifest.json", "[]", "expected a JSON object"),
    ],
)
def test_wrong_shaped_run_files_are_one_line_errors(
    imported_run: Path, tmp_path: Path, name: str, text: str, needle: str
) -> None:
    (imported_run / name).write_text(text, encoding="utf-8")
    before = snapshot(imported_run)
    if name == "results.json":
        res = invoke("attack", imported_run, "--budget", "4", "--seeds", "1", "--no-progress")
    else:
        src = responses_file(tmp_path, [f"q{i}" for i in range(10)], "z.jsonl")
        res = invoke("probe", "import", src, "--run", imported_run, "--alias", "z")
    assert_one_line_error(res, name, needle)
    assert snapshot(imported_run) == before
