"""What every distiller trains on: the teacher's train-split (prompt, response) pairs.

Data enters distillation here and only here, so the TEST split of the probe suite can
never leak into training; the held-out eval set is carved out of the train split by
prompt id. Examples are tokenized in exactly the prompt format the probe uses
(``bbi.chat.format_prompt`` / ``response_suffix``), so what a student learns is what
``bbi probe`` will later ask of it.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from bbi.chat import format_prompt, response_suffix
from bbi.errors import BbiError
from bbi.runstore import RunDir

IGNORE_INDEX = -100


def distillation_pairs(run: RunDir, teacher_alias: str | None = None) -> pd.DataFrame:
    """The teacher's (prompt, response) pairs on the TRAIN split, every sample.

    Test prompts are dropped here, the one place data enters distillation, so nothing
    downstream can leak them into training. Columns: prompt_id, sample, split, category,
    prompt, response.
    """
    teacher_alias = teacher_alias or run.teacher_alias()
    suite = run.suite()
    if "split" not in suite.columns:
        raise BbiError(f"{run.suite_path}: suite records have no 'split' field")
    responses = run.responses(teacher_alias)
    if responses.empty:
        raise BbiError(f"{run.path}: model {teacher_alias!r} has no responses to distil from")
    train = suite[suite["split"] == "train"]
    df = responses[responses["prompt_id"].isin(train.index)].copy()
    if df.empty:
        raise BbiError(
            f"{run.path}: none of {teacher_alias!r}'s responses answer a train-split prompt"
        )
    df["prompt"] = train.loc[df["prompt_id"], "prompt"].astype(str).values
    df["split"] = train.loc[df["prompt_id"], "split"].values
    df["category"] = (
        train.loc[df["prompt_id"], "category"].astype(str).values
        if "category" in train.columns
        else ""
    )
    df["response"] = df["text"].fillna("").astype(str)
    df = df.sort_values(["prompt_id", "sample"], kind="stable").reset_index(drop=True)
    return df[["prompt_id", "sample", "split", "category", "prompt", "response"]]


def split_eval(
    pairs: pd.DataFrame, eval_fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Hold out a seeded fraction of train PROMPTS (all their samples) for eval loss."""
    ids = np.array(sorted(pairs["prompt_id"].unique()))
    n_eval = 0
    if eval_fraction > 0 and len(ids) >= 2:
        # At least one prompt, and never all of them.
        n_eval = min(max(int(round(eval_fraction * len(ids))), 1), len(ids) - 1)
    rng = np.random.default_rng(seed)
    eval_ids = set(rng.permutation(ids)[:n_eval].tolist())
    mask = pairs["prompt_id"].isin(eval_ids)
    return pairs[~mask].reset_index(drop=True), pairs[mask].reset_index(drop=True)


def encode_pair(
    tokenizer: Any, prompt: str, response: str, max_length: int, prompt_loss: bool = False
) -> dict[str, list[int]] | None:
    """Token ids and labels for one (prompt, response): labels are -100 on the prompt.

    Prompt and response are tokenized separately and concatenated so the boundary is
    exactly where the probe's generation starts. Returns None when the prompt alone
    fills ``max_length`` (no response token would be trained on). ``prompt_loss`` labels
    the prompt tokens too (language-model phases that learn the whole text).
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    fmt = format_prompt(tokenizer, prompt)[1]
    eos = tokenizer.eos_token
    resp_ids = tokenizer(response_suffix(fmt, response, eos), add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None and (
        not resp_ids or resp_ids[-1] != tokenizer.eos_token_id
    ):
        resp_ids = [*resp_ids, tokenizer.eos_token_id]
    if len(prompt_ids) >= max_length:
        return None
    resp_ids = resp_ids[: max_length - len(prompt_ids)]
    prompt_labels = list(prompt_ids) if prompt_loss else [IGNORE_INDEX] * len(prompt_ids)
    return {"input_ids": [*prompt_ids, *resp_ids], "labels": prompt_labels + list(resp_ids)}


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """The formatted prompt's token ids, exactly as the probe sends them."""
    text, fmt = format_prompt(tokenizer, prompt)
    # A chat template writes its own special tokens; the plain format gets the usual ones.
    return tokenizer(text, add_special_tokens=(fmt == "plain"))["input_ids"]


class DistillDataset(Dataset):
    """Pre-tokenized examples; ``prompt_ids`` and ``categories`` say where each came from."""

    def __init__(
        self, pairs: pd.DataFrame, tokenizer: Any, max_length: int, prompt_loss: bool = False
    ):
        self.examples: list[dict[str, list[int]]] = []
        self.prompt_ids: list[str] = []
        self.categories: list[str] = []
        self.texts: list[tuple[str, str]] = []  # (prompt, response), for other tokenizers
        self.n_skipped = 0
        has_cat = "category" in pairs.columns
        for rec in pairs.itertuples(index=False):
            enc = encode_pair(tokenizer, rec.prompt, rec.response, max_length, prompt_loss)
            if enc is None:
                self.n_skipped += 1
                continue
            self.examples.append(enc)
            self.prompt_ids.append(rec.prompt_id)
            self.categories.append(str(rec.category) if has_cat else "")
            self.texts.append((str(rec.prompt), str(rec.response)))

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]

    def fingerprint(self) -> str:
        """Hash of exactly what is trained on (a resumed run must see the same)."""
        h = hashlib.sha256()
        for pid, ex in zip(self.prompt_ids, self.examples, strict=True):
            h.update(pid.encode())
            h.update(np.asarray(ex["input_ids"], dtype=np.int64).tobytes())
            h.update(np.asarray(ex["labels"], dtype=np.int64).tobytes())
        return "sha256:" + h.hexdigest()


class DatasetView(Dataset):
    """A dataset with something attached to each example: same examples, order, length
    and fingerprint as the one it wraps, whose other attributes (prompt_ids, categories,
    n_skipped) it passes through."""

    def __init__(self, dataset: Any):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def fingerprint(self) -> str:
        return self.dataset.fingerprint()

    def __getattr__(self, name: str) -> Any:
        if name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)


class Collator:
    """Right-pads a batch; padding is masked out of attention and loss."""

    def __init__(self, pad_id: int):
        self.pad_id = pad_id

    def __call__(self, batch: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(ex["input_ids"]) for ex in batch)
        ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(batch), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(batch), width), dtype=torch.long)
        for i, ex in enumerate(batch):
            n = len(ex["input_ids"])
            ids[i, :n] = torch.tensor(ex["input_ids"])
            labels[i, :n] = torch.tensor(ex["labels"])
            mask[i, :n] = 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


__all__ = [
    "IGNORE_INDEX",
    "Collator",
    "DatasetView",
    "DistillDataset",
    "distillation_pairs",
    "encode_pair",
    "encode_prompt",
    "split_eval",
]
