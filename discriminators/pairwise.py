"""``pairwise`` / ``pairwise_embed``: teacher identification from (prompt, A, B).

One response from each model, in a seeded random order; the adversary says which one is
the teacher's. Features are the difference of the two responses' feature vectors
(``pairwise``: standardised surface statistics + tf-idf n-grams; ``pairwise_embed``:
MiniLM embeddings). The classifier is antisymmetric by construction (no intercept; the loss is
the same as training on every pair in both orders), so P(A is teacher) = 1 - P(B is teacher) and the
presentation order cannot be exploited. eps = 2*acc - 1 (``bbi.stats.pairwise_contrib``).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import TfidfTransformer
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from discriminators.base import POSITIVE, SEED, Adversary, ItemFeatureCache, pair_items
from discriminators.embed import embedding_features
from discriminators.surface import surface_features
from discriminators.tfidf import hashed_counts


class _PairwiseBase(ItemFeatureCache, Adversary):
    kind: ClassVar[str] = "pairwise"

    _parameter_constraints: ClassVar[dict[str, list]] = {"C": POSITIVE, "random_state": SEED}

    def __init__(self, C: float = 1.0, random_state: int = 0):
        self.C = C
        self.random_state = random_state

    # subclasses: _fit_transform(blocks) on all train items, _transform(blocks)
    def _split(self, X: pd.DataFrame) -> tuple[dict[str, Any], dict[str, Any]]:
        blocks = self._features(pair_items(X))
        n = len(X)
        return ({k: v[:n] for k, v in blocks.items()}, {k: v[n:] for k, v in blocks.items()})

    def _diff(self, a: Any, b: Any) -> Any:
        return a - b

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> _PairwiseBase:
        a, b = self._split(X)
        self._fit_transform({k: _vstack(a[k], b[k]) for k in a})
        D = self._diff(self._transform(a), self._transform(b))
        y = np.asarray(y).astype(int)
        # Without an intercept the logistic loss of (-D, 1-y) equals that of (D, y), so
        # training on both orders is the same as training once with C doubled.
        self.model_ = LogisticRegression(
            C=2 * self.C,
            fit_intercept=False,
            max_iter=2000,
            random_state=self.random_state,
            solver="liblinear",
            dual=True,
            tol=1e-3,
        )
        if len(np.unique(y)) < 2:  # all pairs in one order: add the swapped copies
            self.model_.set_params(C=self.C).fit(_vstack(D, -D), np.concatenate([y, 1 - y]))
        else:
            self.model_.fit(D, y)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        a, b = self._split(X)
        D = self._diff(self._transform(a), self._transform(b))
        return self.model_.predict_proba(D)[:, 1]


def _vstack(a: Any, b: Any) -> Any:
    return sp.vstack([a, b], format="csr") if sp.issparse(a) else np.vstack([a, b])


class PairwiseAdversary(_PairwiseBase):
    """Pairwise identification on surface + tf-idf feature differences."""

    name: ClassVar[str] = "pairwise"

    def _item_features(self, items: pd.DataFrame) -> dict[str, Any]:
        texts = items["response"].astype(str).tolist()
        return {"surface": surface_features(texts), "counts": hashed_counts(texts)}

    def _fit_transform(self, blocks: dict[str, Any]) -> None:
        self.scaler_ = StandardScaler().fit(blocks["surface"])
        self.tfidf_ = TfidfTransformer(sublinear_tf=True).fit(blocks["counts"])

    def _transform(self, blocks: dict[str, Any]) -> sp.csr_matrix:
        return sp.hstack(
            [
                sp.csr_matrix(self.scaler_.transform(blocks["surface"])),
                self.tfidf_.transform(blocks["counts"]),
            ],
            format="csr",
        )


class PairwiseEmbedAdversary(_PairwiseBase):
    """Pairwise identification on MiniLM embedding differences."""

    name: ClassVar[str] = "pairwise_embed"
    needs: ClassVar[frozenset[str]] = frozenset({"embeddings"})

    def __init__(self, C: float = 0.1, random_state: int = 0):
        super().__init__(C=C, random_state=random_state)

    def _item_features(self, items: pd.DataFrame) -> dict[str, Any]:
        return {"emb": embedding_features(items)}

    def _fit_transform(self, blocks: dict[str, Any]) -> None:
        # Centring cancels in a - b, so only the scale matters.
        self.scaler_ = StandardScaler(with_mean=False).fit(blocks["emb"])

    def _transform(self, blocks: dict[str, Any]) -> np.ndarray:
        return self.scaler_.transform(blocks["emb"])
