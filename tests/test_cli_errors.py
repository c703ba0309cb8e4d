"""User errors anywhere in the CLI: one `error:` line, exit status 2, never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from bbi import __version__
from bbi.app.cli import app
from bbi.errors import BbiError
from discriminators import synthetic

runner = CliRunner()
_SCRIPT = Path(sys.executable).with_name("bbi")
BBI = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "bbi.app.cli"]


def assert_one_line_error(output: str, exit_code: int, *needles: str) -> None:
    assert exit_code == 2, output
    assert "Traceback" not in output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), output
    for needle in needles:
        assert needle in lines[0], output


@pytest.fixture()
def small_run(tmp_path: Path) -> Path:
    return synthetic.make_run(tmp_path / "small", n_per_category=5, test_fraction=0.4).path


# ---- usage errors and --version ---------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "needles"),
    [
        (["attack", "RUN", "--seeds", "abc"], ["--seeds", "bbi attack --help"]),
        (["attack"], ["Missing argument"]),
        (["attack", "RUN", "--no-such-option"], ["--no-such-option"]),
        (["no-such-command"], ["No such command"]),
        (["probe", "no-such-command"], ["No such command"]),
        (["--no-such-option"], ["--no-such-option"]),
        (["report", "RUN", "--examples", "many"], ["--examples"]),
        (["serve", "zoo:teacher", "--port", "http"], ["--port"]),
    ],
)
def test_usage_errors_are_one_line(small_run: Path, args: list[str], needles) -> None:
    args = [str(small_run) if a == "RUN" else a for a in args]
    res = runner.invoke(app, args)
    assert_one_line_error(res.output, res.exit_code, *needles)
    assert "Usage:" not in res.output and "╭" not in res.output


def test_usage_error_through_the_console_script(small_run: Path) -> None:
    proc = subprocess.run(
        [*BBI, "attack", str(small_run), "--seeds", "abc"], capture_output=True, text=True
    )
    assert proc.stdout == ""
    assert_one_line_error(proc.stderr, proc.returncode, "--seeds")


def test_help_and_version_still_work() -> None:
    res = runner.invoke(app, ["--help"])
    assert res.exit_code == 0 and "Usage" in res.output and "attack" in res.output
    res = runner.invoke(app, ["attack", "--help"])
    assert res.exit_code == 0 and "--budget" in res.output
    res = runner.invoke(app, [])  # no arguments: the help, not an error line
    assert "Usage" in res.output and "error:" not in res.output
    res = runner.invoke(app, ["probe"])
    assert "Usage" in res.output and "build" in res.output and "error:" not in res.output
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0 and res.output.strip() == __version__
    proc = subprocess.run([*BBI, "--version"], capture_output=True, text=True)
    assert proc.returncode == 0 and proc.stdout.strip() == __version__


# ---- output paths -------------------------------------------------------------------------
def test_probe_build_output_paths(tmp_path: Path) -> None:
    res = runner.invoke(app, ["probe", "build", "-o", str(tmp_path)])
    assert_one_line_error(res.output, res.exit_code, "is a directory")
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    res = runner.invoke(app, ["probe", "build", "-o", str(blocker / "suite.jsonl")])
    assert_one_line_error(res.output, res.exit_code, "is a file, not a directory")
    assert blocker.read_text() == "x"


def test_report_output_paths(small_run: Path, tmp_path: Path) -> None:
    res = runner.invoke(
        app,
        ["attack", str(small_run), "--adversary", "surface", "--seeds", "1"]
        + ["--budget", "8", "--n-bootstrap", "20", "--n-permutations", "20"],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["report", str(small_run), "-o", str(tmp_path)])
    assert_one_line_error(res.output, res.exit_code, "is a directory")
    res = runner.invoke(app, ["report", str(small_run), "-o", str(small_run / "run.yaml" / "r")])
    assert_one_line_error(res.output, res.exit_code, "cannot write report")


def test_distill_out_that_is_a_file(small_run: Path) -> None:
    res = runner.invoke(
        app, ["distill", "lora", str(small_run), "--out", str(small_run / "run.yaml")]
    )
    assert_one_line_error(res.output, res.exit_code, "--out", "is a file")


# ---- model specs, devices, weights ----------------------------------------------------------
@pytest.mark.parametrize(
    ("spec", "needle"),
    [
        ("openai:notaurl#m", "must start with http:// or https://"),
        ("openai:http://#m", "has no host"),
        ("openai:http://host:99999/v1#m", "Port out of range"),
        ("openai:http://host:abc/v1#m", "invalid base URL"),
        ("openai:http://[::1/v1#m", "invalid base URL"),
        ("openai:http://host:0/v1#m", "out of range"),
        ("openai:http://host:8000/v1", "openai:BASE_URL#MODEL"),
        ("openai:http://host:8000/v1#", "openai:BASE_URL#MODEL"),
        ("openai:http://user:key@host/v1#m", "OPENAI_API_KEY"),
        ("openai:http://host/v1?x=1#m", "query"),
        ("imported:teacher.jsonl", "no weights"),
    ],
)
def test_malformed_specs_are_one_line(spec: str, needle: str) -> None:
    res = runner.invoke(app, ["serve", spec])
    assert_one_line_error(res.output, res.exit_code, needle)


def test_unavailable_device_is_refused_before_loading(monkeypatch, micro_zoo) -> None:
    import torch

    from bbi.backends import load_backend

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for device in ("cuda", "cuda:1"):
        with pytest.raises(
            BbiError, match=rf"device '{device}' requested but CUDA is not available"
        ):
            load_backend("zoo:teacher", device=device)
    with pytest.raises(BbiError, match="unknown device 'gpu'"):
        load_backend("zoo:teacher", device="gpu")
    with pytest.raises(BbiError, match="unknown dtype 'fp8'"):
        load_backend("zoo:teacher", device="cpu", dtype="fp8")
    res = runner.invoke(app, ["serve", "zoo:teacher", "--device", "cuda"])
    assert_one_line_error(
        res.output, res.exit_code, "device 'cuda' requested but CUDA is not available"
    )


def test_missing_cuda_index_is_refused(monkeypatch) -> None:
    import torch

    from bbi.backends.hf import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(BbiError, match="only 1 CUDA device"):
        resolve_device("cuda:3")


class _NotATensor:
    """Pickled into a checkpoint: torch's safe loader must refuse it."""

    def __reduce__(self):
        return (print, ("this must never run",))


def test_pickled_weights_with_code_are_refused_in_one_line(tmp_path: Path) -> None:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from bbi.backends import load_backend

    model_dir = tmp_path / "pickled"
    cfg = GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=64, n_positions=32)
    cfg.save_pretrained(model_dir)
    state = dict(GPT2LMHeadModel(cfg).state_dict())
    state["extra"] = _NotATensor()
    torch.save(state, model_dir / "pytorch_model.bin")
    with pytest.raises(BbiError, match="refused to load pickled weights") as info:
        load_backend(f"hf:{model_dir}", device="cpu")
    assert "safetensors" in str(info.value) and "\n" not in str(info.value)
    res = runner.invoke(app, ["serve", f"hf:{model_dir}", "--device", "cpu"])
    assert_one_line_error(res.output, res.exit_code, "refused to load pickled weights")


def test_distill_of_an_imported_student_says_what_to_pass(small_run: Path) -> None:
    cfg_path = small_run / "run.yaml"
    cfg = yaml.safe_load(cfg_path.read_text())
    cfg["models"]["student"]["spec"] = "imported:student.jsonl"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    res = runner.invoke(app, ["distill", "lora", str(small_run)])
    assert_one_line_error(res.output, res.exit_code, "imported", "no weights", "--student")
    assert "unknown model kind" not in res.output
