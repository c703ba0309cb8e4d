"""Model spec parsing: every form, canonical round trips, and errors."""

from __future__ import annotations

import pytest

from bbi.errors import BbiError
from bbi.specs import ModelSpec, parse_spec


@pytest.mark.parametrize(
    "text, kind, name, rev, adapter, canonical",
    [
        (
            "Qwen/Qwen2.5-0.5B-Instruct",
            "hf",
            "Qwen/Qwen2.5-0.5B-Instruct",
            None,
            None,
            "hf:Qwen/Qwen2.5-0.5B-Instruct",
        ),
        ("gpt2", "hf", "gpt2", None, None, "hf:gpt2"),
        ("hf:./models/tiny", "hf", "./models/tiny", None, None, "hf:./models/tiny"),
        ("hf:/abs/path/model", "hf", "/abs/path/model", None, None, "hf:/abs/path/model"),
        ("./rel/model", "hf", "./rel/model", None, None, "hf:./rel/model"),
        ("hf:org/name@v1.0", "hf", "org/name", "v1.0", None, "hf:org/name@v1.0"),
        ("org/name@abc123", "hf", "org/name", "abc123", None, "hf:org/name@abc123"),
        ("hf:./dir@2/model", "hf", "./dir@2/model", None, None, "hf:./dir@2/model"),
        (
            "hf:org/base+lora:./adapters/a",
            "hf",
            "org/base",
            None,
            "./adapters/a",
            "hf:org/base+lora:./adapters/a",
        ),
        (
            "hf:org/base@main+lora:org/adapter",
            "hf",
            "org/base",
            "main",
            "org/adapter",
            "hf:org/base@main+lora:org/adapter",
        ),
        ("zoo:teacher", "zoo", "teacher", None, None, "zoo:teacher"),
        ("zoo:student", "zoo", "student", None, None, "zoo:student"),
        (
            "zoo:student+lora:runs/demo/adapters/student_lora",
            "zoo",
            "student",
            None,
            "runs/demo/adapters/student_lora",
            "zoo:student+lora:runs/demo/adapters/student_lora",
        ),
        (
            "vllm:meta-llama/Llama-3.2-1B",
            "vllm",
            "meta-llama/Llama-3.2-1B",
            None,
            None,
            "vllm:meta-llama/Llama-3.2-1B",
        ),
        ("vllm:org/m@rev", "vllm", "org/m", "rev", None, "vllm:org/m@rev"),
        ("  HF:org/name  ", "hf", "org/name", None, None, "hf:org/name"),
    ],
)
def test_parse_forms(text, kind, name, rev, adapter, canonical):
    spec = parse_spec(text)
    assert (spec.kind, spec.name_or_path, spec.revision, spec.adapter) == (kind, name, rev, adapter)
    assert str(spec) == canonical
    assert parse_spec(str(spec)) == spec  # canonical form is a fixed point


def test_openai_spec():
    spec = parse_spec("openai:http://127.0.0.1:8000/v1#zoo:teacher")
    assert spec.kind == "openai"
    assert spec.base_url == "http://127.0.0.1:8000/v1"
    assert spec.model == "zoo:teacher"
    assert str(spec) == "openai:http://127.0.0.1:8000/v1#zoo:teacher"
    assert parse_spec(str(spec)) == spec
    spec2 = parse_spec("openai:https://api.example.com/v1/#gpt-4o-mini")
    assert spec2.base_url == "https://api.example.com/v1" and spec2.model == "gpt-4o-mini"


def test_spec_is_frozen_and_with_adapter():
    spec = parse_spec("zoo:student")
    with pytest.raises(AttributeError):
        spec.kind = "hf"  # type: ignore[misc]
    assert str(spec.with_adapter("./a")) == "zoo:student+lora:./a"
    assert spec.with_adapter("./a").with_adapter(None) == spec
    assert isinstance(spec, ModelSpec)


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty"),
        ("   ", "empty"),
        ("zoo:professor", "unknown zoo model"),
        ("zoo:", "nothing after"),
        ("ollama:llama3", "unknown model kind"),
        ("openai:http://localhost:8000/v1", "#MODEL"),
        ("openai:http://localhost:8000/v1#", "#MODEL"),
        ("openai:localhost:8000#m", "http"),
        ("hf:org/base+lora:", "empty adapter"),
        ("hf:+lora:./a", "empty base"),
        ("hf:a+lora:b+lora:c", "only one"),
        ("vllm:org/m+lora:./a", "LoRA adapters"),
        ("hf:org/name@", "empty name or revision"),
    ],
)
def test_parse_errors(text, needle):
    with pytest.raises(BbiError, match=needle):
        parse_spec(text)


def test_callers_ask_for_capabilities_not_kinds():
    from bbi.specs import backend_kind, can

    assert can("zoo:teacher", "weights") and can("hf:./m", "score")
    assert not can("openai:http://h/v1#m", "score") and not can("vllm:org/m", "weights")
    assert not can("imported:file.jsonl", "generate")  # an imported alias can do nothing
    assert backend_kind("Qwen/Qwen2.5-0.5B-Instruct").name == "hf"
    with pytest.raises(ValueError, match="unknown backend capability"):
        can("hf:./m", "telepathy")


def test_likelihood_refuses_a_reference_that_cannot_score_up_front():
    from discriminators.likelihood import LikelihoodAdversary

    for ref in ("openai:http://h/v1#m", "vllm:org/m"):
        with pytest.raises(BbiError, match="cannot score"):
            LikelihoodAdversary(reference=ref).preflight()


def test_white_box_kd_needs_a_backend_with_weights(tmp_path):
    from bbi.runstore import RunDir
    from distill.kd import teacher_model_spec

    run = RunDir(tmp_path / "r", create=True)
    assert teacher_model_spec(run, "teacher", "zoo:teacher") == "zoo:teacher"
    with pytest.raises(BbiError, match="no local weights"):
        teacher_model_spec(run, "teacher", "openai:http://h/v1#m")
