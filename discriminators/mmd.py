"""``mmd``: a kernel two-sample test between the teacher's and another model's responses.

Unlike the classifiers, this adversary does not learn a decision rule; it asks whether the
two response distributions differ at all, the approach of Model Equality Testing (Gao et
al., 2024). Three kernels:

``embedding``
    Gaussian kernel on all-MiniLM-L6-v2 sentence embeddings,
    ``k(x, y) = exp(-||x - y||^2 / (2 sigma^2))`` with ``sigma`` the median pairwise
    distance of the pooled sample (the median heuristic; pooled, so permutations leave it
    unchanged and the test stays exact).
``hamming``
    ``k(x, y) = mean over positions i < L of [x_i == y_i]`` on sequences padded (or cut) to
    a fixed length ``L``; units are characters (default) or whitespace words, aligned at
    the start of the response (default) or at its end (``align="end"``: sign-offs and
    closing habits). Padding positions match each other, so the kernel also sees length.
``kspectrum``
    The k-spectrum string kernel of MET's ``mmd_kspectrum``: ``k(x, y) = sum_s #(s in x)
    #(s in y)`` over the n-grams ``s`` of the same unit sequences (``cumulative=True``, as
    MET's default: every order 1..``k``; ``False``: order ``k`` only), normalised to
    ``k(x, y) / sqrt(k(x, x) k(y, y))`` so ``k(x, x) = 1``. Position-free, so it sees shared
    phrases wherever they occur. Unlike MET, which counts n-grams of its padded sequences,
    padding is dropped (it would turn the kernel into a length match for short responses);
    a response with no n-gram (empty) gets the zero feature vector, as MET does.

Statistic: the unbiased MMD^2. With paired samples (both models answered the same
prompts) it is Gretton et al. (2012, Lemma 6) ``1/(n(n-1)) sum_{i != j} h_ij`` with
``h_ij = k(x_i,x_j) + k(y_i,y_j) - k(x_i,y_j) - k(x_j,y_i)``, which leaves out the
same-prompt cross terms ``k(x_i, y_i)``: they share a prompt, so including them would bias
the estimate. The p-value swaps the two responses within each prompt pair with
probability 1/2 (swapping pair ``i`` flips the sign of row and column ``i`` of ``h``), so
it is exact under H0 "the two models are exchangeable on every prompt". Unpaired samples
use the standard unbiased MMD^2 and permute the pooled labels.
``p = (1 + #{perm >= observed}) / (1 + n_permutations)``.

Several samples per prompt (``samples=S > 1``, MET's design of ``m`` completions per
prompt): the attack hands over the ``n`` prompts it bought (sample 0 of each model); the
test keeps the first ``floor(n / S)`` of them, in the given order, and reads samples
``0..S-1`` of both models from the run (``context["run"]``), so it reveals ``2 S
floor(n / S) <= 2 n`` responses, within the budget. Prompts lacking ``S`` samples from
either model are skipped, not replaced. Under H0 the ``2S`` responses of one prompt are
exchangeable, so the p-value permutes the model labels *within* each prompt (``S`` of the
``2S`` stay "teacher"), which is exact whatever the statistic. Which kernel entries
count (``pairs``):

``cross`` (default)
    Only pairs from *different* prompts: ``1/(S^2 n(n-1)) sum_{i != j} h_ij`` with
    ``h_ij`` the sum of ``k(x_is, x_jt) + k(y_is, y_jt) - k(x_is, y_jt) - k(y_is, x_jt)``
    over the ``S^2`` sample pairs. Lemma 6 again (for ``S = 1`` it is exactly the paired
    statistic above): unbiased for the MMD^2 between the two models' response
    distributions over prompts, and it needs no same-prompt pair.
``within``
    Only pairs from the *same* prompt, MET's prompt-masked kernel: the mean over prompts
    of each prompt's unbiased MMD^2 between its ``S`` + ``S`` responses. It sees
    prompt-conditional differences that average out across prompts, at far fewer pairs.

The embedding kernel reads each sample's MiniLM vectors with
``bbi.similarity.embeddings_for`` (cached in the run's ``embeddings/``, computed once for
the whole run on first use); the frames' precomputed column covers sample 0 only.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from scipy.spatial.distance import cdist

from bbi.errors import BbiError
from discriminators.base import BOOLEAN, Adversary, at_least, one_of

KERNELS = ("embedding", "hamming", "kspectrum")
PAIRS = ("cross", "within")
UNITS = ("char", "word")
ALIGNS = ("start", "end")
_PAD = -1
_PERM_BLOCK = 128


def encode_sequences(
    texts: list[str], length: int, unit: str = "char", align: str = "start"
) -> np.ndarray:
    """Integer codes of each text's first (``align="start"``) or last (``"end"``) ``length``
    units, padded with ``-1`` on the other side.

    Characters map to their code points; words to ids assigned in order of first
    appearance within this call, so encode both samples in one call.
    """
    if unit not in UNITS:
        raise BbiError(f"mmd: unknown unit {unit!r}; choose one of {', '.join(UNITS)}")
    if align not in ALIGNS:
        raise BbiError(f"mmd: align must be one of {', '.join(ALIGNS)}, not {align!r}")
    if length < 1:
        raise BbiError(f"mmd: max_length must be >= 1, got {length}")
    out = np.full((len(texts), length), _PAD, dtype=np.int64)
    vocab: dict[str, int] = {}
    for row, text in enumerate(texts):
        units = list(text) if unit == "char" else text.split()
        units = units[:length] if align == "start" else units[-length:]
        if unit == "char":
            codes = [ord(c) for c in units]
        else:
            codes = [vocab.setdefault(w, len(vocab)) for w in units]
        if align == "start":
            out[row, : len(codes)] = codes
        elif codes:
            out[row, -len(codes) :] = codes
    return out


def hamming_gram(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """k(a, b) = fraction of positions where the padded sequences agree (1 on the diagonal)."""
    if A.shape[1] != B.shape[1]:
        raise ValueError("sequences must have the same padded length")
    return (1.0 - cdist(A, B, metric="hamming")).astype(np.float32)


GRAM_BLOCK = 512  # rows of the k-spectrum Gram computed at a time


def kspectrum_gram(Z: np.ndarray, k: int, cumulative: bool = True) -> np.ndarray:
    """Normalised k-spectrum Gram of the padded code rows ``Z`` (``-1`` = padding).

    Each j-gram gets a compact id from (id of its (j-1)-gram prefix, last unit), one 1-d
    ``np.unique`` per order; windows touching padding get none (padding sits at one end, so
    the rest are exactly the response's n-grams). The Gram is then one sparse product of
    the n-gram count matrix, instead of MET's Python double loop over pairs.
    """
    if k < 1:
        raise BbiError(f"mmd: k must be >= 1, got {k}")
    Z = np.asarray(Z, dtype=np.int64)
    n, L = Z.shape
    base = int(Z.max(initial=0)) + 1
    blocks = [sp.csr_matrix((n, 1))]
    ids = np.where(Z >= 0, Z, -1)  # 1-gram "ids": the codes themselves
    for order in range(1, min(k, L) + 1):
        if order > 1:
            prefix, last = ids[:, :-1], Z[:, order - 1 :]
            ok = (prefix >= 0) & (last >= 0)
            key = prefix[ok] * base + last[ok]  # prefix ids < n * L, so no int64 overflow
            ids = np.full(prefix.shape, -1, dtype=np.int64)
            ids[ok] = np.unique(key, return_inverse=True)[1].ravel()
        if order < k and not cumulative:
            continue
        rows, cols = np.nonzero(ids >= 0)
        if len(rows):
            col = ids[rows, cols]
            if order == 1:  # raw codes (code points reach 0x10FFFF): make them compact
                col = np.unique(col, return_inverse=True)[1].ravel()
            shape = (n, int(col.max()) + 1)
            blocks.append(sp.csr_matrix((np.ones(len(col)), (rows, col)), shape=shape))
    C = sp.hstack(blocks, format="csr")  # one column per distinct n-gram (all orders used)
    norm = np.sqrt(np.asarray(C.multiply(C).sum(axis=1)).ravel())
    norm[norm == 0] = 1.0
    C = sp.diags(1.0 / norm) @ C  # unit rows: the Gram is then the normalised one
    # Row blocks straight into the float32 result: the full product in float64 (dense or
    # as a sparse matrix of n^2 entries) would take several times the result's memory.
    K = np.empty((n, n), dtype=np.float32)
    CT = C.T.tocsc()
    for i in range(0, n, GRAM_BLOCK):
        K[i : i + GRAM_BLOCK] = (C[i : i + GRAM_BLOCK] @ CT).toarray()
    return K


def median_bandwidth(Z: np.ndarray, rng: np.random.Generator, max_points: int = 2000) -> float:
    """Median pairwise Euclidean distance of the pooled sample (subsampled for speed)."""
    if len(Z) > max_points:
        Z = Z[rng.choice(len(Z), size=max_points, replace=False)]
    d = cdist(Z, Z)
    off = d[np.triu_indices(len(Z), k=1)]
    off = off[off > 0]
    return float(np.median(off)) if off.size else 1.0


def gaussian_gram(Z: np.ndarray, sigma: float) -> np.ndarray:
    """exp(-||z_i - z_j||^2 / (2 sigma^2)); squared distances via one BLAS product."""
    Z = np.asarray(Z, dtype=np.float32)
    sq = np.einsum("ij,ij->i", Z, Z)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (Z @ Z.T)
    np.maximum(d2, 0.0, out=d2)
    return np.exp(-d2 / np.float32(2.0 * sigma**2)).astype(np.float32)


def paired_mmd2_test(
    K: np.ndarray, n_permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """(MMD^2_u, p) for paired samples; ``K`` is the pooled Gram of ``[x_1..x_n, y_1..y_n]``."""
    n = K.shape[0] // 2
    if n < 2:
        raise BbiError("mmd: need at least 2 prompt pairs")
    Kxx, Kyy, Kxy = K[:n, :n], K[n:, n:], K[:n, n:]
    H = (Kxx + Kyy - Kxy - Kxy.T).astype(np.float64)
    np.fill_diagonal(H, 0.0)
    norm = n * (n - 1)
    observed = float(H.sum() / norm)
    exceed = 0
    done = 0
    while done < n_permutations:
        b = min(_PERM_BLOCK, n_permutations - done)
        S = rng.choice(np.array([-1.0, 1.0]), size=(n, b))
        stats = np.einsum("ib,ib->b", S, H @ S) / norm
        exceed += int(np.sum(stats >= observed - 1e-12))
        done += b
    return observed, (1 + exceed) / (1 + n_permutations)


def _unbiased_mmd2(K: np.ndarray, A: np.ndarray, diag: np.ndarray) -> np.ndarray:
    """MMD^2_u for each column of the 0/1 membership matrix ``A`` (1 = first sample)."""
    B = 1.0 - A
    m = A.sum(0)
    n = B.sum(0)
    KA = K @ A
    KB = K @ B
    sxx = np.einsum("ib,ib->b", A, KA) - diag @ A
    syy = np.einsum("ib,ib->b", B, KB) - diag @ B
    sxy = np.einsum("ib,ib->b", B, KA)
    return sxx / (m * (m - 1)) + syy / (n * (n - 1)) - 2.0 * sxy / (m * n)


def unpaired_mmd2_test(
    K: np.ndarray, m: int, n_permutations: int, rng: np.random.Generator
) -> tuple[float, float]:
    """(MMD^2_u, p) for independent samples; ``K`` pools ``m`` x's then the y's."""
    N = K.shape[0]
    if m < 2 or N - m < 2:
        raise BbiError("mmd: need at least 2 responses from each model")
    K = K.astype(np.float64)
    diag = np.diag(K).copy()
    a0 = np.zeros((N, 1))
    a0[:m] = 1.0
    observed = float(_unbiased_mmd2(K, a0, diag)[0])
    exceed = 0
    done = 0
    while done < n_permutations:
        b = min(_PERM_BLOCK, n_permutations - done)
        A = np.zeros((N, b))
        for j in range(b):
            A[rng.permutation(N)[:m], j] = 1.0
        exceed += int(np.sum(_unbiased_mmd2(K, A, diag) >= observed - 1e-12))
        done += b
    return observed, (1 + exceed) / (1 + n_permutations)


def stratified_mmd2_test(
    K: np.ndarray,
    samples: int,
    n_permutations: int,
    rng: np.random.Generator,
    pairs: str = "cross",
) -> tuple[float, float]:
    """(MMD^2, p) for ``n`` prompts x ``samples`` responses per model, labels permuted
    within each prompt.

    ``K`` is the pooled Gram in prompt-major order: prompt ``i`` owns rows
    ``2Si .. 2Si + 2S - 1``, its teacher's ``S`` first. With ``s`` = +1 (teacher) / -1
    (other), ``Kxx + Kyy - 2 Kxy`` summed over the kept entries is ``s' K s``, and the
    within-prompt statistic is increasing in it too (the kept total is label-free), so
    every permutation costs one quadratic form.
    """
    S = int(samples)
    if pairs not in PAIRS:
        raise BbiError(f"mmd: pairs must be one of {', '.join(PAIRS)}, not {pairs!r}")
    if S < 1 or K.shape[0] % (2 * S):
        raise ValueError("K must hold 2 * samples rows per prompt")
    n = K.shape[0] // (2 * S)
    if n < 2:
        raise BbiError("mmd: need at least 2 prompts")
    if pairs == "within" and S < 2:
        raise BbiError("mmd: pairs='within' needs samples >= 2 (one response per model)")
    block = np.arange(K.shape[0]) // (2 * S)
    same = block[:, None] == block[None, :]
    K = np.where(same if pairs == "within" else ~same, K, 0.0).astype(np.float64)
    total, trace = float(K.sum()), float(np.trace(K))

    def statistic(quad: np.ndarray) -> np.ndarray:
        if pairs == "cross":
            return quad / (S * S * n * (n - 1))
        same_model = (total + quad) / 2.0 - trace  # Kxx + Kyy, self-pairs left out
        between = (total - quad) / 2.0  # 2 Kxy
        return same_model / (n * S * (S - 1)) - between / (n * S * S)

    s0 = np.tile(np.r_[np.ones(S), -np.ones(S)], n)
    observed = float(statistic(np.array([s0 @ K @ s0]))[0])
    exceed = 0
    done = 0
    while done < n_permutations:
        b = min(_PERM_BLOCK, n_permutations - done)
        # Ranks of uniform keys within each prompt: a uniform permutation of its 2S rows.
        ranks = rng.random((n, 2 * S, b)).argsort(axis=1).argsort(axis=1)
        sg = np.where(ranks < S, 1.0, -1.0).reshape(n * 2 * S, b)
        stats = statistic(np.einsum("ib,ib->b", sg, K @ sg))
        exceed += int(np.sum(stats >= observed - 1e-12))
        done += b
    return observed, (1 + exceed) / (1 + n_permutations)


class MMDTest(Adversary):
    """Kernel two-sample test (MMD^2, permutation p-value) on responses.

    ``kernel``: ``embedding`` (MiniLM), ``hamming`` or ``kspectrum`` (``k``, ``cumulative``);
    the last two read ``max_length`` ``unit``s of text and need no embeddings. ``samples``
    > 1 reads that many responses per prompt and model from ``context["run"]`` (``pairs``:
    which kernel entries count; see the module docstring).
    """

    name: ClassVar[str] = "mmd"
    kind: ClassVar[str] = "test"
    needs: ClassVar[frozenset[str]] = frozenset({"embeddings"})

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "kernel": one_of(*KERNELS),
        "max_length": at_least(1),
        "unit": one_of(*UNITS),
        "align": one_of(*ALIGNS),
        "n_permutations": at_least(1),
        "k": at_least(1),
        "cumulative": BOOLEAN,
        "samples": at_least(1),
        "pairs": one_of(*PAIRS),
    }

    def __init__(
        self,
        kernel: str = "embedding",
        max_length: int = 128,
        unit: str = "char",
        align: str = "start",
        n_permutations: int = 1000,
        k: int = 5,
        cumulative: bool = True,
        samples: int = 1,
        pairs: str = "cross",
        context: dict[str, Any] | None = None,
    ):
        self.kernel = kernel
        self.max_length = max_length
        self.unit = unit
        self.align = align
        self.n_permutations = n_permutations
        self.k = k
        self.cumulative = cumulative
        self.samples = samples
        self.pairs = pairs
        self.context = context

    def requires(self) -> frozenset[str]:
        return self.needs if self.kernel == "embedding" else frozenset()

    def preflight(self) -> None:
        """With ``samples`` > 1, fail before the sweep when the run cannot serve them."""
        self._check_design()
        if int(self.samples) > 1:
            self._sample_table()

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> MMDTest:
        """No-op: a two-sample test has nothing to learn."""
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        raise BbiError("mmd is a two-sample test: it gives a p-value, not per-item scores")

    # ---- the test ---------------------------------------------------------------------
    def _features(self, X: pd.DataFrame) -> np.ndarray:
        """Rows of the pooled sample (both models in one frame: word ids must be shared)."""
        if self.kernel in ("hamming", "kspectrum"):
            return encode_sequences(
                X["response"].astype(str).tolist(), int(self.max_length), self.unit, self.align
            )
        if "embedding" in X.columns:
            return np.stack([np.asarray(v, dtype=np.float32) for v in X["embedding"]])
        from bbi.similarity import encode_texts

        return encode_texts(X["response"].astype(str).tolist())

    def _gram(self, Z: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        if self.kernel == "hamming":
            return hamming_gram(Z, Z)
        if self.kernel == "kspectrum":
            return kspectrum_gram(Z, int(self.k), bool(self.cumulative))
        self.bandwidth_ = median_bandwidth(Z, rng)
        return gaussian_gram(Z, self.bandwidth_)

    def two_sample(
        self, X_teacher: pd.DataFrame, X_other: pd.DataFrame, rng: np.random.Generator
    ) -> dict[str, Any]:
        """MMD^2_u of teacher vs other responses and its permutation p-value.

        Paired (within-prompt swap) when both frames cover the same prompt ids once each;
        pooled label permutation otherwise. ``n`` = prompts (paired) or the smaller sample.
        """
        if self.kernel not in KERNELS:
            raise BbiError(
                f"mmd: unknown kernel {self.kernel!r}; choose one of {', '.join(KERNELS)}"
            )
        if self.n_permutations < 1:
            raise BbiError("mmd: n_permutations must be >= 1")
        if self.kernel == "kspectrum" and not 1 <= self.k <= self.max_length:
            raise BbiError(f"mmd: k must be in [1, max_length={self.max_length}], got {self.k}")
        rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
        if int(self.samples) > 1 or self.pairs != "cross":
            return self._multi_sample(X_teacher, X_other, rng)
        paired = _is_paired(X_teacher, X_other)
        if paired:
            X_other = X_other.set_index("prompt_id").loc[X_teacher["prompt_id"]].reset_index()
        Z = self._features(pd.concat([X_teacher, X_other], ignore_index=True))
        K = self._gram(Z, rng)
        m = len(X_teacher)
        if paired:
            stat, p = paired_mmd2_test(K, int(self.n_permutations), rng)
            n = m
        else:
            stat, p = unpaired_mmd2_test(K, m, int(self.n_permutations), rng)
            n = min(m, len(X_other))
        return {"statistic": stat, "p": float(p), "n": int(n)}

    # ---- several samples per prompt ------------------------------------------------------
    def _check_design(self) -> None:
        if self.pairs not in PAIRS:
            raise BbiError(f"mmd: pairs must be one of {', '.join(PAIRS)}, not {self.pairs!r}")
        if int(self.samples) < 2:
            if self.pairs != "cross":
                raise BbiError(f"mmd: pairs={self.pairs!r} needs samples >= 2")
            return
        ctx = self.context or {}
        if ctx.get("run") is None or not ctx.get("teacher") or not ctx.get("other"):
            raise BbiError(
                f"mmd: samples={self.samples} reads extra samples from the run; it needs "
                "context=dict(run=RunDir, teacher=alias, other=alias) (bbi attack passes it)"
            )

    def _sample_table(self) -> tuple[dict[str, pd.DataFrame], set[str]]:
        """Per model (``teacher``/``other``), the run's texts as a (prompt_id x sample)
        table of samples ``0..S-1``, and the prompts both models answered ``S`` times;
        read once per instance."""
        S = int(self.samples)
        ctx = self.context or {}
        key = (S, str(ctx["run"].path), ctx["teacher"], ctx["other"])
        cache = getattr(self, "_samples_cache", None)
        if cache is not None and cache[0] == key:
            return cache[1], cache[2]
        tables: dict[str, pd.DataFrame] = {}
        complete: set[str] | None = None
        for role in ("teacher", "other"):
            df = ctx["run"].responses(ctx[role])
            df = df[df["sample"].astype(int) < S]
            tab = df.pivot(index="prompt_id", columns="sample", values="text")
            full = set(tab.index[tab.notna().sum(axis=1) == S]) if tab.shape[1] == S else set()
            tables[role] = tab
            complete = full if complete is None else complete & full
        complete = complete or set()
        if len(complete) < 2:
            raise BbiError(
                f"mmd: samples={S} needs {S} responses per prompt from both models, but "
                f"{len(complete)} prompts of the run have them; generate them with "
                f"`bbi probe run --samples {S}`"
            )
        self._samples_cache = (key, tables, complete)
        return tables, complete

    def _sample_embeddings(self, pids: list[str]) -> np.ndarray:
        """MiniLM vectors of samples ``0..S-1`` per prompt and model, in ``_multi_sample``'s
        row order (cached per sample in the run's embeddings/)."""
        from bbi import similarity

        ctx = self.context or {}
        S = int(self.samples)
        if getattr(self, "_embedding_cache", None) is None:
            self._embedding_cache: dict[tuple[str, int], dict[str, np.ndarray]] = {}
        cache = self._embedding_cache
        for role in ("teacher", "other"):
            for s in range(S):
                if (ctx[role], s) not in cache:
                    cache[(ctx[role], s)] = similarity.embeddings_for(
                        ctx["run"], ctx[role], sample=s
                    )
        rows = [
            np.asarray(cache[(ctx[role], s)][pid], dtype=np.float32)
            for pid in pids
            for role in ("teacher", "other")
            for s in range(S)
        ]
        return np.stack(rows)

    def _multi_sample(
        self, X_teacher: pd.DataFrame, X_other: pd.DataFrame, rng: np.random.Generator
    ) -> dict[str, Any]:
        """The test on ``S`` samples per prompt of the first ``floor(n / S)`` bought prompts."""
        S = int(self.samples)
        self._check_design()
        if not _is_paired(X_teacher, X_other):
            raise BbiError(
                f"mmd: samples={S} needs both models' frames on the same prompts, once each"
            )
        n_bought = len(X_teacher)
        if n_bought // S < 2:
            raise BbiError(
                f"mmd: samples={S} needs at least {2 * S} bought prompts (a budget of "
                f"{4 * S} queries), got {n_bought}"
            )
        tables, complete = self._sample_table()
        t, o = tables["teacher"], tables["other"]
        used = X_teacher["prompt_id"].astype(str).tolist()[: n_bought // S]
        pids = [pid for pid in used if pid in complete]  # skipped, not replaced
        if len(pids) < 2:
            raise BbiError(
                f"mmd: samples={S}: only {len(pids)} of the {n_bought // S} prompts used have "
                f"{S} responses from both models; the run needs `bbi probe run --samples {S}`"
            )
        # Prompt-major rows: prompt i's S teacher samples, then its S other samples.
        texts = [str(tab.at[pid, s]) for pid in pids for tab in (t, o) for s in range(S)]
        if self.kernel == "embedding":
            Z = self._sample_embeddings(pids)
        else:
            Z = self._features(pd.DataFrame({"response": texts}))
        K = self._gram(Z, rng)
        stat, p = stratified_mmd2_test(K, S, int(self.n_permutations), rng, self.pairs)
        # What was read, for budget checks: 2 S floor(n / S) <= 2 n responses at most.
        self.design_ = {"prompts": len(pids), "samples": S, "responses": len(texts)}
        return {"statistic": stat, "p": float(p), "n": len(pids), "samples": S}


def _is_paired(A: pd.DataFrame, B: pd.DataFrame) -> bool:
    if "prompt_id" not in A.columns or "prompt_id" not in B.columns or len(A) != len(B):
        return False
    ia, ib = A["prompt_id"], B["prompt_id"]
    return ia.is_unique and ib.is_unique and set(ia) == set(ib)
