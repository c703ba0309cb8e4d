"""Helpers the hostile-input tests share: one-line error checks and small run inputs."""

from __future__ import annotations

import json
from pathlib import Path


def assert_one_line_error(result, *needles: str) -> str:
    """A CLI result that is exactly one ``error: ...`` line, exit 2, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def write_jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def suite_records(n: int = 10) -> list[dict]:
    return [
        {
            "id": f"q{i}",
            "category": "factual" if i % 2 else "reasoning",
            "prompt": f"What is {i} plus {i}?",
            "split": "test" if i % 5 == 0 else "train",
        }
        for i in range(n)
    ]
