"""An adversary and a strategy from a package outside the repository (tests/plugin), found
by entry point alone, listed, and attacked with through ``bbi attack``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.runstore import read_jsonl
from discriminators import known_adversaries, synthetic
from discriminators.acquisition import known_strategies
from discriminators.attack import revealed_ok

runner = CliRunner()
FAST = ["--budget", "8,16", "--seeds", "1", "--n-bootstrap", "20", "--n-permutations", "20"]


@pytest.fixture()
def small_run(tmp_path: Path) -> Path:
    return synthetic.make_run(tmp_path / "small", n_per_category=5, test_fraction=0.4).path


def test_not_installed_means_not_known(small_run):
    assert "example_length" not in known_adversaries()
    assert "example_prompt_length" not in known_strategies()
    res = runner.invoke(app, ["attack", str(small_run), "--adversary", "example_length", *FAST])
    assert res.exit_code == 2 and "unknown adversary 'example_length'" in res.output


def test_installed_plugin_items_are_listed(example_plugin):
    assert "example_length" in known_adversaries()
    assert "example_prompt_length" in known_strategies()
    from discriminators.base import ADVERSARIES

    assert ADVERSARIES.origin("example_length") == "entry point of bbi-example-plugin"


def test_attack_with_the_plugin_adversary_and_strategy(example_plugin, small_run):
    args = ["attack", str(small_run), "--adversary", "example_length,surface", "--no-progress"]
    args += ["--strategy", "example_prompt_length,random", *FAST]
    args += ["--param", "example_prompt_length.longest_first=false"]
    args += ["--param", "example_length.C=0.5"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    attack = json.loads((small_run / "results.json").read_text())["attack"]
    config = attack["config"]
    assert config["adversary_params"] == {"example_length": {"C": 0.5}}
    assert config["strategy_params"] == {"example_prompt_length": {"longest_first": False}}
    advs = attack["comparisons"]["student"]["adversaries"]
    curve = advs["example_length"]["curves"]["example_prompt_length"]
    assert sorted({p["q"] for p in curve}) == [8, 16]
    points = sorted((small_run / "attack" / "student").glob("example_length__*.json"))
    assert len(points) == 4  # 2 strategies x 2 budgets x 1 seed
    for path in points:
        assert revealed_ok(json.loads(path.read_text()))
    scores = list(read_jsonl(small_run / "attack" / "student" / "example_length.scores.jsonl"))
    assert scores and all("margin" in r for r in scores)


def test_the_strategy_parameter_changes_what_is_bought(example_plugin, small_run):
    from bbi.runstore import RunDir
    from discriminators.acquisition import acquisition_order
    from discriminators.comparison import load_comparison

    pool = load_comparison(RunDir(small_run), "student").pool
    lengths = [len(p) for p in pool.prompts]
    for longest_first in (True, False):
        order, oracle = acquisition_order(
            "example_prompt_length", pool, 8, 0, {"longest_first": longest_first}
        )
        bought = [lengths[i] for i in order]
        rest = [n for i, n in enumerate(lengths) if i not in set(order.tolist())]
        if longest_first:
            assert min(bought) >= max(rest)
        else:
            assert max(bought) <= min(rest)
        assert oracle.revealed == 8


@pytest.mark.parametrize(
    ("param", "needle"),
    [
        ("example_prompt_length.longest_first=3", "--param example_prompt_length.longest_first"),
        ("example_prompt_length.nope=1", "no parameter 'nope'"),
        ("example_length.C=-1", "--param example_length.C"),
        ("bandit.seed_prompts_per_category=0", "--param bandit.seed_prompts_per_category"),
        ("disagreement.n_committee=2", "not attacked (--strategy example_prompt_length)"),
    ],
)
def test_bad_plugin_params_are_one_line_before_any_work(example_plugin, small_run, param, needle):
    strategies = "bandit,example_prompt_length" if param.startswith("bandit") else None
    args = ["attack", str(small_run), "--adversary", "example_length", *FAST]
    args += ["--strategy", strategies or "example_prompt_length", "--param", param]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and needle in lines[0], res.output
    assert not (small_run / "attack").exists()


def test_plugin_items_run_in_worker_processes(example_plugin, small_run, tmp_path):
    """With --n-jobs the plug-in's items reach the worker processes, and the results are
    the serial sweep's (apart from wall-clock fields)."""
    import shutil

    from discriminators.attack import TIMING_FIELDS

    other = tmp_path / "parallel"
    shutil.copytree(small_run, other)
    args = ["--adversary", "example_length", "--strategy", "example_prompt_length,random"]
    args += ["--param", "example_prompt_length.longest_first=false", "--no-progress", *FAST]

    def strip(obj):
        if isinstance(obj, dict):
            return {k: strip(v) for k, v in obj.items() if k not in TIMING_FIELDS | {"run"}}
        if isinstance(obj, list):
            return [strip(v) for v in obj]
        return obj

    out = []
    for path, jobs in ((small_run, "1"), (other, "2")):
        res = runner.invoke(app, ["attack", str(path), "--n-jobs", jobs, *args])
        assert res.exit_code == 0, res.output
        out.append(strip(json.loads((path / "results.json").read_text())["attack"]))
    assert out[0] == out[1]
