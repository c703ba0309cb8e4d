"""`bbi probe build|show|validate` through the real CLI app."""

from __future__ import annotations

import hashlib
import json

import pytest
from typer.testing import CliRunner

from bbi.app.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    out = tmp_path_factory.mktemp("suite") / "suite.jsonl"
    result = runner.invoke(app, ["probe", "build", "-o", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_build_writes_the_suite_and_prints_table_and_hash(built):
    path, output = built
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 5000
    assert json.loads(lines[0])["id"] == "factual-00000"
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert f"sha256:{digest}" in output
    for cat in ("factual", "robustness", "extraction"):
        row = next(line for line in output.splitlines() if f" {cat} " in line)
        assert [t for t in row.split() if t.isdigit()] == ["400", "100", "500"], row
    total = next(line for line in output.splitlines() if " all " in line)
    assert [t for t in total.split() if t.isdigit()] == ["4000", "1000", "5000"]


def test_build_is_reproducible_and_seeded(built, tmp_path):
    path, _ = built
    again = tmp_path / "again.jsonl"
    assert runner.invoke(app, ["probe", "build", "-o", str(again)]).exit_code == 0
    assert again.read_bytes() == path.read_bytes()
    other = tmp_path / "other.jsonl"
    assert runner.invoke(app, ["probe", "build", "--seed", "3", "-o", str(other)]).exit_code == 0
    assert other.read_bytes() != path.read_bytes()


def test_show_prints_counts_and_examples(built):
    path, _ = built
    result = runner.invoke(app, ["probe", "show", str(path), "--examples", "2"])
    assert result.exit_code == 0, result.output
    assert "conversational: 2 examples" in result.output
    assert result.output.count("examples") == 10
    assert "sha256:" in result.output


def test_validate_accepts_the_built_suite(built):
    path, _ = built
    result = runner.invoke(app, ["probe", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "ok: 5000 prompts" in result.output


def test_validate_user_csv_without_split_assigns_one(tmp_path):
    path = tmp_path / "mine.csv"
    rows = ["prompt,category"] + [f"question number {i},{'x' if i % 2 else 'y'}" for i in range(20)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    result = runner.invoke(app, ["probe", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert "note: no 'split' field" in result.output
    assert "ok: 20 prompts" in result.output


@pytest.mark.parametrize(
    "content, expected",
    [
        ('{"prompt": "a", "split": "train"}\n{"prompt": "b",\n', ["bad.jsonl:2:", "invalid JSON"]),
        ('{"id": "1", "split": "train"}\n', ["bad.jsonl:1:", "'prompt'"]),
        ('{"prompt": "a", "split": "validation"}\n', ["bad.jsonl:1:", "'split'", "validation"]),
        (
            '{"id": "q", "prompt": "a", "split": "train"}\n{"id": "q", "prompt": "b", '
            '"split": "test"}\n',
            ["bad.jsonl:2:", "'id'", "duplicate"],
        ),
        ("", ["bad.jsonl", "empty file"]),
    ],
    ids=["bad-json", "missing-prompt", "unknown-split", "duplicate-id", "empty-file"],
)
def test_validate_errors_exit_2_with_one_line(tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    result = runner.invoke(app, ["probe", "validate", str(path)])
    assert result.exit_code == 2
    err = result.stderr.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("error: ")
    for part in expected:
        assert part in err, err
    assert "Traceback" not in result.output


def test_unknown_file_type_and_missing_file_exit_2(tmp_path):
    path = tmp_path / "suite.xlsx"
    path.write_text("x", encoding="utf-8")
    result = runner.invoke(app, ["probe", "show", str(path)])
    assert result.exit_code == 2 and "unknown file type" in result.stderr
    result = runner.invoke(app, ["probe", "validate", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2 and "no such file" in result.stderr
