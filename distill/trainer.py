"""The one training loop every distiller runs (Accelerate); objectives plug into it.

``train(model, objective, train_ds, eval_ds, ...)`` owns everything a method should not
re-implement: optimizer (AdamW over the trainable parameters) and linear warmup/decay
schedule, gradient accumulation (exact: each micro-batch's mean token loss is divided by
the size of its accumulation window), gradient clipping, held-out eval (before training,
at each epoch end, optionally every N steps), a progress bar, metrics as JSONL, and
checkpoints that make an interrupted run continue bit-for-bit.

The objective (``distill.objectives.Objective``) decides the loss from a batch and may
rewrite the batch first (on-policy sampling) or hold frozen models (a teacher)::

    class MyObjective(Objective):
        name = "mine"
        def token_losses(self, model, batch):  # -> (per-example loss sums, token counts)
            ...

    outcome = train(model, MyObjective(), train_ds, eval_ds, hp=settings,
                    accelerator=Accelerator(), collate=Collator(pad_id), ckpt_dir=out / "checkpoint",
                    identity={"base": spec, ...})

A checkpoint holds the trainable parameters, optimizer, scheduler, (fp16) loss scale,
every process's RNG states, step/epoch, the position in the epoch and the epoch's data
order, plus an identity (data fingerprints, hyperparameters, objective, base weights,
process count, precision). Resuming against another identity is refused with one line
naming what differs; a checkpoint is never silently dropped. Every random draw is seeded:
data order is a pure function of (seed, epoch), loaders draw from private generators
(so dropout masks replay after a resume), and objectives seed per-step draws from
``StepContext``.

``--batch-size`` is per process (the global batch is batch size x processes x grad
accum); eval loss is gathered over all processes; only the main process writes files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import random
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from bbi.config import LoopSettings
from bbi.errors import BbiError
from bbi.runstore import atomic_write_text, write_json
from distill.objectives import Objective, StepContext

FORMAT_VERSION = 2
CHECKPOINT_DIR = "checkpoint"
METRICS_FILE = "metrics.jsonl"


@dataclass
class TrainOutcome:
    """Where training ended: ``state`` is the checkpoint state (losses per epoch, step...)."""

    state: dict[str, Any]
    completed: bool
    total_steps: int
    train_time_s: float
    train_cpu_s: float
    tokens: float
    model: Any  # unwrapped from Accelerate's wrappers


# ---------------------------------------------------------------------------------------
# data order
# ---------------------------------------------------------------------------------------
def epoch_order(n: int, seed: int, epoch: int, weights: np.ndarray | None = None) -> list[int]:
    """The example order of one epoch: a pure function of (seed, epoch[, weights]).

    Without weights a permutation; with weights, n draws with replacement in proportion
    to them (the budget goes where the weights are large).
    """
    rng = np.random.default_rng([seed, epoch])
    if weights is None:
        return rng.permutation(n).tolist()
    p = np.asarray(weights, dtype=np.float64)
    return rng.choice(n, size=n, replace=True, p=p / p.sum()).tolist()


class FixedOrderSampler(Sampler[int]):
    """Yields a given order; the order is part of the checkpoint, so resume replays it."""

    def __init__(self, order: list[int]):
        self.order = order

    def __iter__(self) -> Iterator[int]:
        return iter(self.order)

    def __len__(self) -> int:
        return len(self.order)


def private_generator() -> torch.Generator:
    """Loaders draw a base seed per iteration; from a private generator that draw leaves
    the global RNG (dropout) untouched, so a resumed run sees the same masks."""
    return torch.Generator().manual_seed(0)


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------
def _rng_state() -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(tuple(_tuplify(state["python"])))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _tuplify(x: Any) -> Any:
    return tuple(_tuplify(v) for v in x) if isinstance(x, list | tuple) else x


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    """The parameters being trained, by name (LoRA: the adapter; full: every weight)."""
    return {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def load_trainable_state(model: Any, weights: dict[str, torch.Tensor]) -> None:
    """Copy checkpointed trainable parameters back; the names must match exactly."""
    named = dict(model.named_parameters())
    want = {n for n, p in named.items() if p.requires_grad}
    if want != set(weights):
        raise BbiError(
            f"--resume: checkpoint weights do not match the model "
            f"({len(set(weights) - want)} unexpected, {len(want - set(weights))} missing)"
        )
    with torch.no_grad():
        for name, value in weights.items():
            named[name].copy_(value.to(named[name].device, named[name].dtype))


def save_checkpoint(
    accelerator: Any, model: Any, optimizer: Any, scheduler: Any, ckpt: Path, state: dict
) -> None:
    """Write a complete checkpoint next to the old one, then swap: a crash keeps one valid."""
    from safetensors.torch import save_file

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if accelerator.is_main_process:
        for p in (tmp, ckpt, ckpt.with_name(ckpt.name + ".old")):
            if p.is_symlink():  # never write (or delete) through a link out of the output
                raise BbiError(f"{p}: is a symbolic link; bbi never writes through one: remove it")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    torch.save(_rng_state(), tmp / f"rng_{accelerator.process_index}.pt")
    if accelerator.is_main_process:
        save_file(trainable_state(accelerator.unwrap_model(model)), tmp / "trainable.safetensors")
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
        torch.save(scheduler.state_dict(), tmp / "scheduler.pt")
        if accelerator.scaler is not None:  # fp16 loss scale
            torch.save(accelerator.scaler.state_dict(), tmp / "scaler.pt")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_json(tmp / "state.json", state)
        old = ckpt.with_name(ckpt.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        if ckpt.exists():
            ckpt.rename(old)
        tmp.rename(ckpt)
        shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()


def _metrics_lines(path: Path, resume_step: int) -> list[str]:
    """metrics.jsonl's lines up to the checkpoint's step; a torn last line (a kill) is
    dropped, any other damage is a BbiError naming the line."""
    from bbi.runstore import read_text

    lines = read_text(path).split("\n")
    kept = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            if i == len(lines):  # unterminated: what a kill mid-append leaves
                break
            rec = None
        step = rec.get("step", 0) if isinstance(rec, dict) else None
        if not isinstance(step, int) or isinstance(step, bool):
            raise BbiError(
                f"{path}:{i}: damaged metrics line (expected a JSON object with an integer "
                "'step'); restore the file, or train again without --resume"
            )
        if step <= resume_step:
            kept.append(line)
    return kept


def read_checkpoint_state(ckpt: Path) -> dict:
    """The saved state.json; a missing checkpoint is a user error (nothing to resume)."""
    path = ckpt / "state.json"
    if not path.exists():
        raise BbiError(f"--resume: no checkpoint in {ckpt.parent} (nothing to resume)")
    try:
        state = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise BbiError(f"{path}: invalid checkpoint state ({exc.msg})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BbiError(f"{path}: cannot read checkpoint state ({exc})") from None
    if not isinstance(state, dict):
        raise BbiError(f"{path}: invalid checkpoint state (expected a JSON object)")
    for key, kind in _STATE_FIELDS.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
            raise BbiError(
                f"{path}: damaged checkpoint state ({key!r} missing or of the wrong type); "
                "restore it, or train again without --resume"
            )
    return state


# What the loop reads from a saved state before anything else checks it.
_STATE_FIELDS: dict[str, Any] = {
    "global_step": int,
    "epoch": int,
    "micro_in_epoch": int,
    "epoch_loss_sum": (int, float),
    "epoch_loss_steps": int,
    "train_loss_per_epoch": list,
    "eval_loss_per_epoch": list,
}


def check_steps(save_every_steps: int, eval_every_steps: int, stop_after_steps: int | None) -> None:
    """The step options, checked before any model loads."""
    if save_every_steps < 0:
        raise BbiError(f"--save-every-steps must be >= 0 (got {save_every_steps})")
    if eval_every_steps < 0:
        raise BbiError(f"--eval-every-steps must be >= 0 (got {eval_every_steps})")
    if stop_after_steps is not None and stop_after_steps < 1:
        raise BbiError(f"--stop-after-steps must be >= 1 (got {stop_after_steps})")


def check_compatible(saved: dict, expected: dict) -> None:
    """A checkpoint from other data/settings cannot continue this run: say what differs."""
    diffs = []
    for key, value in expected.items():
        have = saved.get(key)
        if isinstance(value, dict) and isinstance(have, dict):
            diffs += [
                f"{key}.{k}: checkpoint {have.get(k)!r} != requested {v!r}"
                for k, v in value.items()
                if have.get(k) != v
            ]
        elif have != value:
            diffs.append(f"{key}: checkpoint {have!r} != requested {value!r}")
    if diffs:
        raise BbiError("--resume: checkpoint does not match this run (" + "; ".join(diffs) + ")")


def _load_checkpoint_files(
    ckpt_dir: Path, accelerator: Any, model: Any, optimizer: Any, scheduler: Any
) -> None:
    """Weights, optimizer, scheduler and RNG states of a checkpoint; a damaged or
    truncated file (a kill mid-save, a full disk) is a BbiError naming it."""
    import pickle

    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = ckpt_dir / "trainable.safetensors"
    try:
        load_trainable_state(accelerator.unwrap_model(model), load_file(path))
        path = ckpt_dir / "optimizer.pt"
        optimizer.load_state_dict(_torch_load(path))
        path = ckpt_dir / "scheduler.pt"
        scheduler.load_state_dict(_torch_load(path))
        path = ckpt_dir / "scaler.pt"
        if accelerator.scaler is not None and path.exists():
            accelerator.scaler.load_state_dict(_torch_load(path))
        path = ckpt_dir / f"rng_{accelerator.process_index}.pt"
        _set_rng_state(_torch_load(path))
    except (
        OSError,
        RuntimeError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        pickle.UnpicklingError,
        SafetensorError,
    ) as exc:
        what = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        if isinstance(exc, FileNotFoundError):
            what = "file missing"
        elif isinstance(exc, pickle.UnpicklingError) or "Weights only load" in what:
            what = "not a valid PyTorch state file"  # never retried with weights_only=False
        raise BbiError(
            f"{path}: damaged checkpoint ({what}); restore it, or train again without --resume"
        ) from None


def _torch_load(path: Path) -> Any:
    # weights_only: tensors and plain containers only, never arbitrary pickled objects.
    return torch.load(path, map_location="cpu", weights_only=True)


class _Metrics:
    """Append-only JSONL of step and eval records (main process only).

    On resume the lines after the checkpoint's step are dropped (they belong to work the
    resumed run repeats), so the file reads as if the run had never stopped.
    """

    def __init__(self, path: Path | None, enabled: bool, resume_step: int | None):
        self.path = path if enabled else None
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        kept: list[str] = []
        if resume_step is not None and self.path.exists():
            kept = _metrics_lines(self.path, resume_step)
        atomic_write_text(self.path, "".join(x + "\n" for x in kept))

    def write(self, **record: Any) -> None:
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")


# ---------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------
def train(
    model: Any,
    objective: Objective,
    train_ds: Dataset,
    eval_ds: Dataset,
    *,
    hp: LoopSettings,
    accelerator: Any,
    collate: Any,
    ckpt_dir: Path,
    identity: dict[str, Any],
    resume: bool = False,
    save_every_steps: int = 0,
    stop_after_steps: int | None = None,
    eval_every_steps: int = 0,
    metrics_path: Path | None = None,
    sample_weights: np.ndarray | None = None,
    progress: bool = True,
    desc: str = "distill",
    on_snapshot: Callable[[Any, dict[str, Any]], None] | None = None,
) -> TrainOutcome:
    """Train ``model``'s trainable parameters on ``objective``; checkpoint into ``ckpt_dir``.

    ``model`` comes ready to train (``requires_grad`` set on exactly what should learn,
    e.g. by ``distill.student.make_trainable``) and on the CPU; the loop places it.

    ``hp`` gives the loop's settings (epochs, lr, batch_size, grad_accum, warmup_ratio,
    weight_decay, max_grad_norm, seed); ``identity`` is what a resumed checkpoint must
    match besides the loop's own entries (data fingerprints, hyperparameters, objective,
    process count, precision). ``stop_after_steps`` ends the session with a checkpoint
    after that many optimizer steps in total; ``resume`` continues from ``ckpt_dir``.
    ``sample_weights`` (one per training example) draws each epoch with replacement in
    proportion to them instead of a permutation.

    ``hp.curve_tokens`` (token milestones) calls ``on_snapshot(model, point)`` on the main
    process after the optimizer step at which the tokens seen (prompt + response tokens
    fed to the model, all processes) first reach one or more milestones; ``point`` holds
    ``tokens_seen``, ``loss_tokens``, ``step``, ``epoch`` and the ``milestones`` passed. The
    points taken are ``state["curve"]`` (a resumed run does not take them again).
    """
    from transformers import get_linear_schedule_with_warmup

    check_steps(save_every_steps, eval_every_steps, stop_after_steps)
    milestones = list(getattr(hp, "curve_tokens", None) or [])
    if milestones and on_snapshot is None:
        raise BbiError("curve_tokens: this method does not keep curve snapshots")
    if len(train_ds) == 0:
        raise BbiError("no training examples")
    if sample_weights is not None:
        sample_weights = np.asarray(sample_weights, dtype=np.float64)
        if (
            sample_weights.shape != (len(train_ds),)
            or not np.all(np.isfinite(sample_weights))
            or (sample_weights < 0).any()
            or sample_weights.sum() <= 0
        ):
            raise BbiError("sample weights: need one finite weight >= 0 per example, not all 0")
    saved = read_checkpoint_state(ckpt_dir) if resume else None
    main = accelerator.is_main_process
    n_train = len(train_ds)

    def order_of(epoch: int) -> list[int]:
        return epoch_order(n_train, hp.seed, epoch, sample_weights)

    def loader(order: list[int]) -> DataLoader:
        return accelerator.prepare(
            DataLoader(
                train_ds,
                batch_size=hp.batch_size,
                sampler=FixedOrderSampler(order),
                collate_fn=collate,
                generator=private_generator(),
            )
        )

    objective.setup(accelerator)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise BbiError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
    model, optimizer = accelerator.prepare(model, optimizer)
    eval_loader = (
        accelerator.prepare(
            DataLoader(
                eval_ds, batch_size=hp.batch_size, collate_fn=collate, generator=private_generator()
            )
        )
        if len(eval_ds)
        else None
    )
    micro_per_epoch = len(loader(order_of(0)))
    steps_per_epoch = math.ceil(micro_per_epoch / hp.grad_accum)
    total_steps = steps_per_epoch * hp.epochs
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(hp.warmup_ratio * total_steps), total_steps
    )

    full_identity = {
        "format_version": FORMAT_VERSION,
        **identity,
        "objective": objective.identity(),
        "hyperparameters": hp.model_dump(),
        "train_data": _fingerprint(train_ds),
        "eval_data": _fingerprint(eval_ds),
        "sample_weights": _weights_digest(sample_weights),
        "num_processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
    }
    state: dict[str, Any] = {
        **full_identity,
        "global_step": 0,
        "epoch": 0,
        "micro_in_epoch": 0,
        "epoch_loss_sum": 0.0,
        "epoch_loss_steps": 0,
        "loss_tokens": 0,
        "train_loss_per_epoch": [],
        "eval_loss_per_epoch": [],
        "completed": False,
    }
    if saved is not None:
        check_compatible(saved, full_identity)
        _load_checkpoint_files(ckpt_dir, accelerator, model, optimizer, scheduler)
        state = saved
        if state.get("data_order") not in (None, order_of(state["epoch"])):
            raise BbiError("--resume: checkpoint data order does not match this run")
        if main:
            accelerator.print(
                f"resuming from step {state['global_step']}/{total_steps} "
                f"(epoch {state['epoch'] + 1}/{hp.epochs})",
                file=sys.stderr,
            )
    metrics = _Metrics(metrics_path, main, state["global_step"] if saved is not None else None)

    def evaluate() -> float | None:
        if eval_loader is None:
            return None
        model.eval()
        loss_sum = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        count = torch.zeros((), dtype=torch.float64, device=accelerator.device)
        with torch.no_grad():
            for batch in eval_loader:
                sums, counts = objective.eval_token_losses(model, batch)
                sums, counts = accelerator.gather_for_metrics((sums.double(), counts.double()))
                loss_sum += sums.sum()
                count += counts.sum()
        model.train()
        return float(loss_sum / count.clamp(min=1))

    if eval_loader is not None and not state["eval_loss_per_epoch"]:
        ev0 = evaluate()  # the starting model, before training
        state["eval_loss_per_epoch"].append(ev0)
        metrics.write(step=0, epoch=0, eval_loss=ev0)

    from bbi.console import progress_bar

    bar = progress_bar(
        total=total_steps,
        initial=state["global_step"],
        desc=desc,
        unit="step",
        disable=not (progress and main),
        dynamic_ncols=True,
    )
    tokens_seen = torch.zeros((), dtype=torch.float64, device=accelerator.device)
    t_train, cpu_train = time.perf_counter(), time.process_time()
    stopped_early = False
    model.train()
    while state["epoch"] < hp.epochs and not stopped_early:
        epoch = state["epoch"]
        order = order_of(epoch)
        state["data_order"] = order
        dl = loader(order)
        skip = state["micro_in_epoch"]
        if skip:
            dl = accelerator.skip_first_batches(dl, skip)
        window_loss = 0.0
        window_tokens = torch.zeros(2, dtype=torch.float64, device=accelerator.device)
        micro = skip
        for batch in dl:
            window_start = (micro // hp.grad_accum) * hp.grad_accum
            window = min(hp.grad_accum, micro_per_epoch - window_start)
            last_in_window = micro - window_start == window - 1
            ctx = StepContext(
                hp.seed, epoch, micro, accelerator.process_index, state["global_step"], total_steps
            )
            batch = objective.prepare_batch(model, batch, ctx)
            sync = accelerator.no_sync(model) if not last_in_window else contextlib.nullcontext()
            with sync:
                sums, counts = objective.token_losses(model, batch)
                loss = sums.sum() / counts.sum().clamp(min=1)
                accelerator.backward(loss / window)
            window_loss += float(loss.detach()) / window
            seen = batch["attention_mask"].sum()
            window_tokens[0] += counts.sum().detach().double()
            window_tokens[1] += seen.double()
            tokens_seen += seen
            micro += 1
            if not last_in_window:
                continue
            grad_norm = accelerator.clip_grad_norm_(params, hp.max_grad_norm)
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_loss = float(
                accelerator.reduce(torch.tensor(window_loss, device=accelerator.device), "mean")
            )
            window_loss = 0.0
            # Tokens the loss was taken on (the token budget of a step) and tokens fed to
            # the model, all processes.
            step_tokens = accelerator.reduce(window_tokens, "sum")
            state["loss_tokens"] = state.get("loss_tokens", 0) + int(step_tokens[0])
            state["tokens_seen"] = state.get("tokens_seen", 0) + int(step_tokens[1])
            window_tokens.zero_()
            state["global_step"] += 1
            state["micro_in_epoch"] = micro
            state["epoch_loss_sum"] += step_loss
            state["epoch_loss_steps"] += 1
            step = state["global_step"]
            metrics.write(
                step=step,
                epoch=epoch,
                loss=step_loss,
                lr=lr,
                grad_norm=None if grad_norm is None else float(grad_norm),
                **objective.step_metrics(),
            )
            bar.update(1)
            bar.set_postfix(loss=f"{step_loss:.4f}", epoch=epoch + 1)
            if milestones:
                _maybe_snapshot(accelerator, model, state, milestones, on_snapshot)
            end_of_epoch = micro >= micro_per_epoch
            if eval_every_steps and step % eval_every_steps == 0 and not end_of_epoch:
                metrics.write(step=step, epoch=epoch, eval_loss=evaluate())
            if not end_of_epoch and (
                (save_every_steps and step % save_every_steps == 0)
                or (stop_after_steps is not None and step >= stop_after_steps)
            ):
                save_checkpoint(accelerator, model, optimizer, scheduler, ckpt_dir, state)
            if stop_after_steps is not None and step >= stop_after_steps:
                stopped_early = True
                break
        if stopped_early and micro < micro_per_epoch:
            break
        # End of epoch: eval, then a checkpoint that starts the next epoch.
        state["train_loss_per_epoch"].append(
            state["epoch_loss_sum"] / max(state["epoch_loss_steps"], 1)
        )
        ev = evaluate()
        if ev is not None:
            state["eval_loss_per_epoch"].append(ev)
            metrics.write(step=state["global_step"], epoch=epoch, eval_loss=ev, epoch_end=True)
        if main:
            bar.write(
                f"epoch {epoch + 1}/{hp.epochs}: train loss "
                f"{state['train_loss_per_epoch'][-1]:.4f}"
                + (f", eval loss {ev:.4f}" if ev is not None else ""),
                file=sys.stderr,  # stdout carries a command's result (a spec, JSON)
            )
        state.update(
            epoch=epoch + 1,
            micro_in_epoch=0,
            epoch_loss_sum=0.0,
            epoch_loss_steps=0,
            data_order=order_of(epoch + 1),
        )
        state["completed"] = state["epoch"] >= hp.epochs
        save_checkpoint(accelerator, model, optimizer, scheduler, ckpt_dir, state)
    bar.close()
    train_s = time.perf_counter() - t_train
    train_cpu_s = time.process_time() - cpu_train
    tokens = float(accelerator.reduce(tokens_seen, "sum"))
    if not state["completed"]:
        accelerator.print(
            f"stopped after step {state['global_step']}/{total_steps}; continue with --resume",
            file=sys.stderr,
        )
    return TrainOutcome(
        state=state,
        completed=bool(state["completed"]),
        total_steps=total_steps,
        train_time_s=train_s,
        train_cpu_s=train_cpu_s,
        tokens=tokens,
        model=accelerator.unwrap_model(model),
    )


def _maybe_snapshot(
    accelerator: Any,
    model: Any,
    state: dict[str, Any],
    milestones: list[int],
    on_snapshot: Callable[[Any, dict[str, Any]], None] | None,
) -> None:
    """One snapshot for the milestones the tokens seen reached at this step (if any)."""
    taken = {m for point in state.get("curve") or [] for m in point["milestones"]}
    passed = [m for m in milestones if m not in taken and state["tokens_seen"] >= m]
    if not passed or on_snapshot is None:
        return
    point = {
        "milestones": passed,
        "tokens_seen": int(state["tokens_seen"]),
        "loss_tokens": int(state.get("loss_tokens", 0)),
        "step": int(state["global_step"]),
        "epoch": int(state["epoch"]),
    }
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        was_training = accelerator.unwrap_model(model).training
        on_snapshot(accelerator.unwrap_model(model), dict(point))
        accelerator.unwrap_model(model).train(was_training)
    accelerator.wait_for_everyone()
    state["curve"] = [*(state.get("curve") or []), point]


def _fingerprint(ds: Dataset) -> str | None:
    fp = getattr(ds, "fingerprint", None)
    return fp() if callable(fp) else None


def _weights_digest(weights: np.ndarray | None) -> str | None:
    if weights is None:
        return None
    return "sha256:" + hashlib.sha256(np.asarray(weights, dtype=np.float64).tobytes()).hexdigest()


__all__ = [
    "CHECKPOINT_DIR",
    "FORMAT_VERSION",
    "METRICS_FILE",
    "TrainOutcome",
    "check_compatible",
    "epoch_order",
    "read_checkpoint_state",
    "train",
]
