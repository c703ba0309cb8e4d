"""Loading one comparison: the teacher's and another model's paired responses, split.

``load_comparison`` reads a run directory into ``ComparisonData`` (train pool for the
acquisition strategies, pointwise item frames for the adversaries, optional MiniLM
embeddings); ``pairwise_frame`` turns item frames into one row per prompt in a seeded
order. Nothing here fits or scores anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bbi.errors import BbiError
from bbi.runstore import RunDir
from discriminators.acquisition import Pool, prompts_for_budget

# ---- data --------------------------------------------------------------------------------


@dataclass
class ComparisonData:
    """Items of one (teacher, other) comparison, laid out for fast subsetting.

    ``train_items``/``test_items``: pointwise frames, rows 2i (teacher, label 1) and 2i+1
    (other, label 0) for the i-th prompt of the split.
    """

    other: str
    role: str
    train: pd.DataFrame
    test: pd.DataFrame
    train_items: pd.DataFrame
    test_items: pd.DataFrame
    pool: Pool


def _items(rows: pd.DataFrame, other: str, emb: dict[str, dict] | None) -> pd.DataFrame:
    n = len(rows)
    rep = np.repeat(np.arange(n), 2)
    items = pd.DataFrame(
        {
            "prompt_id": rows["id"].to_numpy()[rep],
            "category": rows["category"].to_numpy()[rep],
            "prompt": rows["prompt"].to_numpy()[rep],
        }
    )
    resp = np.empty(2 * n, dtype=object)
    resp[0::2] = rows["teacher"].to_numpy()
    resp[1::2] = rows["other"].to_numpy()
    items["response"] = resp
    ids = np.empty(2 * n, dtype=object)
    ids[0::2] = [f"{p}::teacher" for p in rows["id"]]
    ids[1::2] = [f"{p}::{other}" for p in rows["id"]]
    items["item_id"] = ids
    items["label"] = np.tile([1, 0], n)
    if emb is not None:
        e = np.empty(2 * n, dtype=object)
        e[0::2] = [emb["teacher"][p] for p in rows["id"]]
        e[1::2] = [emb["other"][p] for p in rows["id"]]
        items["embedding"] = e
        items["prompt_embedding"] = [emb["prompt"][p] for p in items["prompt_id"]]
    return items


def load_comparison(
    run: RunDir,
    other: str,
    embeddings: bool = False,
    progress: bool = False,
    max_budget: int | None = None,
) -> ComparisonData:
    """Paired train/test data for teacher vs ``other``; user errors for unusable runs."""
    models = run.models()
    if other not in models:
        raise BbiError(f"{run.path}: no model {other!r} (known: {', '.join(models)})")
    teacher = run.teacher_alias()
    if other == teacher:
        raise BbiError(f"cannot compare the teacher {teacher!r} with itself")
    paired = run.paired(other)
    split = paired["split"].astype(str)
    n_train, n_test = int((split == "train").sum()), int((split == "test").sum())
    if n_test == 0:
        raise BbiError(f"{run.path}: no test items (suite split == 'test'); nothing to evaluate on")
    if n_train < 2:
        raise BbiError(f"{run.path}: fewer than 2 train prompts; nothing to buy")
    if max_budget is not None and prompts_for_budget(max_budget) > n_train:
        raise BbiError(
            f"budget {max_budget} exceeds the train pool: {n_train} prompts allow at most "
            f"{2 * n_train} queries (one query = one prompt to one model)"
        )
    emb = None
    if embeddings:
        from bbi.similarity import embeddings_for, prompt_embeddings

        emb = {
            "teacher": embeddings_for(run, teacher, progress=progress),
            "other": embeddings_for(run, other, progress=progress),
            "prompt": prompt_embeddings(run, progress=progress),
        }
    return comparison_from_paired(paired, other, str(models[other].get("role", "student")), emb)


def comparison_from_paired(
    paired: pd.DataFrame, other: str, role: str = "student", emb: dict[str, dict] | None = None
) -> ComparisonData:
    """ComparisonData from a ``RunDir.paired``-shaped frame (id, category, split, prompt,
    teacher, other); ``emb`` optionally maps teacher/other/prompt -> {prompt_id: vector}."""
    split = paired["split"].astype(str)
    train = paired[split == "train"].reset_index(drop=True)
    test = paired[split == "test"].reset_index(drop=True)
    pool = Pool(
        prompt_ids=train["id"].to_numpy(),
        categories=train["category"].astype(str).to_numpy(),
        prompts=train["prompt"].astype(str).tolist(),
        teacher=train["teacher"].tolist(),
        other=train["other"].tolist(),
    )
    return ComparisonData(
        other=other,
        role=role,
        train=train,
        test=test,
        train_items=_items(train, other, emb),
        test_items=_items(test, other, emb),
        pool=pool,
    )


def pairwise_frame(items: pd.DataFrame, a_is_teacher: np.ndarray) -> pd.DataFrame:
    """One row per prompt from a pointwise frame (2i teacher, 2i+1 other) and an orientation."""
    t = items.iloc[0::2].reset_index(drop=True)
    o = items.iloc[1::2].reset_index(drop=True)
    a_is_teacher = np.asarray(a_is_teacher, dtype=bool)
    out = t[["prompt_id", "category", "prompt"]].copy()
    for col, name in (("response", "response"), ("item_id", "item_id"), ("embedding", "embedding")):
        if col not in items.columns:
            continue
        out[f"{name}_a"] = np.where(a_is_teacher, t[col].to_numpy(), o[col].to_numpy())
        out[f"{name}_b"] = np.where(a_is_teacher, o[col].to_numpy(), t[col].to_numpy())
    if "prompt_embedding" in items.columns:
        out["prompt_embedding"] = t["prompt_embedding"].to_numpy()
    return out


def interleave(prompts: np.ndarray) -> np.ndarray:
    prompts = np.asarray(prompts, dtype=int)
    return np.stack([2 * prompts, 2 * prompts + 1], axis=1).ravel()
