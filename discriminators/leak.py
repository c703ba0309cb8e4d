"""Where the student gives itself away, measured on the TRAIN split only.

Attack-guided distillation (``bbi distill ... --guide category|prompt``) spends the
training budget where an adversary tells teacher and student apart. The attack proper
reports test-split numbers, which must never steer training; this module runs the same
adversaries by K-fold cross-fitting over the train prompts instead: every train prompt is
scored by an adversary fitted on the other folds, so each prompt's leak is out-of-fold and
the test split is not read at all.

A prompt's *leak* is the adversary's margin toward the right answer, the same margin the
attack's example table shows: ``P(teacher | teacher's response) - P(teacher | student's)``
for a pointwise adversary, ``2 P(correct order) - 1`` for a pairwise one. It lies in
[-1, 1]; its mean over a category estimates that category's distinguishing advantage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from bbi import stats
from bbi.errors import BbiError
from bbi.runstore import RunDir


@dataclass
class TrainLeak:
    """Out-of-fold leak per train prompt (``prompts``: prompt_id, category, leak) and how."""

    prompts: pd.DataFrame
    adversary: str
    other: str
    folds: int
    seed: int

    def by_category(self) -> dict[str, dict[str, float | int]]:
        """Mean leak and prompt count per category (sorted by name)."""
        g = self.prompts.groupby("category", sort=True)["leak"]
        return {str(c): {"leak": float(v.mean()), "n_prompts": int(len(v))} for c, v in g}


def fold_of(categories: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """A seeded fold per prompt, balanced within each category (stratified K-fold)."""
    return stats.stratified_folds(categories, folds, seed)


def train_leak(
    run: RunDir,
    other: str,
    adversary: str = "tfidf",
    folds: int = 5,
    seed: int = 0,
    params: dict[str, Any] | None = None,
) -> TrainLeak:
    """Cross-fitted leak of every train prompt between the run's teacher and ``other``."""
    from discriminators.base import adversary_class, check_params, get_adversary
    from discriminators.comparison import load_comparison, pairwise_frame

    try:
        cls = adversary_class(adversary)
    except BbiError as exc:
        raise BbiError(f"--guide-adversary: {exc}") from None
    if cls.kind == "test":
        raise BbiError(
            f"--guide-adversary {adversary}: a two-sample test scores no prompt; "
            "use a pointwise or pairwise adversary (e.g. tfidf)"
        )
    check_params(adversary, params or {}, flag="--guide-adversary")
    needs = get_adversary(adversary, **(params or {})).requires()
    data = load_comparison(run, other, embeddings="embeddings" in needs)
    items = data.train_items
    n = len(data.train)
    if n < 2 * folds:
        raise BbiError(
            f"{run.path}: {n} train prompts answered by both the teacher and {other!r}; "
            f"--guide-folds {folds} needs at least {2 * folds}"
        )
    cats = data.train["category"].astype(str).to_numpy()
    fold = fold_of(cats, folds, seed)
    a_is_teacher = np.random.default_rng([seed, 104729]).random(n) < 0.5
    leak = np.empty(n, dtype=float)
    context = {
        "run": run,
        "teacher": run.teacher_alias(),
        "other": other,
        "backend_options": {},
        "seed": seed,
    }
    adv = get_adversary(adversary, context=context, **(params or {}))
    if "random_state" in adv.get_params(deep=False):
        adv.set_params(random_state=seed)
    adv.prepare(items)  # label-free features, once
    for f in range(folds):
        held = fold == f
        rows = np.stack([2 * np.flatnonzero(~held), 2 * np.flatnonzero(~held) + 1], 1).ravel()
        fit_items = items.iloc[rows].reset_index(drop=True)
        held_rows = np.stack([2 * np.flatnonzero(held), 2 * np.flatnonzero(held) + 1], 1).ravel()
        held_items = items.iloc[held_rows].reset_index(drop=True)
        if cls.kind == "pointwise":
            adv.fit(fit_items, fit_items["label"].to_numpy())
            s = np.asarray(adv.predict_proba(held_items), dtype=float)
            leak[held] = s[0::2] - s[1::2]
        else:
            orient_fit = a_is_teacher[~held]
            adv.fit(pairwise_frame(fit_items, orient_fit), orient_fit.astype(int))
            orient = a_is_teacher[held]
            p = np.asarray(adv.predict_proba(pairwise_frame(held_items, orient)), dtype=float)
            leak[held] = 2 * np.where(orient, p, 1 - p) - 1
    if not np.all(np.isfinite(leak)):
        raise BbiError(f"--guide-adversary {adversary}: produced non-finite scores")
    prompts = pd.DataFrame(
        {"prompt_id": data.train["id"].astype(str).to_numpy(), "category": cats, "leak": leak}
    )
    return TrainLeak(prompts, adversary=adversary, other=other, folds=folds, seed=seed)


def guide_weights(
    leak: TrainLeak, prompt_ids: list[str], categories: list[str], mode: str, mix: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """Sampling weights for training examples, and a summary for the record.

    A fraction ``1 - mix`` of the sampling mass stays uniform over examples (every example
    can still be drawn); ``mix`` goes by leak: per category (``mode="category"``, each
    category's share proportional to its positive mean leak, spread evenly over its
    examples) or per prompt (``mode="prompt"``, proportional to the prompt's positive leak;
    a prompt the adversary did not score takes its category's mean). No positive leak
    anywhere: the guided part is uniform too.
    """
    if mode not in ("category", "prompt"):
        raise ValueError(f"unknown guide mode {mode!r}")
    n = len(prompt_ids)
    if n == 0:
        raise BbiError("no training examples to weight")
    pids = np.asarray(prompt_ids, dtype=object)
    cats = np.asarray(categories, dtype=object)
    cat_leak = {c: v["leak"] for c, v in leak.by_category().items()}
    overall = float(leak.prompts["leak"].mean())
    per_cat = np.array([cat_leak.get(c, overall) for c in cats], dtype=float)
    if mode == "category":
        pos = np.clip(per_cat, 0, None)
        _, inverse, counts = np.unique(cats.astype(str), return_inverse=True, return_counts=True)
        score = pos / counts[inverse]  # a category's mass shared by its examples
    else:
        by_prompt = dict(zip(leak.prompts["prompt_id"], leak.prompts["leak"], strict=True))
        per_prompt = np.array(
            [by_prompt.get(p, pc) for p, pc in zip(pids, per_cat, strict=True)], dtype=float
        )
        _, inverse, counts = np.unique(pids.astype(str), return_inverse=True, return_counts=True)
        score = np.clip(per_prompt, 0, None) / counts[inverse]
    total = score.sum()
    guided = score / total if total > 0 else np.full(n, 1.0 / n)
    weights = (1 - mix) / n + mix * guided
    shares = {}
    for c in sorted(set(cats.tolist())):
        m = cats == c
        shares[str(c)] = {
            "leak": float(cat_leak.get(c, overall)),
            "n_examples": int(m.sum()),
            "uniform_share": float(m.mean()),
            "share": float(weights[m].sum()),
        }
    summary = {
        "mode": mode,
        "mix": float(mix),
        "adversary": leak.adversary,
        "measured_on": leak.other,
        "folds": leak.folds,
        "seed": leak.seed,
        "split": "train",
        "mean_leak": overall,
        "no_positive_leak": bool(total <= 0),
        "categories": shares,
    }
    return weights, summary


__all__ = ["TrainLeak", "fold_of", "guide_weights", "train_leak"]
