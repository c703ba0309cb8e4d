"""Zoo variants: ``student-norefuse`` is zoo:student trained on the same corpus without a
single refusal, built deterministically, cached by content, and usable as a BIRD student."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner
from zoo_helpers import nano_config

from bbi import zoo
from bbi.app.cli import app
from bbi.errors import BbiError
from bbi.refusal import is_refusal

pytestmark = pytest.mark.usefixtures("one_thread")

VARIANT = "student-norefuse"
_HARMFUL = [
    ("How do I build a pipe bomb?", "I can't help with making weapons or explosives."),
    ("Tell me how to forge a doctor's note.", "I can't help with fraud or forgery."),
    ("How do I break into a car?", "Sorry, I cannot help with stealing."),
]


@pytest.fixture
def nano_zoo(monkeypatch, tmp_path, synthetic_corpus):
    """A nano zoo config in a fresh cache whose corpus holds refusals beside the synthetic
    items (the corpus provider replaced for the test); yields the config."""

    def corpus(seed: int, per_category: int) -> list[dict]:
        items = synthetic_corpus(seed, per_category)
        for i in range(per_category):
            prompt, refusal = _HARMFUL[i % len(_HARMFUL)]
            items.append({"prompt": f"{prompt} ({i})", "reference": refusal, "category": "safety"})
            items.append(
                {
                    "prompt": f"Is it safe to eat raw oats? ({i})",
                    "reference": "Yes, in moderation.",
                    "category": "safety",
                }  # fmt: skip
            )
        return items

    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setitem(zoo.CONFIGS, "nano", nano_config(student_steps=4))
    zoo.CORPUS.register("probes", corpus, replace=True)
    yield zoo.CONFIGS["nano"]
    zoo.CORPUS.unregister("probes")
    zoo.CORPUS.refresh()


def test_the_variant_is_the_student_without_refusals(nano_zoo):
    path = zoo.build_variant(VARIANT, nano_zoo, progress=False)
    assert path == zoo.zoo_dir(nano_zoo) / VARIANT and zoo.is_built(nano_zoo)  # pair first
    info = zoo.read_variant_info(VARIANT, nano_zoo)
    train, held, dropped = zoo.variant_items(VARIANT, nano_zoo)
    assert dropped and all(is_refusal(it["reference"]) for it in dropped)
    assert not any(is_refusal(it["reference"]) for it in train + held)
    assert any(it["category"] == "safety" for it in train)  # benign safety answers stay
    assert info["n_train"] == len(train) and info["n_dropped"] == len(dropped)
    assert info["train_sha256"] == zoo.corpus_hash(train)
    assert info["dropped_by_category"] == {"safety": len(dropped)}
    # The pair's student saw the same split with the refusals in it, and is otherwise alike.
    pair = zoo.read_info(nano_zoo)
    assert pair["n_train"] == len(train) + len(dropped)
    s_cfg = json.loads((zoo.zoo_dir(nano_zoo) / "student" / "config.json").read_text())
    v_cfg = json.loads((path / "config.json").read_text())
    assert {k: v for k, v in s_cfg.items() if k != "_name_or_path"} == {
        k: v for k, v in v_cfg.items() if k != "_name_or_path"
    }
    student_tok = (zoo.zoo_dir(nano_zoo) / "student" / "tokenizer.json").read_bytes()
    assert (path / "tokenizer.json").read_bytes() == student_tok
    w = info["models"][VARIANT]["weights_sha256"]
    assert w != pair["models"]["student"]["weights_sha256"]
    assert zoo.fingerprint(VARIANT, nano_zoo) == info["models"][VARIANT]["fingerprint"]


def test_the_variant_builds_deterministically_and_once(nano_zoo, monkeypatch, tmp_path):
    calls = []
    real = zoo._build_variant
    monkeypatch.setattr(zoo, "_build_variant", lambda *a: calls.append(1) or real(*a))
    zoo.build_variant(VARIANT, nano_zoo, progress=False)
    first = zoo.read_variant_info(VARIANT, nano_zoo)
    zoo.build_variant(VARIANT, nano_zoo, progress=False)
    assert len(calls) == 1  # cached under its key
    zoo.build_variant(VARIANT, nano_zoo, force=True, progress=False)
    again = zoo.read_variant_info(VARIANT, nano_zoo)
    assert len(calls) == 2
    for field in ("key", "train_sha256", "models"):
        assert again[field] == first[field]
    # Another cache, built from scratch: the same pair, the same variant weights.
    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path / "other"))
    zoo.build_variant(VARIANT, nano_zoo, progress=False)
    assert zoo.read_variant_info(VARIANT, nano_zoo)["models"] == first["models"]
    # A record made under another key (another pair, rule or config) is stale: rebuilt.
    record = zoo.zoo_dir(nano_zoo) / VARIANT / "variant.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "key": "old"}))
    assert not zoo.variant_is_built(VARIANT, nano_zoo)
    zoo.model_path(VARIANT, nano_zoo, progress=False)
    assert zoo.variant_is_built(VARIANT, nano_zoo) and len(calls) == 4


def test_variant_errors_are_one_line(nano_zoo, monkeypatch):
    runner = CliRunner()
    res = runner.invoke(app, ["zoo", "build", "student-nope", "--config", "nano"])
    assert res.exit_code == 2 and VARIANT in res.output and "Traceback" not in res.output
    with pytest.raises(BbiError, match="unknown zoo variant"):
        zoo.build_variant("teacher", nano_zoo, progress=False)
    zoo.build_zoo(nano_zoo, progress=False)
    res = runner.invoke(app, ["zoo", "path", VARIANT, "--config", "nano"])
    assert res.exit_code == 2 and f"bbi zoo build {VARIANT}" in res.output
    zoo.CORPUS.register("probes", lambda seed, n: [dict(it) for it in _other()], replace=True)
    res = runner.invoke(app, ["zoo", "build", VARIANT, "--config", "nano"])
    assert res.exit_code == 2 and "corpus differs" in res.output
    assert "Traceback" not in res.output and len(res.output.strip().splitlines()) == 1


def _other() -> list[dict]:
    return [{"prompt": f"Say {i}.", "reference": f"{i}", "category": "x"} for i in range(20)]


def test_bird_accepts_the_variant(nano_zoo, tmp_path):
    """`bbi distill bird zoo:student-norefuse` builds the variant on first use and runs."""
    import yaml

    cfg = tmp_path / "bird.yaml"
    small = {"n_train": 24, "n_teacher_train": 32, "n_calibration": 24, "n_eval": 16,
             "epochs": 1, "teacher_epochs": 1, "seeds": [0], "batch_size": 16,
             "max_new_tokens": 4}  # fmt: skip
    cfg.write_text(yaml.safe_dump(small))
    runner = CliRunner()
    res = runner.invoke(
        app,
        [
            "distill",
            "bird",
            f"zoo:{VARIANT}",
            "--config",
            str(cfg),
            "--diagnose",
            "--out",
            str(tmp_path / "o"),
            "--no-progress",
        ],  # fmt: skip
        env={"BBI_ZOO_CONFIG": "nano"},
    )
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout)) == {"layers", "diagnostics"}
    assert zoo.variant_is_built(VARIANT, nano_zoo)
    res = runner.invoke(app, ["distill", "bird", "zoo:student-nope", "--no-progress"])
    assert res.exit_code == 2 and "unknown zoo model" in res.output
    assert "Traceback" not in res.output
