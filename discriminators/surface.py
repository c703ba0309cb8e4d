"""``surface``: hand-made surface statistics of a response + logistic regression.

The cheapest adversary and the one that catches the classic distillation artifacts:
length, layout (lines, bullets, headers, code fences), punctuation habits, casing and
vocabulary richness. Features are per-response and label-free (cached per sweep); the
scaler and the classifier are fit on bought items only.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from discriminators.base import (
    POSITIVE,
    SEED,
    Adversary,
    ItemFeatureCache,
    memo_texts,
)

_PATTERNS: dict[str, re.Pattern[str]] = {
    "periods": re.compile(r"\."),
    "commas": re.compile(r","),
    "exclaims": re.compile(r"!"),
    "questions": re.compile(r"\?"),
    "colons": re.compile(r":"),
    "semicolons": re.compile(r";"),
    "parens": re.compile(r"[()\[\]{}]"),
    "quotes": re.compile(r"[\"'`]"),
    "dashes": re.compile(r"[-\u2013\u2014]"),
    "asterisks": re.compile(r"\*"),
    "headers": re.compile(r"(?m)^\s*#+\s"),
    "bullets": re.compile(r"(?m)^\s*[-*+\u2022]\s"),
    "numbered": re.compile(r"(?m)^\s*\d+[.)]\s"),
    "code_fences": re.compile(r"```"),
    "sentences": re.compile(r"[.!?]+(?:\s|$)"),
    "upper_words": re.compile(r"\b[A-Z]{2,}\b"),
    "numbers": re.compile(r"\d+(?:\.\d+)?"),
}

FEATURE_NAMES: tuple[str, ...] = (
    "chars",
    "words",
    "lines",
    "blank_lines",
    "mean_word_len",
    "type_token_ratio",
    "digit_ratio",
    "caps_ratio",
    "space_ratio",
    "non_ascii_ratio",
    "starts_upper",
    "ends_punct",
    "trailing_ws",
    *(f"n_{k}" for k in _PATTERNS),
)


_LETTER = re.compile(r"[^\W\d_]")
_DIGIT = re.compile(r"\d")
_UPPER = re.compile(r"[A-Z\u00c0-\u00de]")
_SPACE = re.compile(r"\s")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _count(pattern: re.Pattern[str], text: str) -> int:
    # Counting via subn avoids building match lists: the hot loop of this module.
    return pattern.subn("", text)[1]


@memo_texts
def surface_features(texts: Sequence[str]) -> np.ndarray:
    """(n, len(FEATURE_NAMES)) float matrix; counts are log1p-scaled, ratios kept in [0, 1]."""
    out = np.zeros((len(texts), len(FEATURE_NAMES)), dtype=np.float64)
    for i, t in enumerate(texts):
        t = str(t)
        n = len(t)
        words = t.split()
        nw = len(words)
        lines = t.split("\n")
        letters = _count(_LETTER, t)
        stripped = t.strip()
        row = [
            np.log1p(n),
            np.log1p(nw),
            np.log1p(len(lines)),
            np.log1p(sum(1 for ln in lines if not ln.strip())),
            (sum(map(len, words)) / nw) if nw else 0.0,
            (len(set(t.lower().split())) / nw) if nw else 0.0,
            (_count(_DIGIT, t) / n) if n else 0.0,
            (_count(_UPPER, t) / letters) if letters else 0.0,
            (_count(_SPACE, t) / n) if n else 0.0,
            (_count(_NON_ASCII, t) / n) if n else 0.0,
            float(bool(stripped) and stripped[0].isupper()),
            float(bool(stripped) and stripped[-1] in ".!?"),
            float(n > 0 and t[-1].isspace()),
        ]
        row.extend(np.log1p(_count(p, t)) for p in _PATTERNS.values())
        out[i] = row
    return out


class SurfaceAdversary(ItemFeatureCache, Adversary):
    """Logistic regression on standardised surface statistics of the response."""

    name: ClassVar[str] = "surface"
    kind: ClassVar[str] = "pointwise"

    _parameter_constraints: ClassVar[dict[str, list]] = {"C": POSITIVE, "random_state": SEED}

    def __init__(self, C: float = 1.0, random_state: int = 0):
        self.C = C
        self.random_state = random_state

    def _item_features(self, items: pd.DataFrame) -> dict[str, Any]:
        return {"surface": surface_features(items["response"].astype(str).tolist())}

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> SurfaceAdversary:
        F = self._features(X)["surface"]
        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=self.C, max_iter=2000, random_state=self.random_state),
        ).fit(F, np.asarray(y).astype(int))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict_proba(self._features(X)["surface"])[:, 1]

    def coefficients(self) -> dict[str, float]:
        """Standardised weights per feature (positive = more teacher-like), for reports."""
        coef = self.model_[-1].coef_[0]
        return dict(zip(FEATURE_NAMES, (float(c) for c in coef), strict=True))
