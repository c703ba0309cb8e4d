"""``likelihood``: how a reference LM scores each response, + logistic regression.

A distilled student imitates its teacher's text but not its token-level confidence: under
the teacher as reference, the teacher's own samples have the typical log-probability of
a sample (about minus the entropy per token), while a student's responses are "surprising"
in measurable ways (lower log-probability, more non-argmax tokens, a different
logprob/entropy balance). The reference is any model spec that can ``score`` given
responses (hf:, zoo:); by default the run's teacher, which makes this a *gray-box*
adversary (it queries the teacher's probabilities, not just its samples); ``notes`` says so
and the attack copies it into the results.

Features per response (``FEATURE_NAMES``): token count; mean, std, min and 10/25/50/75/90%
quantiles of token logprobs; mean entropy; mean (surprise - entropy), the Fast-DetectGPT-
style normalised surprise; fraction of rank-1 tokens; mean log rank. Standardised, then
logistic regression, both fit on bought items only.

Token scores are label-free and expensive, so they are cached in the run directory,
``attack/cache/likelihood-<reference fingerprint[:12]>.jsonl``, one record per distinct
(prompt, response) text; a budget sweep (and every later sweep with the same reference)
scores each response once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from bbi.errors import BbiError
from bbi.runstore import append_jsonl, read_jsonl
from discriminators.base import BOOLEAN, POSITIVE, SEED, Adversary, pair_items

QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
FEATURE_NAMES: tuple[str, ...] = (
    "n_tokens_log1p",
    "logprob_mean",
    "logprob_std",
    "logprob_min",
    *(f"logprob_q{int(q * 100)}" for q in QUANTILES),
    "entropy_mean",
    "surprise_minus_entropy",
    "rank1_fraction",
    "log_rank_mean",
)
GRAY_BOX_NOTE = (
    "gray-box: reference LM is the teacher; its token probabilities are queried outside "
    "the budget q"
)
_SCORE_CHUNK = 64


def token_features(
    logprobs: Sequence[float], entropies: Sequence[float], ranks: Sequence[int]
) -> np.ndarray:
    """The feature vector of one response (all zeros but the length for an empty one)."""
    lp = np.asarray(logprobs, dtype=np.float64)
    ent = np.asarray(entropies, dtype=np.float64)
    rk = np.asarray(ranks, dtype=np.float64)
    n = len(lp)
    if not (len(ent) == n == len(rk)):
        raise BbiError("token scores: logprobs, entropies and ranks differ in length")
    if n == 0:
        return np.zeros(len(FEATURE_NAMES))
    return np.array(
        [
            np.log1p(n),
            lp.mean(),
            lp.std(),
            lp.min(),
            *np.quantile(lp, QUANTILES),
            ent.mean(),
            (-lp - ent).mean(),
            float(np.mean(rk == 1)),
            np.log(np.maximum(rk, 1)).mean(),
        ]
    )


def _key(prompt: str, response: str) -> str:
    return hashlib.sha256(f"{prompt}\x00{response}".encode()).hexdigest()[:24]


class LikelihoodAdversary(Adversary):
    """Reference-LM token-probability features + logistic regression."""

    name: ClassVar[str] = "likelihood"
    kind: ClassVar[str] = "pointwise"
    needs: ClassVar[frozenset[str]] = frozenset({"backend"})
    notes: str | None = None

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "C": POSITIVE,
        "random_state": SEED,
        "progress": BOOLEAN,
        "model_args": [str, None],
    }

    def __init__(
        self,
        reference: Any = None,
        C: float = 1.0,
        random_state: int = 0,
        progress: bool = True,
        model_args: str | None = None,
        context: dict[str, Any] | None = None,
    ):
        self.reference = reference
        self.C = C
        self.random_state = random_state
        self.progress = progress
        self.model_args = model_args
        self.context = context
        self.notes = GRAY_BOX_NOTE if self._reference_is_teacher() else None

    # ---- the reference model and its score cache -------------------------------------
    def _teacher_spec(self) -> str | None:
        ctx = self.context or {}
        run, teacher = ctx.get("run"), ctx.get("teacher")
        if run is None or teacher is None:
            return None
        return (run.models().get(teacher) or {}).get("spec")

    def _reference_is_teacher(self) -> bool:
        if self.reference is None:
            return True
        teacher = self._teacher_spec()
        return isinstance(self.reference, str) and teacher is not None and self.reference == teacher

    def _reference(self) -> Any:
        """The reference model (a spec string or a backend); BbiError if none can score."""
        ref = self.reference if self.reference is not None else self._teacher_spec()
        if ref is None:
            raise BbiError(
                "likelihood: no reference model; pass reference=SPEC (an hf: or zoo: model) "
                "or record the teacher's spec in run.yaml"
            )
        if isinstance(ref, str):
            from bbi.specs import imported_error, is_imported, parse_spec

            hint = (
                "pass a model that can score responses with "
                "--param likelihood.reference=SPEC (an hf: or zoo: spec)"
            )
            if is_imported(ref):
                raise imported_error(ref, "likelihood", hint)
            if not parse_spec(ref).can("score"):
                raise BbiError(
                    f"likelihood: {ref!r} is a model whose backend cannot score given "
                    f"responses (e.g. a chat-completions endpoint); {hint}"
                )
        return ref

    def preflight(self) -> None:
        """Resolve the reference spec now, so a run without a usable one fails up front."""
        ref = self._reference()
        if isinstance(ref, str):
            self._backend_options(ref)  # a bad model_args fails before the sweep

    def _backend(self) -> Any:
        if getattr(self, "backend_", None) is not None:
            return self.backend_
        ref = self._reference()
        if isinstance(ref, str):
            from bbi.backends import load_backend

            self.backend_ = load_backend(ref, **self._backend_options(ref))
        else:  # an already loaded backend (anything with score() and a fingerprint)
            self.backend_ = ref
        if not callable(getattr(self.backend_, "score", None)):
            raise BbiError("likelihood: the reference backend cannot score responses")
        self._load_cache()
        return self.backend_

    def _cache_path(self):
        run = (self.context or {}).get("run")
        fp = str(getattr(self.backend_, "fingerprint", "") or "")
        if run is None or not fp:
            return None
        safe = "".join(c for c in fp.split(":")[-1] if c.isalnum())[:12]
        safe = safe or hashlib.sha256(fp.encode()).hexdigest()[:12]
        return run.attack_dir / "cache" / f"likelihood-{safe}.jsonl"

    def _load_cache(self) -> None:
        self.scores_: dict[str, np.ndarray] = {}
        path = self._cache_path()
        if path is not None and path.exists():
            for rec in read_jsonl(path, allow_torn_tail=True):
                self.scores_[rec["key"]] = token_features(
                    rec["logprobs"], rec["entropies"], rec["ranks"]
                )

    def _features(self, items: pd.DataFrame) -> np.ndarray:
        """Feature rows for pointwise items, scoring (and caching) only unseen texts."""
        from tqdm.auto import tqdm

        self._backend()
        prompts = items["prompt"].astype(str).tolist()
        responses = items["response"].astype(str).tolist()
        keys = [_key(p, r) for p, r in zip(prompts, responses, strict=True)]
        todo: dict[str, int] = {}
        for i, k in enumerate(keys):
            if k not in self.scores_ and k not in todo:
                todo[k] = i
        if todo:
            path = self._cache_path()
            idx = list(todo.values())
            with tqdm(
                total=len(idx), desc="likelihood scoring", disable=not self.progress, leave=False
            ) as bar:
                for start in range(0, len(idx), _SCORE_CHUNK):
                    chunk = idx[start : start + _SCORE_CHUNK]
                    scored = self.backend_.score(
                        [prompts[i] for i in chunk], [responses[i] for i in chunk]
                    )
                    recs = []
                    for i, ts in zip(chunk, scored, strict=True):
                        # Rounded before use, so cached and fresh scores give equal features.
                        rec = {
                            "key": keys[i],
                            "logprobs": [round(float(v), 5) for v in ts.logprobs],
                            "entropies": [round(float(v), 5) for v in ts.entropies],
                            "ranks": [int(v) for v in ts.ranks],
                        }
                        self.scores_[keys[i]] = token_features(
                            rec["logprobs"], rec["entropies"], rec["ranks"]
                        )
                        recs.append(rec)
                    if path is not None:
                        append_jsonl(path, recs)
                    bar.update(len(chunk))
        return (
            np.stack([self.scores_[k] for k in keys]) if keys else np.zeros((0, len(FEATURE_NAMES)))
        )

    # ---- protocol ---------------------------------------------------------------------
    def prepare(self, X_all: pd.DataFrame) -> LikelihoodAdversary:
        """Score every response of the sweep once (label-free); fit still sees only bought items."""
        items = pair_items(X_all) if "response_a" in X_all.columns else X_all
        self._features(items.drop_duplicates(["prompt", "response"]))
        return self

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> LikelihoodAdversary:
        y = np.asarray(y, dtype=int)
        if len(np.unique(y)) < 2:
            raise BbiError("likelihood: training data must contain both teacher and other items")
        self.notes = GRAY_BOX_NOTE if self._reference_is_teacher() else None
        self.model_ = make_pipeline(
            StandardScaler(),
            LogisticRegression(C=float(self.C), max_iter=2000, random_state=self.random_state),
        ).fit(self._features(X), y)
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        if not hasattr(self, "model_"):
            raise BbiError("likelihood: predict_proba called before fit")
        return self.model_.predict_proba(self._features(X))[:, 1]
