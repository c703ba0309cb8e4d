"""A teacher that binds: a small attention model trained from scratch on entity tracking.

Circuit distillation needs a teacher that already solves the task; a chat model tuned
for a few epochs learns to copy *an* object from the context, not the one in the queried
box. Small attention models do learn key-value binding (multi-query associative recall),
with a recognisable loss shape: a plateau near ln(number of boxes) (copying a random
object of the context) and then a drop when the binding circuit forms. How long the
plateau lasts depends on the token layout: with the ``adjacent`` template ("Box F apple,
..., Box F" -> " apple") the object follows its label and the query ends on the label, an
associative-recall pattern, and the default model leaves the plateau within about 300
steps (it builds a (label, object) slot on the token after each pair with one layer-0 head
and reads it at the query with its layer-1 heads). With ``contains`` ("Box F
contains the apple, ... Box F contains the") the label is 3 tokens before its object and 2
before the query's end, and 10,000 steps stayed on the plateau (BENCHMARKS.md).

``build_binding_teacher`` trains one (``bbi distill circuit STUDENT --teacher binding``):

- a Llama-architecture model (``BindingConfig``: 2 layers, 4 heads of width 16 by
  default) on the *student's* tokenizer, so both models read the same tokens;
- multi-query sequences (``queries`` supervised answers each, ``entity_recall_sequences``)
  drawn from a seeded stream that never repeats a split name of the circuit command;
- a curriculum over the number of boxes: a sequence has ``min_boxes``..``cap`` boxes, and
  ``cap`` grows by one (from ``min_boxes`` = 3 to ``max_boxes``) once the running accuracy
  on the training answers reaches ``advance_at``;
- the checkpoint kept is the one with the best accuracy on a *validation* split (its own
  seeded stream, "binding-val"); the circuit command's held-out split ("heldout") is its
  test split and is never generated here.

The result is cached under ``$BBI_CACHE_DIR/binding/<key>/`` (a ``save_pretrained``
directory plus ``binding.json``: config, curve, validation accuracy per box count, time),
keyed by the config and the tokenizer's files, and built once under a file lock
(``bbi.hub.locked_build``).
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bbi.errors import BbiError
from bbi.hub import cache_root, digest, locked_build
from distill.tasks import entity_recall_sequences, entity_tracking, entity_vocabulary

BINDING_VERSION = 2
RECORD = "binding.json"
TRAIN_SPLIT = "binding-train"
VAL_SPLIT = "binding-val"


@dataclass(frozen=True)
class BindingConfig:
    """Everything that decides the binding teacher's weights (hashed into its cache key)."""

    hidden_size: int = 64
    num_layers: int = 2
    num_heads: int = 4
    intermediate_size: int = 128
    # About 60 ms of CPU per step. With the adjacent template the loss leaves the copy
    # plateau after about 300 steps; with "contains" 10,000 steps stayed on it
    # (BENCHMARKS.md, "A teacher that binds").
    steps: int = 1500
    batch_size: int = 32
    lr: float = 3e-3
    warmup: int = 100
    weight_decay: float = 0.0
    seed: int = 0
    queries: int = 8  # supervised answers per training sequence
    min_boxes: int = 3  # the curriculum's first cap (copying is worth 1/3 there, not 1/2)
    max_boxes: int = 5  # its last cap (the task's 3-5 boxes are all seen)
    advance_at: float = 0.9  # running training accuracy that raises the cap
    val_boxes: tuple[int, int] = (3, 5)  # the task's range, validated on
    n_val: int = 256
    eval_every: int = 250
    template: str = "adjacent"  # the object right after its box label (distill.tasks)
    keep: str = "best_val"  # best_val (the teacher) | last (a model left on its plateau)
    # bound: each answer is the queried box's object (the task) | any: a random object of
    # the context (the format without the binding: a model that can only copy)
    answers: str = "bound"
    threads: int = 0  # torch threads while training; 0 = torch's default

    def to_dict(self) -> dict:
        return asdict(self)


# A smaller model of the same family that has learned the format and copies *an* object
# of the context (about 1 / boxes), and does not bind: trained on answers drawn at random
# from the context's objects, so nothing rewards binding however long it trains (with
# the true answers a model this size leaves the copy plateau within 250 steps). The
# student of benchmarks/bench_circuit_binding.py: a model without the circuit.
PLATEAU_STUDENT = BindingConfig(hidden_size=48, intermediate_size=96, batch_size=32, lr=3e-3,
                                steps=400, n_val=256, min_boxes=3, advance_at=1.01,
                                keep="last", eval_every=200, seed=1, answers="any")  # fmt: skip


def curriculum_boxes(rng: random.Random, cap: int, min_boxes: int) -> int:
    """The number of boxes of one training sequence: uniform in [min_boxes, cap], so the
    smaller counts stay in the mix as the cap grows."""
    return rng.randint(min_boxes, cap)


class Curriculum:
    """The cap on the number of boxes: starts at ``min_boxes``, +1 (up to ``max_boxes``)
    each time the running accuracy (EMA of batch accuracy on the answers) reaches
    ``advance_at``; the running accuracy restarts at 0 after each raise."""

    def __init__(self, min_boxes: int, max_boxes: int, advance_at: float, decay: float = 0.95):
        if not 2 <= min_boxes <= max_boxes:
            raise BbiError(f"curriculum: need 2 <= {min_boxes} <= {max_boxes}")
        self.min_boxes, self.max_boxes = min_boxes, max_boxes
        self.cap = min_boxes
        self.advance_at, self.decay = advance_at, decay
        self.running = 0.0
        self.raised_at: dict[int, int] = {min_boxes: 0}

    def update(self, step: int, batch_accuracy: float) -> bool:
        """Feed one batch's accuracy; True when the cap was raised."""
        self.running = self.decay * self.running + (1 - self.decay) * batch_accuracy
        if self.running >= self.advance_at and self.cap < self.max_boxes:
            self.cap += 1
            self.running = 0.0
            self.raised_at[self.cap] = step + 1
            return True
        return False


def training_sequences(
    rng: random.Random, cfg: BindingConfig, cap: int, objects: list[str], boxes: list[str]
) -> list[list[tuple[str, bool]]]:
    """One batch of multi-query sequences with the curriculum's box counts; each
    sequence from its own seed of the training stream (``binding-train:...``)."""
    if cfg.answers not in ("bound", "any"):
        raise BbiError(f"binding: answers must be bound or any, not {cfg.answers!r}")
    out = []
    for _ in range(cfg.batch_size):
        k = curriculum_boxes(rng, cap, cfg.min_boxes)
        seed = f"{TRAIN_SPLIT}:{cfg.seed}:{rng.getrandbits(64)}"
        segs = entity_recall_sequences(
            1, seed, objects, boxes, k, k, template=cfg.template, queries=cfg.queries
        )[0]
        if cfg.answers == "any":  # the same sequence, each answer a random object of it
            placed = [o for _, o in entity_tracking(1, seed, objects, boxes, k, k)[0].placements]
            pick = random.Random(f"{seed}:any")  # the stream of prompts stays the same
            segs = [(" " + pick.choice(placed), True) if a else (t, a) for t, a in segs]
        out.append(segs)
    return out


def encode_sequences(seqs: list[list[tuple[str, bool]]], tokenizer: Any) -> dict[str, Any]:
    """Right-padded ids, mask and labels (answers only) of multi-query sequences."""
    import torch

    texts = [text for segs in seqs for text, _ in segs]
    enc = iter(tokenizer(texts, add_special_tokens=False)["input_ids"])  # one batched call
    rows = []
    for segs in seqs:
        ids: list[int] = []
        labels: list[int] = []
        for _, answer in segs:
            toks = next(enc)
            ids += toks
            labels += toks if answer else [-100] * len(toks)
        rows.append((ids, labels))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids_t = torch.full((len(rows), width), int(pad), dtype=torch.long)
    mask = torch.zeros_like(ids_t)
    labels_t = torch.full_like(ids_t, -100)
    for r, (ids, labels) in enumerate(rows):
        ids_t[r, : len(ids)] = torch.tensor(ids)
        mask[r, : len(ids)] = 1
        labels_t[r, : len(ids)] = torch.tensor(labels)
    return {"input_ids": ids_t, "attention_mask": mask, "labels": labels_t}


def validation_split(cfg: BindingConfig, objects: list[str], boxes: list[str]) -> list[Any]:
    """Single-query prompts of the task's shape (``val_boxes``) from the validation stream."""
    lo, hi = cfg.val_boxes
    return entity_tracking(cfg.n_val, f"{VAL_SPLIT}:{cfg.seed}", objects, boxes, lo, hi,
                           template=cfg.template)  # fmt: skip


def prompt_accuracy(model: Any, tokenizer: Any, examples: list[Any]) -> dict[str, float]:
    """Final-token accuracy (argmax over the whole vocabulary), overall and per box count."""
    import torch

    model.eval()
    right: dict[int, list[bool]] = {}
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.no_grad():
        for s in range(0, len(examples), 128):
            chunk = examples[s : s + 128]
            toks = [tokenizer(e.prompt, add_special_tokens=False)["input_ids"] for e in chunk]
            width = max(len(t) for t in toks)
            ids = torch.full((len(chunk), width), int(pad), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for i, t in enumerate(toks):  # left padding: the final token is column -1
                ids[i, width - len(t) :] = torch.tensor(t)
                mask[i, width - len(t) :] = 1
            pos = (mask.cumsum(-1) - 1).clamp(min=0)
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos).logits[:, -1]
            pred = logits.argmax(-1).tolist()
            for e, p in zip(chunk, pred, strict=True):
                gold = tokenizer(e.answer, add_special_tokens=False)["input_ids"][0]
                right.setdefault(e.n_boxes, []).append(p == gold)
    every = [x for v in right.values() for x in v]
    out = {"accuracy": sum(every) / max(len(every), 1)}
    out.update({f"boxes_{k}": sum(v) / len(v) for k, v in sorted(right.items())})
    return out


class CurriculumStalled(BbiError):
    """No checkpoint trained on the task's whole range: ``record`` holds the curve."""

    def __init__(self, message: str, record: dict[str, Any]):
        super().__init__(message)
        self.record = record


def make_model(cfg: BindingConfig, tokenizer: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(cfg.seed)
    return LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=cfg.hidden_size,
            intermediate_size=cfg.intermediate_size,
            num_hidden_layers=cfg.num_layers,
            num_attention_heads=cfg.num_heads,
            num_key_value_heads=cfg.num_heads,
            max_position_embeddings=512,
            tie_word_embeddings=False,
            bos_token_id=None,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    )


def train_binding(
    tokenizer: Any,
    cfg: BindingConfig,
    on_step: Callable[[int, float, int], None] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Train from scratch with the curriculum; keep the best checkpoint on validation.
    Returns (model with the kept weights, record)."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    objects, boxes = entity_vocabulary([tokenizer])
    if cfg.max_boxes > min(len(objects), len(boxes)):
        raise BbiError(f"binding teacher: {cfg.max_boxes} boxes need as many objects and labels")
    val = validation_split(cfg, objects, boxes)
    model = make_model(cfg, tokenizer)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0}],
        lr=cfg.lr, betas=(0.9, 0.98),
    )  # fmt: skip
    sched = get_cosine_schedule_with_warmup(opt, cfg.warmup, cfg.steps)
    rng = random.Random(f"{TRAIN_SPLIT}:{cfg.seed}")
    cur = Curriculum(cfg.min_boxes, cfg.max_boxes, cfg.advance_at)
    curve: list[dict[str, Any]] = []
    evals: list[dict[str, Any]] = []
    best: tuple[float, int, dict | None] = (-1.0, -1, None)
    loss_sum, acc_sum, n_sum = 0.0, 0.0, 0
    t0 = time.perf_counter()
    for step in range(cfg.steps):
        model.train()
        b = encode_sequences(training_sequences(rng, cfg, cur.cap, objects, boxes), tokenizer)
        hidden = model.model(input_ids=b["input_ids"], attention_mask=b["attention_mask"])
        tgt = b["labels"][:, 1:]
        keep = tgt != -100
        # Logits at the answers only: the same loss, and with a chat model's vocabulary
        # (tens of thousands of tokens) most of a step's time would be the other positions.
        lg = model.lm_head(hidden.last_hidden_state[:, :-1][keep])
        loss = torch.nn.functional.cross_entropy(lg, tgt[keep])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        acc = float((lg.argmax(-1) == tgt[keep]).float().mean())
        cur.update(step, acc)
        loss_sum, acc_sum, n_sum = loss_sum + loss.item(), acc_sum + acc, n_sum + 1
        if on_step:
            on_step(step, loss.item(), cur.cap)
        last = step + 1 == cfg.steps
        if (step + 1) % 50 == 0 or last:
            curve.append({"step": step + 1, "loss": loss_sum / n_sum, "accuracy": acc_sum / n_sum,
                          "cap": cur.cap, "time_s": time.perf_counter() - t0})  # fmt: skip
            loss_sum, acc_sum, n_sum = 0.0, 0.0, 0
        if (step + 1) % cfg.eval_every == 0 or last:
            v = prompt_accuracy(model, tokenizer, val)
            evals.append({"step": step + 1, "cap": cur.cap, **v})
            # Only checkpoints trained on the whole task's range compete.
            ok = cfg.keep == "last" or cur.cap >= cfg.val_boxes[1]
            if ok and (v["accuracy"] > best[0] or cfg.keep == "last"):
                state = {k: t.detach().clone() for k, t in model.state_dict().items()}
                best = (v["accuracy"], step + 1, state)
    record = {
        "version": BINDING_VERSION,
        "config": cfg.to_dict(),
        "params": sum(p.numel() for p in model.parameters()),
        "chance_loss": {k: math.log(k) for k in range(cfg.min_boxes, cfg.max_boxes + 1)},
        "curriculum": {str(k): v for k, v in cur.raised_at.items()},
        "curve": curve,
        "validation": evals,
        "selected": None,
        "train_seconds": time.perf_counter() - t0,
    }
    if best[2] is None:
        raise CurriculumStalled(
            f"binding teacher: the curriculum never reached {cfg.val_boxes[1]} boxes in "
            f"{cfg.steps} steps (cap {cur.cap}; last answer loss {curve[-1]['loss']:.3f}, "
            f"ln({cur.cap}) = {math.log(cur.cap):.3f} is copying an object); give it more steps",
            record,
        )
    model.load_state_dict(best[2])
    model.eval()
    record["selected"] = {"step": best[1], "val_accuracy": best[0], "split": VAL_SPLIT,
                          "rule": cfg.keep}  # fmt: skip
    return model, record


def task_tokenizer() -> Any:
    """A word-level tokenizer over the entity-tracking vocabulary (objects, box labels,
    the templates' words and punctuation): every word one token, so a task model spends
    nothing on a large vocabulary."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    from distill.tasks import BOX_LABELS, OBJECTS, TEMPLATES

    words = ["<pad>", "<unk>", "<eos>", ".", ",", "and", "Box", "The", "the", "contains", "is",
             "in", *OBJECTS, *BOX_LABELS]  # fmt: skip
    for t in TEMPLATES.values():
        words += [w for w in t.replace("{o}", "").replace("{b}", "").split() if w]
    vocab: dict[str, int] = {}
    for w in words:
        vocab.setdefault(w, len(vocab))
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
        clean_up_tokenization_spaces=False,
    )  # fmt: skip


def tokenizer_key(tokenizer: Any) -> str:
    """A content key of a tokenizer (its vocabulary and special tokens)."""
    vocab = sorted(tokenizer.get_vocab().items())
    return digest({"vocab": vocab, "pad": tokenizer.pad_token_id, "eos": tokenizer.eos_token_id})


def binding_dir(tokenizer: Any, cfg: BindingConfig) -> Path:
    key = digest({"version": BINDING_VERSION, "config": cfg.to_dict(),
                  "tokenizer": tokenizer_key(tokenizer)})  # fmt: skip
    return cache_root() / "binding" / key


def build_binding_teacher(
    tokenizer: Any, cfg: BindingConfig | None = None, *, progress: bool = True
) -> tuple[Path, dict[str, Any]]:
    """The binding teacher for ``tokenizer`` (built once, cached by content): its
    directory (an ``hf:`` model) and its record."""
    cfg = cfg or BindingConfig()
    final = binding_dir(tokenizer, cfg)

    def build(tmp: Path) -> None:
        import torch
        from tqdm.auto import tqdm

        threads = torch.get_num_threads()
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        bar = tqdm(total=cfg.steps, desc="binding teacher", disable=not progress, leave=False)

        def on_step(step: int, loss: float, cap: int) -> None:
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", boxes=cap, refresh=False)

        try:
            model, record = train_binding(tokenizer, cfg, on_step)
        except CurriculumStalled as exc:  # keep the curve: it says where training stalled
            failed = final.with_name(final.name + ".stalled.json")
            failed.write_text(json.dumps(exc.record, indent=1) + "\n", encoding="utf-8")
            raise
        finally:
            bar.close()
            torch.set_num_threads(threads)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / RECORD).write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")

    locked_build(final, lambda: (final / RECORD).is_file(), build)
    return final, json.loads((final / RECORD).read_text(encoding="utf-8"))


__all__ = [
    "BINDING_VERSION",
    "PLATEAU_STUDENT",
    "BindingConfig",
    "Curriculum",
    "CurriculumStalled",
    "binding_dir",
    "build_binding_teacher",
    "curriculum_boxes",
    "prompt_accuracy",
    "task_tokenizer",
    "train_binding",
]
