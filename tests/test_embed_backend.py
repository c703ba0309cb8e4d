"""The OpenVINO embedding backend: agrees with torch, falls back cleanly, reuses its export."""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bbi import similarity
from bbi.errors import BbiError
from bbi.similarity import Embedder

if importlib.util.find_spec("openvino") is None:  # not imported here: see _import_openvino
    pytest.skip("openvino is not installed", allow_module_level=True)

TEXTS = [
    "",
    "   ",
    "a",
    "The capital of France is Paris.",
    "What is the capital of France?\n\nThe capital of France is Paris.",
    "Breathe in, stretch out, feel better.",
    "I can't help with fraud or forgery, because it harms real people and is illegal.",
    "Mixing bleach and ammonia releases toxic chloramine gas. Keep the room ventilated.",
    "12 + 30 = 42",
    "def add(a, b):\n    return a + b",
    "Ünïcödé, emoji 🙂 and CJK 漢字 text.",
    "- bullet one\n- bullet two\n- bullet three",
    " ".join(["a long answer that keeps going"] * 80),  # past the 256-token limit
] + [f"Sentence number {i} about the {w} by the river." for i, w in enumerate("abcdefghijk")]


@pytest.fixture(scope="session")
def embed_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bbi-embed-cache")


@pytest.fixture(scope="session")
def pair(embed_cache):
    """(default embedder, torch embedder); the default one exports into ``embed_cache`` once."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BBI_CACHE_DIR", str(embed_cache))
        mp.delenv(similarity.EMBED_BACKEND_ENV, raising=False)
        default = Embedder()
    return default, Embedder(backend="torch", batch_size=8)  # little padding


def test_default_backend_is_openvino_and_agrees_with_torch(pair):
    fast, ref = pair
    assert fast.backend in ("openvino-bf16", "openvino-f32")
    assert ref.backend == "torch"
    assert fast.dim == ref.dim == 384 and fast.max_seq_length == ref.max_seq_length == 256
    a, b = fast.encode(TEXTS), ref.encode(TEXTS)
    assert a.shape == b.shape == (len(TEXTS), 384) and a.dtype == np.float32
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    cos = (a * b).sum(1)
    assert cos.min() > 0.999, cos.min()
    assert np.abs(a @ a.T - b @ b.T).max() < 0.01
    assert fast.encode([]).shape == (0, 384)
    assert np.array_equal(fast.encode(TEXTS), a)  # deterministic


def test_openvino_usage_telemetry_is_never_loaded(pair):
    assert pair[0].backend.startswith("openvino")
    assert sys.modules.get("openvino_telemetry", "absent") is None  # masked, not imported


def test_tokenization_matches_sentence_transformers(pair):
    fast, ref = pair
    want = ref.model.tokenizer(TEXTS, truncation=True, max_length=ref.max_seq_length)
    got = [e.ids for e in fast._tokenizer.encode_batch(TEXTS)]
    assert got == want["input_ids"]
    assert max(map(len, got)) == 256  # the long text is truncated as before, not further


def test_export_is_reused_on_second_load(pair, embed_cache, monkeypatch):
    fast, _ = pair
    assert fast.export_dir is not None and fast.export_dir.parent == embed_cache / "embed"
    stamp = (fast.export_dir / "export.json").stat().st_mtime_ns

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr(similarity, "_export_openvino", no_export)
    monkeypatch.setenv("BBI_CACHE_DIR", str(embed_cache))
    again = Embedder(backend="openvino")
    assert again.export_dir == fast.export_dir and again.backend == fast.backend
    assert (fast.export_dir / "export.json").stat().st_mtime_ns == stamp
    assert sorted(p.name for p in (embed_cache / "embed").iterdir() if p.is_dir()) == [
        fast.export_dir.name
    ]


def test_fallback_to_torch_when_openvino_is_missing(monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "openvino", None)  # import openvino -> ImportError
    monkeypatch.delenv(similarity.EMBED_BACKEND_ENV, raising=False)
    with caplog.at_level(logging.WARNING, logger="bbi.similarity"):
        emb = Embedder()
    assert emb.backend == "torch" and emb.export_dir is None
    assert "torch backend" in caplog.text
    assert emb.encode(["hello world"]).shape == (1, 384)
    with pytest.raises(BbiError, match="openvino"):
        Embedder(backend="openvino")


def test_failed_export_falls_back_and_leaves_no_partial_export(tmp_path, monkeypatch, caplog):
    def broken_export(ov, out):
        (out / "model.xml").write_text("<half")
        raise RuntimeError("conversion failed")

    monkeypatch.setenv("BBI_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(similarity, "_export_openvino", broken_export)
    monkeypatch.setattr(
        Embedder, "_load_torch", lambda self, device: setattr(self, "backend", "torch")
    )
    with caplog.at_level(logging.WARNING, logger="bbi.similarity"):
        assert Embedder(backend="auto").backend == "torch"
    assert "conversion failed" in caplog.text
    assert [p.name for p in (tmp_path / "embed").iterdir() if p.is_dir()] == []
    with pytest.raises(BbiError, match="conversion failed"):
        Embedder(backend="openvino-f32")


def test_backend_choice_from_argument_and_environment(monkeypatch):
    with pytest.raises(BbiError, match="unknown embedding backend"):
        Embedder(backend="tensorrt")
    monkeypatch.setenv(similarity.EMBED_BACKEND_ENV, "nope")
    with pytest.raises(BbiError, match="unknown embedding backend"):
        Embedder()
    with pytest.raises(BbiError, match="CPU only"):
        Embedder(device="cuda", backend="openvino")


class _FakeEmbedder:
    def __init__(self, backend: str):
        self.backend, self.encoded = backend, 0

    def encode(self, texts, progress=False):
        self.encoded += len(texts)
        return np.full((len(texts), 4), 0.5, dtype=np.float32)


class _FakeRun:
    def __init__(self, path: Path):
        self.path = path

    def responses(self, alias):
        return pd.DataFrame(
            {"prompt_id": ["p1", "p2", "p3"], "sample": [0, 0, 0], "text": ["x", "y", "z"]}
        )


def test_embeddings_cache_is_keyed_on_the_backend(tmp_path, monkeypatch):
    run = _FakeRun(tmp_path)
    fake = _FakeEmbedder("openvino-bf16")
    monkeypatch.setattr(similarity, "get_embedder", lambda: fake)
    similarity.embeddings_for(run, "a")
    similarity.embeddings_for(run, "a")
    assert fake.encoded == 3  # second call served from the cache
    path = tmp_path / "embeddings" / "a.s0.npz"
    with np.load(path) as z:
        assert str(z["backend"]) == "openvino-bf16"

    fake = _FakeEmbedder("torch")  # another backend: nothing reused, file rewritten
    similarity.embeddings_for(run, "a")
    assert fake.encoded == 3
    with np.load(path) as z:
        assert str(z["backend"]) == "torch"

    with np.load(path) as z:  # a cache written before backends were recorded means torch
        legacy = {k: z[k] for k in z.files if k != "backend"}
    os.remove(path)
    np.savez(path, **legacy)
    fake = _FakeEmbedder("torch")
    similarity.embeddings_for(run, "a")
    assert fake.encoded == 0
    fake = _FakeEmbedder("openvino-f32")
    similarity.embeddings_for(run, "a")
    assert fake.encoded == 3


def test_load_falls_back_when_openvino_disagrees_with_torch(embed_cache, monkeypatch, caplog):
    """Every load re-embeds the check texts stored with the export; a mismatch means torch."""
    monkeypatch.setenv("BBI_CACHE_DIR", str(embed_cache))
    monkeypatch.setattr(similarity, "_CHECK_MIN_COSINE", 1.01)  # nothing can pass
    monkeypatch.setattr(
        Embedder, "_load_torch", lambda self, device: setattr(self, "backend", "torch")
    )
    with caplog.at_level(logging.WARNING, logger="bbi.similarity"):
        assert Embedder(backend="auto").backend == "torch"
    assert "disagrees with torch" in caplog.text
    with pytest.raises(BbiError, match="disagrees with torch"):
        Embedder(backend="openvino")
