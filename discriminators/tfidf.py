"""``tfidf``: word 1-2-gram and character 2-4-gram tf-idf + logistic regression.

Catches lexical habits (favourite phrases, formatting tokens, tokenizer quirks) that
surface statistics average away. n-grams are hashed (no vocabulary to fit, so the
per-item counts are label-free and cached once per sweep); the idf weights and the
classifier are fit on bought items only, so nothing about unbought responses leaks in.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer, TfidfTransformer
from sklearn.linear_model import LogisticRegression

from discriminators.base import (
    POSITIVE,
    SEED,
    Adversary,
    ItemFeatureCache,
    memo_texts,
)

N_FEATURES = 2**18


@memo_texts
def hashed_counts(
    texts: Sequence[str], n_features: int = N_FEATURES, chars: bool = True
) -> sp.csr_matrix:
    """Raw counts of word 1-2-grams and char_wb 2-4-grams, hashed; one CSR row per text.

    ``chars=False`` keeps only the word n-grams (fewer non-zeros, for quick internal models).
    """
    texts = [str(t) for t in texts]
    word = HashingVectorizer(
        analyzer="word",
        ngram_range=(1, 2),
        n_features=n_features,
        alternate_sign=False,
        norm=None,
        lowercase=True,
        token_pattern=r"(?u)\b\w+\b|[^\w\s]",
    )
    char = HashingVectorizer(
        analyzer="char_wb",
        ngram_range=(2, 4),
        n_features=n_features,
        alternate_sign=False,
        norm=None,
        lowercase=False,
    )
    if not chars:
        return word.transform(texts).tocsr()
    return sp.hstack([word.transform(texts), char.transform(texts)], format="csr")


class TfidfAdversary(ItemFeatureCache, Adversary):
    """Logistic regression on sublinear tf-idf of hashed word and char n-grams."""

    name: ClassVar[str] = "tfidf"
    kind: ClassVar[str] = "pointwise"

    _parameter_constraints: ClassVar[dict[str, list]] = {"C": POSITIVE, "random_state": SEED}

    def __init__(self, C: float = 4.0, random_state: int = 0):
        self.C = C
        self.random_state = random_state

    def _item_features(self, items: pd.DataFrame) -> dict[str, Any]:
        return {"counts": hashed_counts(items["response"].astype(str).tolist())}

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> TfidfAdversary:
        counts = self._features(X)["counts"]
        self.tfidf_ = TfidfTransformer(sublinear_tf=True).fit(counts)
        self.model_ = LogisticRegression(
            C=self.C,
            solver="liblinear",
            dual=True,
            tol=1e-3,
            max_iter=2000,
            random_state=self.random_state,
        ).fit(self.tfidf_.transform(counts), np.asarray(y).astype(int))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        counts = self._features(X)["counts"]
        return self.model_.predict_proba(self.tfidf_.transform(counts))[:, 1]
