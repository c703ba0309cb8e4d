"""The distillation-method registry and the commands generated from it: every method's
help shows its own settings' defaults, ``--config`` works everywhere, and a method from
an installed package outside bbi is one module plus its entry point."""

from __future__ import annotations

import shutil

import pytest
import yaml
from conftest import teacher_run
from typer.testing import CliRunner

from bbi.registry import registries
from distill.methods import METHODS, DistillMethod

runner = CliRunner()


def _cli():
    from bbi.app.cli import app
    from bbi.app.cli.distill import register_methods

    register_methods()  # the registry as it is now (a plug-in may have been added)
    return app


def _help(*args: str) -> str:
    res = runner.invoke(_cli(), [*args, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    assert res.exit_code == 0, res.output
    return " ".join(res.output.split())


def test_registry_is_distills_and_every_method_conforms():
    assert registries()["bbi.distill_methods"] is METHODS
    assert METHODS.names()[:5] == ["lora", "kd", "wda", "bird", "circuit"]
    for name, method in METHODS.items():
        assert isinstance(method, DistillMethod) and method.name == name
        assert method.help.strip() and "\n" not in method.help.strip()
        method.settings()  # the defaults are valid settings


@pytest.mark.parametrize(
    ("method", "shown"),
    [
        ("wda", ["--lr", "(default 0.0005)", "--masks", "--phases"]),
        ("bird", ["--epochs", "(default 8)", "--teacher-layer", "--config"]),
        ("circuit", ["--epochs", "(default 3)", "--heads-fraction"]),
        ("lora", ["--lr", "(default 0.0002)", "--rank", "--guide", "--config"]),
        ("kd", ["--loss", "(default forward_kl)", "--teacher-spec", "--config"]),
    ],
)
def test_help_shows_the_methods_own_defaults(method, shown):
    text = _help("distill", method)
    for piece in shown:
        assert piece in text, piece
    if method == "wda":  # no loop field of another method, and no plain --epochs
        assert "--rank" not in text and "--guide" not in text and "--epochs " not in text


def test_every_field_is_one_option():
    for name, method in METHODS.items():
        text = _help("distill", name)
        for field in method.settings.model_fields:
            assert "--" + field.replace("_", "-") in text, (name, field)


def test_config_file_and_flags_override_it(tmp_path):
    from bbi.app.cli.settings_options import load_settings
    from bbi.config import WDASettings

    cfg = tmp_path / "wda.yaml"
    cfg.write_text(yaml.safe_dump({"lr": 0.01, "masks": 6, "phases": ["align", "sft"]}))
    s = load_settings(WDASettings, cfg, {"masks": 8, "top_k": None, "phases": None})
    assert (s.lr, s.masks, s.phases) == (0.01, 8, ["align", "sft"])
    s = load_settings(WDASettings, None, {"phases": "free,sft"})
    assert s.phases == ["free", "sft"]


def test_bad_values_are_one_line_naming_the_flag(tmp_path):
    app = _cli()
    bad = tmp_path / "bad.yaml"
    bad.write_text("lr: fast\n")
    bad_attack = tmp_path / "attack.yaml"
    bad_attack.write_text("budgets: [40, 2]\n")
    for args, needle in [
        (["distill", "wda", str(tmp_path), "--phases", "sft,align"], "--phases"),
        (["distill", "bird", "zoo:student", "--seeds", "1,x"], "--seeds"),
        (["distill", "kd", str(tmp_path), "--loss", "l2"], "--loss"),
        (["distill", "lora", str(tmp_path), "--config", str(bad)], "lr"),
        (["attack", str(tmp_path), "--budget", "2"], "--budget"),
        (["attack", str(tmp_path), "--config", str(bad_attack)], "budgets"),
        (["attack", str(tmp_path), "--budget", "8,,16"], "--budget"),
    ]:
        res = runner.invoke(app, args)
        assert res.exit_code == 2, (args, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and needle in lines[0], lines


@pytest.fixture(scope="module")
def plugin_run_template(tmp_path_factory, micro_teacher, synthetic_corpus):
    run, _, _ = teacher_run(
        tmp_path_factory.mktemp("plugin") / "run", micro_teacher, synthetic_corpus(5, 8), 16, "p"
    )
    cfg = run.config()
    cfg["models"]["student"] = {"spec": "zoo:student", "role": "student"}
    run.write_config(cfg)
    return run.path


@pytest.mark.usefixtures("one_thread")
def test_plugin_method_is_a_command_and_trains(example_plugin, plugin_run_template, tmp_path):
    from bbi.runstore import RunDir

    assert "smooth_sft" in METHODS and "bbi-example-plugin" in METHODS.origin("smooth_sft")
    text = _help("distill", "smooth_sft")
    assert "--label-smoothing" in text and "(default 0.1)" in text
    assert "--lr" in text and "(default 0.001)" in text and "--rank" in text
    run = RunDir(shutil.copytree(plugin_run_template, tmp_path / "run"))
    res = runner.invoke(
        _cli(),
        ["distill", "smooth_sft", str(run.path), "--epochs", "1", "--batch-size", "8",
         "--max-length", "64", "--eval-fraction", "0.2", "--label-smoothing", "0.2",
         "--no-progress"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    rec = run.read_results()["distill"]["student_smooth_sft"]
    assert rec["method"] == "smooth_sft" and rec["objective"]["label_smoothing"] == 0.2
    assert rec["hyperparameters"]["label_smoothing"] == 0.2 and rec["steps"] >= 1
    assert rec["spec"] in res.output.splitlines()  # the spec on a line of its own
    assert run.models()["student_smooth_sft"]["role"] == "student"


def test_plugin_is_gone_after_the_fixture():
    assert "smooth_sft" not in METHODS


def test_loop_fields_declared_once_and_recorded_alone():
    from bbi.config import (
        BirdSettings,
        CircuitSettings,
        KDSettings,
        LoopSettings,
        LoraSettings,
        WDASettings,
    )

    loop = set(LoopSettings.model_fields)
    for cls in (LoraSettings, KDSettings, WDASettings, BirdSettings, CircuitSettings):
        assert issubclass(cls, LoopSettings)
        # A loop field is re-declared only where that method's default differs.
        for klass in cls.__mro__[: cls.__mro__.index(LoopSettings)]:
            parent = klass.__mro__[1]
            for name in loop & set(vars(klass).get("__annotations__", {})):
                if name in klass.model_fields and name in getattr(parent, "model_fields", {}):
                    assert klass.model_fields[name].default != parent.model_fields[name].default, (
                        klass.__name__,
                        name,
                    )
    # no LoRA or guide fields (token milestones are dumped only when set)
    assert set(WDASettings().loop("align").model_dump()) == loop - {"curve_tokens"}
    assert set(BirdSettings().loop(1).model_dump()) == loop - {"curve_tokens"}
    assert WDASettings().lr == 5e-4 and BirdSettings().epochs == 8 and LoraSettings().lr == 2e-4


def test_every_command_takes_replace_with_help(example_plugin):
    """--replace is an option of every generated command: built-ins and plug-ins (whose
    options derive from distill.methods.Options) declare it; the application layer adds
    it for a method whose options model does not."""
    for name in METHODS.names():
        text = _help("distill", name)
        assert "--replace" in text and "OUT.replaced-<time>" in text, name


def test_replace_for_a_method_whose_options_do_not_declare_it(tmp_path):
    """A method with a plain options model: an existing directory of the user's files is
    refused, and moved aside (never deleted) with --replace, before the method runs."""
    from pathlib import Path

    from pydantic import BaseModel

    from bbi.config import LoopSettings
    from distill.methods import MethodOutput

    class PlainOptions(BaseModel):
        out: Path

    ran: list[Path] = []

    def run(settings, options):
        ran.append(options.out)
        return MethodOutput(stdout="done")

    METHODS.register(
        "plain_out",
        DistillMethod("plain_out", "A method with plain options.", LoopSettings, PlainOptions, run),
    )
    try:
        assert "--replace" in _help("distill", "plain_out")
        out = tmp_path / "mine"
        out.mkdir()
        (out / "README.md").write_text("my notes\n")
        res = runner.invoke(_cli(), ["distill", "plain_out", "--out", str(out)])
        assert res.exit_code == 2 and "--replace" in res.output and not ran, res.output
        assert (out / "README.md").read_text() == "my notes\n"
        res = runner.invoke(_cli(), ["distill", "plain_out", "--out", str(out), "--replace"])
        assert res.exit_code == 0 and ran == [out], res.output
        kept = [p for p in tmp_path.iterdir() if p.name.startswith("mine.replaced-")]
        assert len(kept) == 1 and (kept[0] / "README.md").read_text() == "my notes\n"
    finally:
        METHODS.unregister("plain_out")
        _cli()
