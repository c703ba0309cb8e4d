"""``example_length``: logistic regression on response length and punctuation counts.

A real, small adversary written against bbi's public protocol only
(``discriminators.base.Adversary``): explicit ``__init__`` keywords (so ``clone`` and
``get_params`` work), sklearn-style constraints (so ``--param example_length.C=-1`` fails
before any work), nothing learned outside ``fit``.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from discriminators.base import POSITIVE, SEED, Adversary

PUNCTUATION = ".,;:!?-()\"'\n"


def length_features(texts: list[str]) -> np.ndarray:
    """Per text: log characters, log words, then the count of each punctuation mark."""
    rows = []
    for t in texts:
        t = str(t)
        rows.append(
            [np.log1p(len(t)), np.log1p(len(t.split()))] + [t.count(c) for c in PUNCTUATION]
        )
    return np.asarray(rows, dtype=float).reshape(len(rows), 2 + len(PUNCTUATION))


class LengthAdversary(Adversary):
    """P(teacher) from how long a response is and how it punctuates."""

    name: ClassVar[str] = "example_length"
    kind: ClassVar[str] = "pointwise"
    _parameter_constraints: ClassVar[dict[str, list]] = {"C": POSITIVE, "random_state": SEED}

    def __init__(self, C: float = 1.0, random_state: int = 0):
        self.C = C
        self.random_state = random_state

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> LengthAdversary:
        F = length_features(X["response"].tolist())
        self.scaler_ = StandardScaler().fit(F)
        self.clf_ = LogisticRegression(C=self.C, max_iter=1000, random_state=self.random_state)
        self.clf_.fit(self.scaler_.transform(F), np.asarray(y, dtype=int))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        F = self.scaler_.transform(length_features(X["response"].tolist()))
        return self.clf_.predict_proba(F)[:, 1]
