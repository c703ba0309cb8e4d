"""A backend from a package outside the repository: one module plus one entry point."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.specs import BACKENDS, parse_spec
from tests.test_probe_run import tiny_suite


def test_echo_backend_probes_end_to_end(example_plugin, tmp_path):
    assert BACKENDS.origin("echo") == "entry point of bbi-example-plugin"
    assert str(parse_spec("echo:x")) == "echo:x"
    suite = tmp_path / "suite.jsonl"
    records = tiny_suite(4)
    suite.write_text("".join(json.dumps(r) + "\n" for r in records))
    run = tmp_path / "run"
    res = CliRunner().invoke(
        app,
        ["probe", "run", "--teacher", "echo:x", "--student", "echo:y", "--run", str(run),
         "--suite", str(suite), "--max-new-tokens", "6", "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    manifest = json.loads((run / "manifest.json").read_text())
    assert {m["spec"] for m in manifest["models"].values()} == {"echo:x", "echo:y"}
    texts = {}
    for alias in manifest["models"]:
        lines = [
            json.loads(x) for x in (run / "responses" / f"{alias}.jsonl").read_text().splitlines()
        ]
        texts[alias] = [line["text"] for line in lines]
        assert len(lines) == len(records) and all(
            t.split()[0] in ("x:", "y:") for t in texts[alias]
        )
    # Deterministic: a rerun reuses every cached line.
    again = CliRunner().invoke(
        app, ["probe", "run", "--teacher", "echo:x", "--student", "echo:y", "--run", str(run),
              "--suite", str(suite), "--max-new-tokens", "6", "--no-progress"],
    )  # fmt: skip
    assert again.exit_code == 0, again.output
    timings = json.loads((run / "manifest.json").read_text())["timings"]
    assert all(timings[f"generate:{a}"]["generated"] == 0 for a in manifest["models"])


def test_echo_args_are_its_own(example_plugin):
    from bbi.errors import BbiError
    from bbi.model_args import check_model_args

    assert check_model_args("echo:x", {"upper": True}, "x") == {"upper": True}
    with pytest.raises(BbiError, match="echo: models take no 'device_map'"):
        check_model_args("echo:x", {"device_map": "auto"}, "teacher_args")


def test_without_the_plugin_echo_is_unknown():
    from bbi.errors import BbiError

    with pytest.raises(BbiError, match="unknown model kind 'echo'"):
        parse_spec("echo:x")
