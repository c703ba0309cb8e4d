"""Per-model arguments: one syntax, validated per backend kind, reaching the HF loader."""

from __future__ import annotations

import pytest

from bbi.errors import BbiError
from bbi.model_args import check_model_args, output_identity, parse_model_args


def test_parse_types_values_and_refuses_malformed_lists():
    assert parse_model_args("device_map=auto,max_model_len=4096,enforce_eager=true,u=0.9", "-a") == {
        "device_map": "auto", "max_model_len": 4096, "enforce_eager": True, "u": 0.9}  # fmt: skip
    assert parse_model_args(None, "-a") == {}
    for bad in ("device_map", "a=1,,b=2", "=3", "a=", "a=1,a=2"):
        with pytest.raises(BbiError, match="--teacher-args"):
            parse_model_args(bad, "--teacher-args")


@pytest.mark.parametrize(
    ("spec", "args", "needle"),
    [
        ("hf:./m", {"tensor_parallel_size": 2}, "hf: models take no 'tensor_parallel_size'"),
        ("vllm:m", {"device_map": "auto"}, "they take: allow_download"),
        ("openai:http://h/v1#m", {"concurrency": "many"}, "concurrency must be a int"),
        ("hf:./m", {"quantization": "3bit"}, "quantization must be one of 4bit, 8bit"),
        ("vllm:m", {"max_model_len": True}, "max_model_len must be a int"),
    ],
)
def test_check_refuses_what_a_kind_does_not_take(spec, args, needle):
    with pytest.raises(BbiError, match=needle.replace("(", r"\(")):
        check_model_args(spec, args, "teacher_args")


def test_check_accepts_per_kind_args_and_output_identity():
    args = check_model_args("vllm:m", {"tensor_parallel_size": 2, "gpu_memory_utilization": 1,
                                       "dtype": "bfloat16"}, "x")  # fmt: skip
    assert args["gpu_memory_utilization"] == 1.0 and isinstance(
        args["gpu_memory_utilization"], float
    )
    assert output_identity(args) == {"dtype": "bfloat16"}
    assert check_model_args("zoo:teacher", None, "x") == {}


def test_hf_loader_takes_device_map_and_attention(task_models):
    from bbi.backends import load_backend

    backend = load_backend(task_models["teacher"], device="cpu", dtype="float32",
                           device_map="cpu", attn_implementation="eager")  # fmt: skip
    assert backend.model.config._attn_implementation == "eager"
    assert str(backend.device) == "cpu"
    with pytest.raises(BbiError, match="bitsandbytes"):
        load_backend(task_models["teacher"], device="cpu", quantization="4bit")


def test_judge_and_likelihood_take_model_args():
    from discriminators.judge import JudgeAdversary
    from discriminators.likelihood import LikelihoodAdversary

    judge = JudgeAdversary(judge="openai:http://h/v1#m", model_args="concurrency=2,timeout=30",
                           context={"backend_options": {"device": "cpu"}})  # fmt: skip
    judge.preflight()
    assert judge._backend_options("openai:http://h/v1#m") == {
        "device": "cpu", "concurrency": 2, "timeout": 30.0}  # fmt: skip
    with pytest.raises(BbiError, match="judge.model_args: openai: models take no 'device_map'"):
        JudgeAdversary(judge="openai:http://h/v1#m", model_args="device_map=auto").preflight()
    lik = LikelihoodAdversary(reference="hf:./ref", model_args="device_map=auto,dtype=bfloat16")
    assert lik._backend_options("hf:./ref") == {"device_map": "auto", "dtype": "bfloat16"}
    with pytest.raises(BbiError, match="likelihood.model_args: expected key=value"):
        LikelihoodAdversary(reference="hf:./ref", model_args="gpu").preflight()


def test_probe_passes_model_args_persists_them_and_keys_the_cache(micro_zoo, tmp_path, monkeypatch):
    import yaml

    import bbi.backends
    from bbi.probe_run import ModelEntry, ProbeSettings, models_of_run, run_probe
    from bbi.runstore import RunDir
    from tests.test_probe_run import tiny_suite

    seen = []
    real = bbi.backends.load_backend

    def spy(spec, **kw):
        seen.append((spec, kw))
        return real(spec, **kw)

    monkeypatch.setattr(bbi.backends, "load_backend", spy)

    settings = ProbeSettings(max_new_tokens=4, batch_size=4, seed=3, device="cpu")
    teacher = ModelEntry("teacher", "zoo:teacher", "teacher", {"attn_implementation": "eager"})
    student = ModelEntry("student", "zoo:student", "student", {"dtype": "float32"})
    run_dir = tmp_path / "r"
    run_probe(run_dir, [teacher, student], tiny_suite(2), settings, progress=False,
              similarity=False)  # fmt: skip
    by_spec = {str(s): kw for s, kw in seen}  # the parsed spec reaches the loader
    assert by_spec["zoo:teacher"]["attn_implementation"] == "eager"
    assert by_spec["zoo:student"]["dtype"] == "float32"  # the model's own dtype wins
    cfg = yaml.safe_load((run_dir / "run.yaml").read_text())
    assert cfg["models"]["teacher"]["args"] == {"attn_implementation": "eager"}
    again, _, _, _ = models_of_run(run_dir)
    assert {m.alias: m.args for m in again}["teacher"] == {"attn_implementation": "eager"}
    # an output-changing argument is part of the cache identity: new responses are made
    n_before = len(RunDir(run_dir).responses("student"))
    seen.clear()
    student2 = ModelEntry("student", "zoo:student", "student", {"dtype": "bfloat16"})
    run_probe(run_dir, [teacher, student2], tiny_suite(2), settings, progress=False,
              similarity=False)  # fmt: skip
    assert [str(s) for s, _ in seen] == ["zoo:student"]  # the teacher's responses were reused
    assert len(RunDir(run_dir).responses("student")) == n_before


def test_probe_cli_model_args_errors_are_one_line(tmp_path):
    from typer.testing import CliRunner

    from bbi.app.cli import app

    runner = CliRunner()
    for args, needle in (
        (["--teacher-args", "tensor_parallel_size=2"], "--teacher-args: zoo: models take no"),
        (["--student-args", "device_map"], "--student-args: expected key=value"),
    ):
        res = runner.invoke(app, ["probe", "run", "--teacher", "zoo:teacher", "--student",
                                  "zoo:student", "--run", str(tmp_path / "r"), *args])  # fmt: skip
        assert res.exit_code == 2 and needle in res.output, res.output
        assert "Traceback" not in res.output and not (tmp_path / "r").exists()
    cfg = tmp_path / "p.yaml"
    cfg.write_text("teacher: zoo:teacher\nteacher_args: {quantization: 2bit}\n")
    res = runner.invoke(app, ["probe", "run", "--config", str(cfg), "--run", str(tmp_path / "r")])
    assert res.exit_code == 2 and "quantization must be one of 4bit, 8bit" in res.output
