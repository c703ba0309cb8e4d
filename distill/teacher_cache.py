"""The teacher's signal on disk: its top-k log-probabilities per response token.

``bbi distill kd --teacher-logits cache`` runs the teacher once over the distillation data
and keeps, for every trained token, the log-probabilities of its ``k`` most likely next
tokens (float16), their ids (int32) and the log of the remaining mass (float32, the tail
bucket of ``distill.objectives.kd.topk_divergence``). Training then reads these and never
loads the teacher: the teacher need not fit beside the student.

Layout: ``runs/NAME/cache/teacher/<key>/shard-00000.npz ...`` plus ``manifest.json``,
written last. The key is a hash of what the numbers depend on (the teacher's fingerprint,
the dataset's fingerprint, k, temperature, vocabulary size), so other data or settings get
their own directory and a cache is never read for data it does not describe. Each shard
(``SHARD_EXAMPLES`` examples) is written to a temporary file and renamed into place, so an
interrupted build keeps every finished shard and the next run computes only the missing
ones (resumable); a damaged shard is a one-line error naming it.

The rows come from a :class:`TeacherSource`: the teacher model in this process
(:class:`LocalTeacher`, ``hf:``/``zoo:`` teachers) or a teacher served on another machine
(:class:`ServedTeacher`, an ``openai:`` spec whose server returns prompt log-probabilities:
vLLM's server, ``bbi serve``), which is never loaded here. A served teacher's numbers are
its raw (temperature 1) log-probabilities; its tail is ``log(1 - sum of the top-k
probabilities)``, clipped at 0 (``-inf`` when the top k hold all the mass, as locally).
Both fill the same cache format; the key's teacher fingerprint (for an endpoint: its URL
and model name) keeps them apart.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch.utils.data import Dataset

from bbi.errors import BbiError
from bbi.runstore import write_json
from distill.data import IGNORE_INDEX, Collator, DatasetView

CACHE_VERSION = 1
SHARD_EXAMPLES = 64
MANIFEST = "manifest.json"

Rows = tuple[np.ndarray, np.ndarray, np.ndarray]
"""One example's (ids int32 [n, k], log-probs float16 [n, k], tail log-mass float32 [n])."""


def cache_key(
    teacher_fingerprint: str, data_fingerprint: str, k: int, temperature: float, vocab: int
) -> str:
    """The directory name of one cache: a hash of everything its numbers depend on."""
    spec = json.dumps(
        [CACHE_VERSION, teacher_fingerprint, data_fingerprint, int(k), float(temperature), vocab]
    )
    return hashlib.sha256(spec.encode()).hexdigest()[:24]


def trained_positions(example: dict[str, list[int]]) -> np.ndarray:
    """Positions t whose next token (label t + 1) is trained on."""
    labels = np.asarray(example["labels"][1:])
    return np.nonzero(labels != IGNORE_INDEX)[0]


def topk_rows(logits: torch.Tensor, k: int, temperature: float) -> Rows:
    """Top-k softened log-probabilities, their ids and the tail log-mass of logit rows."""
    lp = torch.log_softmax(logits.float() / temperature, dim=-1)
    values, ids = lp.topk(min(k, lp.size(-1)), dim=-1)
    tail = lp.scatter(-1, ids, float("-inf")).logsumexp(-1)
    return (
        ids.to(torch.int32).cpu().numpy(),
        values.to(torch.float16).cpu().numpy(),
        tail.cpu().numpy().astype(np.float32),
    )


class TeacherSource(Protocol):
    """Where a cache's rows come from (see the module docstring)."""

    def rows(self, examples: list[dict[str, list[int]]]) -> list[Rows]:
        """Each example's rows at its trained positions."""
        ...

    def close(self) -> None: ...


class ServedTeacher:
    """A teacher behind an endpoint that returns prompt log-probabilities of token ids
    (``bbi.backends.openai_compat.OpenAIBackend.prompt_logprobs``). The student's token
    ids are sent as they are, so the teacher must share the student's tokenizer:
    :meth:`check_vocabulary` probes it before anything is computed, and every returned id
    must lie inside the student's vocabulary."""

    def __init__(self, backend: Any, *, k: int, vocab: int):
        self.backend, self.k, self.vocab = backend, int(k), int(vocab)

    def check_vocabulary(self, tokenizer: Any, ids: list[int]) -> None:
        """Each of ``ids`` must mean the same token to the server as to the student (its
        text, as the server reports it): what matters when token ids are sent, and what
        ``distill.student.check_same_vocabulary`` checks for a local teacher. One scoring
        request, which also shows the server returns ``k`` log-probabilities per token."""
        theirs = self.backend.token_texts(ids, self.k)
        mine = [tokenizer.decode([int(t)]) for t in ids[1:]]
        pairs = [(t, a, b) for t, a, b in zip(ids[1:], theirs, mine, strict=True) if a is not None]
        if not pairs:
            raise BbiError(
                f"the served teacher {self.backend.name} does not say which token an id is "
                "(no decoded_token in its prompt_logprobs): cannot check it shares the "
                "student's tokenizer"
            )
        bad = [(t, a, b) for t, a, b in pairs if a != b]
        if bad:
            t, a, b = bad[0]
            raise BbiError(
                f"the served teacher {self.backend.name} does not share the student's "
                f"tokenizer ({len(bad)} of {len(pairs)} probed token ids differ, e.g. id {t} "
                f"is {a!r} there, {b!r} here); cached KD sends token ids (across "
                "tokenizers: --loss uld with a local teacher, or `bbi distill lora`)"
            )

    def rows(self, examples: list[dict[str, list[int]]]) -> list[Rows]:
        scored = self.backend.prompt_logprobs(
            [list(ex["input_ids"]) for ex in examples], self.k, progress=False
        )
        out: list[Rows] = []
        for ex, pl in zip(examples, scored, strict=True):
            pos = trained_positions(ex)
            if not len(pos):
                out.append(
                    (np.zeros((0, self.k), np.int32), np.zeros((0, self.k), np.float16),
                     np.zeros(0, np.float32))
                )  # fmt: skip
                continue
            ids = np.asarray([pl.top_ids[p] for p in pos], dtype=np.int64)
            lp = np.asarray([pl.top_logprobs[p] for p in pos], dtype=np.float64)
            if ids.size and (ids.min() < 0 or ids.max() >= self.vocab):
                raise BbiError(
                    f"the served teacher {self.backend.name} returned token id "
                    f"{int(ids.max())}, outside the student's vocabulary of {self.vocab}: "
                    "it does not share the student's tokenizer"
                )
            if ids.shape[1] < min(self.k, self.vocab):
                raise BbiError(
                    f"the served teacher {self.backend.name} returned {ids.shape[1]} "
                    f"log-probabilities per token, not {self.k} (raise the server's "
                    "--max-logprobs, or lower --top-k)"
                )
            mass = np.exp(lp).sum(axis=-1)
            with np.errstate(divide="ignore"):
                tail = np.log1p(-np.clip(mass, 0.0, 1.0))
            out.append((ids.astype(np.int32), lp.astype(np.float16), tail.astype(np.float32)))
        return out

    def close(self) -> None:
        self.backend.close()


class TeacherCache:
    """One cache directory (see the module docstring)."""

    def __init__(self, root: Path, n_examples: int):
        self.root = Path(root)
        self.n = n_examples

    def shard_path(self, s: int) -> Path:
        return self.root / f"shard-{s:05d}.npz"

    @property
    def n_shards(self) -> int:
        return -(-self.n // SHARD_EXAMPLES)

    def complete(self) -> bool:
        """Whether every shard and the manifest are there (the teacher is not needed)."""
        return (self.root / MANIFEST).exists() and all(
            self.shard_path(s).exists() for s in range(self.n_shards)
        )

    def build(
        self,
        rows_of: Callable[[list[dict[str, list[int]]]], list[Rows]],
        dataset: Dataset,
        *,
        batch_size: int,
        meta: dict[str, Any],
        progress: bool = False,
    ) -> int:
        """Compute the missing shards with ``rows_of(examples) -> rows per example``;
        returns how many shards were computed (0: all were on disk)."""
        from tqdm.auto import tqdm

        self.root.mkdir(parents=True, exist_ok=True)
        todo = [s for s in range(self.n_shards) if not self.shard_path(s).exists()]
        for s in tqdm(todo, desc="teacher cache", unit="shard", disable=not progress):
            lo, hi = s * SHARD_EXAMPLES, min((s + 1) * SHARD_EXAMPLES, self.n)
            rows: list[Rows] = []
            for b in range(lo, hi, batch_size):
                rows += rows_of([dataset[i] for i in range(b, min(b + batch_size, hi))])
            self._write_shard(s, rows)
        write_json(self.root / MANIFEST, {**meta, "version": CACHE_VERSION, "n_examples": self.n})
        return len(todo)

    def _write_shard(self, s: int, rows: list[Rows]) -> None:
        counts = np.array([len(r[0]) for r in rows], dtype=np.int64)
        path = self.shard_path(s)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
        try:
            with open(tmp, "wb") as fh:
                np.savez_compressed(
                    fh,
                    counts=counts,
                    ids=np.concatenate([r[0] for r in rows]),
                    logprobs=np.concatenate([r[1] for r in rows]),
                    tail=np.concatenate([r[2] for r in rows]),
                )
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    def load(self) -> list[Rows]:
        """Every example's rows, in dataset order."""
        out: list[Rows] = []
        for s in range(self.n_shards):
            path = self.shard_path(s)
            try:
                with np.load(path) as z:
                    counts, ids, lp, tail = z["counts"], z["ids"], z["logprobs"], z["tail"]
            except (OSError, ValueError, KeyError, EOFError) as exc:
                raise BbiError(
                    f"{path}: damaged teacher cache shard ({exc}); delete it to recompute"
                ) from None
            edges = np.concatenate([[0], np.cumsum(counts)])
            out += [
                (ids[a:b], lp[a:b], tail[a:b]) for a, b in zip(edges[:-1], edges[1:], strict=True)
            ]
        if len(out) != self.n:
            raise BbiError(f"{self.root}: teacher cache holds {len(out)} examples, not {self.n}")
        return out


class TeacherSignalDataset(DatasetView):
    """A dataset's examples with the teacher's cached rows attached (key ``teacher``);
    same examples, order and fingerprint as the dataset it wraps."""

    def __init__(self, dataset: Any, rows: list[Rows]):
        if len(rows) != len(dataset):
            raise BbiError("teacher cache and dataset differ in length")
        super().__init__(dataset)
        self.rows = rows
        for i in range(len(dataset)):
            if len(rows[i][0]) != len(trained_positions(dataset[i])):
                raise BbiError(f"teacher cache example {i}: row count does not match the data")

    def __getitem__(self, i: int) -> dict[str, Any]:
        return {**self.dataset[i], "teacher": self.rows[i]}


class SignalCollator(Collator):
    """The usual batch plus ``teacher_ids`` / ``teacher_logprobs`` (batch, positions, k)
    and ``teacher_tail`` (batch, positions), aligned with ``labels[:, 1:]``."""

    def __call__(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        out = super().__call__(batch)
        b, width = out["input_ids"].shape
        k = (
            max(ex["teacher"][0].shape[1] for ex in batch if len(ex["teacher"][0]))
            if any(len(ex["teacher"][0]) for ex in batch)
            else 1
        )
        ids = torch.zeros((b, max(width - 1, 0), k), dtype=torch.long)
        lp = torch.zeros((b, max(width - 1, 0), k), dtype=torch.float32)
        tail = torch.zeros((b, max(width - 1, 0)), dtype=torch.float32)
        for i, ex in enumerate(batch):
            pos = torch.from_numpy(trained_positions(ex))
            r_ids, r_lp, r_tail = ex["teacher"]
            ids[i, pos] = torch.from_numpy(r_ids.astype(np.int64))
            lp[i, pos] = torch.from_numpy(r_lp.astype(np.float32))
            tail[i, pos] = torch.from_numpy(r_tail)
        return {**out, "teacher_ids": ids, "teacher_logprobs": lp, "teacher_tail": tail}


__all__ = [
    "CACHE_VERSION",
    "SHARD_EXAMPLES",
    "ServedTeacher",
    "TeacherSource",
    "SignalCollator",
    "TeacherCache",
    "TeacherSignalDataset",
    "cache_key",
    "topk_rows",
    "trained_positions",
]
