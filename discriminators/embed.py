"""``embed``: all-MiniLM-L6-v2 sentence embeddings + logistic regression (or a small MLP).

Sees meaning and style beyond n-grams. Features per item: the response embedding and its
elementwise product with the prompt embedding (how the response relates to the prompt;
the prompt alone carries no label information since both models answer the same prompts).
Hyperparameters are fixed (standardised features, C = 0.1), never tuned on test data.
Embeddings come precomputed from the attack (``bbi.similarity`` caches them in the run
dir) or are encoded on the fly when a frame lacks them.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bbi.errors import BbiError
from discriminators.base import POSITIVE, SEED, Adversary, ItemFeatureCache, one_of

MODELS = ("logreg", "mlp")


def _stack(col: pd.Series) -> np.ndarray:
    return np.stack([np.asarray(v, dtype=np.float32) for v in col])


def _encode_unique(texts: list[str]) -> np.ndarray:
    from bbi.similarity import encode_texts

    uniq, inverse = np.unique(np.asarray(texts, dtype=object).astype(str), return_inverse=True)
    return encode_texts(uniq.tolist())[inverse]


def embedding_features(items: pd.DataFrame) -> np.ndarray:
    """[response embedding, response * prompt embedding] per item."""
    if "embedding" in items.columns:
        resp = _stack(items["embedding"])
    else:
        resp = _encode_unique(items["response"].astype(str).tolist())
    if "prompt_embedding" in items.columns:
        prm = _stack(items["prompt_embedding"])
    else:
        prm = _encode_unique(items["prompt"].astype(str).tolist())
    return np.hstack([resp, resp * prm]).astype(np.float64)


def make_classifier(model: str, C: float, random_state: int):
    """Fixed-hyperparameter classifier on dense embedding features (no test-set tuning)."""
    if model == "logreg":
        clf = LogisticRegression(C=C, tol=1e-3, max_iter=2000, random_state=random_state)
    elif model == "mlp":
        clf = MLPClassifier(
            hidden_layer_sizes=(64,),
            alpha=1e-2,
            max_iter=300,
            early_stopping=False,
            random_state=random_state,
        )
    else:
        raise BbiError(f"embed: unknown model {model!r}; choose one of {', '.join(MODELS)}")
    return make_pipeline(StandardScaler(), clf)


class EmbedAdversary(ItemFeatureCache, Adversary):
    """Classifier on MiniLM embeddings of the response (and its interaction with the prompt)."""

    name: ClassVar[str] = "embed"
    kind: ClassVar[str] = "pointwise"
    needs: ClassVar[frozenset[str]] = frozenset({"embeddings"})

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "model": one_of(*MODELS),
        "C": POSITIVE,
        "random_state": SEED,
    }

    def __init__(self, model: str = "logreg", C: float = 0.1, random_state: int = 0):
        self.model = model
        self.C = C
        self.random_state = random_state

    def _item_features(self, items: pd.DataFrame) -> dict[str, Any]:
        return {"emb": embedding_features(items)}

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> EmbedAdversary:
        F = self._features(X)["emb"]
        self.model_ = make_classifier(self.model, self.C, self.random_state)
        self.model_.fit(F, np.asarray(y).astype(int))
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        return self.model_.predict_proba(self._features(X)["emb"])[:, 1]
