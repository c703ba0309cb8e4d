"""The zoo: real micro builds, plain-transformers loading, caching, locking, the CLI."""

from __future__ import annotations

import hashlib
import json
import threading

import pytest
from zoo_helpers import nano_config

from bbi import zoo
from bbi.backends import GenerationConfig, load_backend
from bbi.errors import BbiError


@pytest.fixture
def use_corpus():
    """Replace the zoo corpus provider (``None``: none registered) for one test."""

    def use(fn):
        if fn is None:
            for name in zoo.CORPUS.names():
                zoo.CORPUS.unregister(name)
        else:
            zoo.CORPUS.register("probes", fn, replace=True)

    yield use
    zoo.CORPUS.unregister("probes")
    zoo.CORPUS.refresh()  # back to the installed entry point


def test_micro_zoo_is_plain_transformers(micro_zoo):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = json.loads((micro_zoo / "zoo.json").read_text())
    models = {}
    for name, arch in (("teacher", "llama"), ("student", "qwen2")):
        model = AutoModelForCausalLM.from_pretrained(micro_zoo / name)
        tok = AutoTokenizer.from_pretrained(micro_zoo / name)
        assert model.config.model_type == arch
        assert not getattr(tok, "chat_template", None)  # the plain format is used
        assert tok.eos_token and tok.pad_token and tok.eos_token_id != tok.pad_token_id
        assert model.generation_config.eos_token_id == tok.eos_token_id
        assert sum(p.numel() for p in model.parameters()) == info["models"][name]["params"]
        models[name] = info["models"][name]
        # Fingerprint = hash of config + weights file hash, as recorded.
        weights = hashlib.sha256((micro_zoo / name / "model.safetensors").read_bytes()).hexdigest()
        assert weights == models[name]["weights_sha256"]
        assert zoo.fingerprint(name, "micro") == models[name]["fingerprint"]
    assert models["student"]["params"] < models["teacher"]["params"]
    assert models["student"]["steps"] < models["teacher"]["steps"]
    assert models["teacher"]["eval_loss"] < models["student"]["eval_loss"]
    assert info["n_eval"] >= 1 and info["config"]["name"] == "micro"


def test_zoo_teacher_learned_to_stop(micro_teacher, synthetic_corpus):
    items = synthetic_corpus(1, 3)
    gens = micro_teacher.generate(
        [it["prompt"] for it in items],
        GenerationConfig(max_new_tokens=40, temperature=0.0),
        [0] * len(items),
    )
    assert sum(g.finish_reason == "stop" for g in gens) >= len(gens) // 2
    assert all(g.text.strip() for g in gens)


def test_config_selection(monkeypatch, tmp_path):
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("BBI_ZOO_CONFIG", "micro")
    assert zoo.get_config().name == "micro"
    assert zoo.get_config("default").name == "default"
    assert zoo.zoo_dir() == tmp_path / "zoo" / f"{zoo.ZOO_VERSION}-micro"
    monkeypatch.setenv("BBI_ZOO_CONFIG", "huge")
    with pytest.raises(BbiError, match="unknown zoo config"):
        zoo.get_config()
    monkeypatch.delenv("BBI_ZOO_CONFIG")
    assert zoo.get_config().name == "default"
    with pytest.raises(BbiError, match="not built"):
        zoo.model_path("teacher", "micro", build=False)


def test_build_once_under_lock_atomic_and_deterministic(
    monkeypatch, tmp_path, synthetic_corpus, use_corpus
):
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path))
    calls = []

    def provider(seed: int, per_category: int) -> list[dict]:
        calls.append((seed, per_category))
        return synthetic_corpus(seed, per_category)

    use_corpus(provider)
    cfg = nano_config()
    paths: list = []
    threads = [
        threading.Thread(target=lambda: paths.append(zoo.build_zoo(cfg, progress=False)))
        for _ in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [(cfg.corpus_seed, cfg.per_category)]  # built once, the other waited
    assert paths[0] == paths[1] == tmp_path / "zoo" / f"{zoo.ZOO_VERSION}-nano"
    assert sorted(p.name for p in paths[0].parent.iterdir() if not p.name.endswith(".lock")) == [
        f"{zoo.ZOO_VERSION}-nano"
    ]  # no temp dirs left behind
    first = json.loads((paths[0] / "zoo.json").read_text())
    zoo.build_zoo(cfg, progress=False)
    assert len(calls) == 1  # cached
    zoo.build_zoo(cfg, force=True, progress=False)
    again = json.loads((paths[0] / "zoo.json").read_text())
    assert len(calls) == 2
    for name in ("teacher", "student"):  # seeded: a rebuild gives the same weights
        assert again["models"][name]["weights_sha256"] == first["models"][name]["weights_sha256"]


def test_bad_corpus_or_no_provider_leaves_nothing(monkeypatch, tmp_path, use_corpus):
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path))
    use_corpus(None)
    with pytest.raises(BbiError, match="no zoo corpus provider"):
        zoo.build_zoo(nano_config(), progress=False)
    use_corpus(lambda seed, n: [{"prompt": "a", "reference": "b"}] * 3)
    with pytest.raises(BbiError, match="usable"):
        zoo.build_zoo(nano_config(), progress=False)
    assert [p for p in (tmp_path / "zoo").iterdir() if not p.name.endswith(".lock")] == []


def test_zoo_cli(micro_zoo, monkeypatch, tmp_path, synthetic_corpus, use_corpus):
    from typer.testing import CliRunner

    from bbi.app.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["zoo", "list"])
    assert res.exit_code == 0, res.output
    assert "micro" in res.output and "llama" in res.output and "qwen2" in res.output
    res = runner.invoke(app, ["zoo", "path", "teacher"])
    assert res.exit_code == 0 and res.output.strip() == str(micro_zoo / "teacher")
    res = runner.invoke(app, ["zoo", "path"])
    assert res.exit_code == 0 and res.output.strip() == str(micro_zoo)
    res = runner.invoke(app, ["zoo", "build", "--config", "micro"])
    assert res.exit_code == 0 and "already built" in res.output
    res = runner.invoke(app, ["zoo", "path", "teacher", "--config", "default"])
    assert res.exit_code == 2 and "not built" in res.output
    res = runner.invoke(app, ["zoo", "path", "professor"])
    assert res.exit_code == 2 and "unknown zoo model" in res.output
    res = runner.invoke(app, ["zoo", "build", "--config", "huge"])
    assert res.exit_code == 2 and "unknown zoo config" in res.output

    # A real build through the CLI, in a fresh cache, with a test corpus provider.
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path))
    monkeypatch.setitem(zoo.CONFIGS, "nano", nano_config())
    use_corpus(synthetic_corpus)
    res = runner.invoke(app, ["zoo", "build", "--config", "nano"])
    assert res.exit_code == 0, res.output
    assert "teacher: llama" in res.output and "student: qwen2" in res.output
    backend = load_backend("zoo:student", zoo_config="nano", device="cpu")
    out = backend.generate(["What is 2 plus 2?"], GenerationConfig(max_new_tokens=4), [0])
    assert out[0].n_tokens >= 1


def test_the_probes_corpus_is_the_installed_provider():
    """bbi's own entry point feeds the zoo with the probes training corpus."""
    import probes

    assert zoo.CORPUS.names() == ["probes"]
    assert zoo.corpus_provider() is probes.training_corpus
    items = zoo.corpus_provider()(1, 2)
    assert len(items) >= 10
    assert all(it["prompt"].strip() and it["reference"].strip() for it in items)
    assert len({it["category"] for it in items}) >= 5


def test_a_library_user_gets_the_hooks_without_the_cli():
    """A fresh process that imports only the library resolves the zoo corpus provider and
    registers bbi's WDA architectures (both filled by entry point, never by the CLI)."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from bbi import zoo\n"
        "from bbi.backends import hf\n"
        "assert zoo.corpus_provider().__module__.startswith('probes')\n"
        "hf.register_architectures()\n"
        "from transformers import AutoConfig\n"
        "from transformers.models.auto.configuration_auto import CONFIG_MAPPING\n"
        "assert 'bbi_wda_llama' in CONFIG_MAPPING, sorted(CONFIG_MAPPING)[:3]\n"
        "assert not any(m == 'bbi.app' or m.startswith('bbi.app.') for m in sys.modules)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]
