"""Circuit distillation (seed 003; docs/circuit.md): transfer *how* the teacher solves a
task by aligning matched attention heads, training only those heads.

Steps (Wadhwa et al. 2025, with the choices their paper leaves open stated here):

1. The task: entity tracking (``distill.tasks``), answer at the final token. The teacher
   is first fine-tuned on it (its own split; cached in ``OUT/teacher``).
2. Baselines P_s, P_t on a scan split (``score``: accuracy, or mean log-probability of the
   answer, the finer signal for small models).
3. Mean-ablate every student head: dP_s(h) = P_s - P_s^abl(h); every teacher head:
   dP_t(h) = P_s - P_t^abl(h) (against the *student's* baseline, so both are on one
   scale). Means per position over an ablation split (random query boxes).
4. The circuit: the ``heads_fraction`` student heads with the largest dP_s (ties by the
   log-probability drop); each matched to argmin_t |dP_s - dP_t| (many-to-one), or with
   ``matching: group`` to the teacher heads that restore most with the rest of their
   layer ablated (leave-one-in; one-to-one, in layer order), which finds heads that back
   each other up.
5. Arms, each over ``seeds`` (fresh training data and order per seed, one held-out set):
   ``none`` (the student as is), ``ce`` (CE on the teacher's answers, circuit heads only),
   ``circuit`` (CE + lambda x sum (1 - CKA) over matched pairs, circuit heads only) and
   ``random`` (the same with as many random student heads matched to random teacher heads).
6. Metrics on held-out prompts: accuracy; circuit-only accuracy (every head outside the
   arm's circuit mean-ablated, means from the trained model); faithfulness = circuit-only
   / full accuracy; matched-head CKA.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, default_collate

from bbi.config import CircuitSettings
from bbi.errors import BbiError
from bbi.runstore import RunDir, check_alias
from distill.binding import BindingConfig, build_binding_teacher
from distill.cka import linear_cka
from distill.data import IGNORE_INDEX, Collator
from distill.experiment import (
    cached_info,
    run_arms,
    run_loop,
    save_model,
    summarise,
    write_outputs,
)
from distill.heads import Head, HeadTap, head_means, layout, train_only_heads
from distill.objectives.circuit import CircuitCKA, FinalTokenCE, final_logits
from distill.objectives.sft import SFT
from distill.student import load_model, normalize_base_spec, student_spec
from distill.tasks import (
    EntityExample,
    entity_recall_sequences,
    entity_tracking,
    entity_vocabulary,
)

METRICS = ["accuracy", "circuit_accuracy", "faithfulness", "matched_cka"]
BINDING_TEACHER = "binding"  # --teacher binding: distill.binding's purpose-trained teacher


def binding_config(settings: CircuitSettings) -> BindingConfig:
    """The binding teacher for these task settings: their template, validated on their
    box range, its curriculum grown up to their largest number of boxes."""
    return replace(BindingConfig(), template=settings.task_template(), max_boxes=settings.max_boxes,
                   val_boxes=(settings.min_boxes, settings.max_boxes))  # fmt: skip


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
@dataclass
class Encoded:
    """One split tokenized for one model: left-padded ids/mask, the gold answer token."""

    ids: torch.Tensor
    mask: torch.Tensor
    answer: torch.Tensor


def token_of(tokenizer: Any, word: str) -> int:
    return tokenizer.encode(word, add_special_tokens=False)[0]


def encode(examples: list[EntityExample], tokenizer: Any, width: int) -> Encoded:
    """Left-pad every prompt to ``width`` so the final token is column -1 everywhere."""
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    ids = torch.full((len(examples), width), int(pad or 0), dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for i, ex in enumerate(examples):
        toks = tokenizer(ex.prompt)["input_ids"][-width:]
        ids[i, width - len(toks) :] = torch.tensor(toks)
        mask[i, width - len(toks) :] = 1
    answer = torch.tensor([token_of(tokenizer, ex.answer) for ex in examples])
    return Encoded(ids, mask, answer)


class TaskSet(Dataset):
    """Rows of named tensors (what the loop's default collate stacks)."""

    def __init__(self, **columns: torch.Tensor):
        self.columns = columns
        self.n = len(next(iter(columns.values())))

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[i] for k, v in self.columns.items()}

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for k in sorted(self.columns):
            h.update(k.encode())
            h.update(self.columns[k].numpy().tobytes())
        return "sha256:" + h.hexdigest()


def batches(ds: TaskSet, size: int = 128) -> Any:
    return DataLoader(ds, batch_size=size, collate_fn=default_collate)


# ---------------------------------------------------------------------------------------
# scoring
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def answer_scores(
    model: Any,
    ds: TaskSet,
    *,
    ablate: set[Head] | None = None,
    means: torch.Tensor | None = None,
    restrict: torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(correct, answer log-prob, prediction) per prompt; ``ablate`` heads mean-ablated.
    ``restrict`` (token ids) makes the prediction an argmax over those tokens only."""
    model.eval()
    correct, logp, pred = [], [], []
    with HeadTap(model) as tap:
        tap.ablate = set(ablate or ())
        tap.means = means
        for b in batches(ds):
            logits = final_logits(model, b["input_ids"], b["attention_mask"])
            lp = torch.log_softmax(logits, dim=-1)
            if restrict is not None:
                p = restrict[logits[:, restrict].argmax(dim=-1)]
            else:
                p = logits.argmax(dim=-1)
            correct.append((p == b["answer"]).numpy())
            logp.append(lp.gather(1, b["answer"][:, None])[:, 0].numpy())
            pred.append(p.numpy())
    return np.concatenate(correct), np.concatenate(logp), np.concatenate(pred)


def performance(model: Any, ds: TaskSet, **kw: Any) -> dict[str, float]:
    correct, logp, _ = answer_scores(model, ds, **kw)
    return {"accuracy": float(correct.mean()), "logprob": float(logp.mean())}


def scan_heads(
    model: Any, ds: TaskSet, means: torch.Tensor, progress: bool, desc: str
) -> dict[Head, dict[str, float]]:
    """Performance with each head mean-ablated in turn."""
    from bbi.console import progress_bar

    heads = layout(model).heads
    return {
        h: performance(model, ds, ablate={h}, means=means)
        for h in progress_bar(heads, desc=desc, disable=not progress, leave=False)
    }


def scan_leave_one_in(
    model: Any, ds: TaskSet, means: torch.Tensor, progress: bool, desc: str
) -> tuple[dict[int, dict[str, float]], dict[Head, dict[str, float]]]:
    """Performance with each layer's heads all mean-ablated, and with all of them but one
    (leave-one-in). Heads that back each other up cost nothing ablated one at a time;
    each of them alone restores what its ablated layer loses."""
    from bbi.console import progress_bar

    lay = layout(model)
    layers: dict[int, dict[str, float]] = {}
    kept: dict[Head, dict[str, float]] = {}
    for layer in progress_bar(range(len(lay.attns)), desc=desc, disable=not progress, leave=False):
        every = {(layer, h) for h in range(lay.n_heads)}
        layers[layer] = performance(model, ds, ablate=every, means=means)
        for h in sorted(every):
            kept[h] = performance(model, ds, ablate=every - {h}, means=means)
    return layers, kept


def pick_circuit(
    base_s: dict[str, float],
    abl_s: dict[Head, dict[str, float]],
    abl_t: dict[Head, dict[str, float]],
    k: int,
    score: str,
    group: tuple[dict[int, dict[str, float]], dict[Head, dict[str, float]]] | None = None,
) -> tuple[list[Head], list[tuple[Head, Head]], dict[str, Any]]:
    """Top-k student heads by dP_s; each matched to argmin_t |dP_s - dP_t|.

    With ``group`` (``scan_leave_one_in`` of the teacher: per-layer and leave-one-in
    performance) the teacher heads are instead ranked by what each restores alone,
    P_t(only h left in its layer) - P_t(its layer ablated) (ties by the single-ablation
    drop), and the top k are paired one-to-one with the circuit heads, both in (layer,
    head) order: redundant heads, which single ablation scores as idle, can be matched.
    """
    other = "logprob" if score == "accuracy" else "accuracy"
    d_s = {h: base_s[score] - v[score] for h, v in abl_s.items()}
    d_s2 = {h: base_s[other] - v[other] for h, v in abl_s.items()}
    d_t = {h: base_s[score] - v[score] for h, v in abl_t.items()}
    ranked = sorted(d_s, key=lambda h: (-d_s[h], -d_s2[h], h))
    circuit = sorted(ranked[:k])
    teacher_heads = sorted(d_t)
    scores: dict[str, Any] = {
        "student": {f"{h[0]}.{h[1]}": d_s[h] for h in sorted(d_s)},
        "teacher": {f"{h[0]}.{h[1]}": d_t[h] for h in teacher_heads},
    }
    if group is None:
        pairs = [(h, min(teacher_heads, key=lambda t: (abs(d_s[h] - d_t[t]), t))) for h in circuit]
        return circuit, pairs, scores
    layers, kept = group
    restore = {h: kept[h][score] - layers[h[0]][score] for h in kept}
    order = sorted(restore, key=lambda t: (-restore[t], -d_t.get(t, 0.0), t))
    top = sorted(order[i % len(order)] for i in range(len(circuit)))  # cycles if k > heads
    scores["teacher_layer_ablated"] = {str(layer): v[score] for layer, v in sorted(layers.items())}
    scores["teacher_restore"] = {f"{h[0]}.{h[1]}": restore[h] for h in sorted(restore)}
    return circuit, list(zip(circuit, top, strict=True)), scores


@torch.no_grad()
def head_outputs(model: Any, ds: TaskSet, heads: list[Head], side: str = "") -> dict:
    """Final-token outputs of ``heads`` over a whole split (``side="t_"``: the teacher's
    inputs of the rows)."""
    out: dict[Head, list] = {h: [] for h in heads}
    with HeadTap(model) as tap:
        tap.capture = set(heads)
        for b in batches(ds):
            model(input_ids=b[f"{side}input_ids"], attention_mask=b[f"{side}attention_mask"])
            for h in heads:
                out[h].append(tap.captured[h])
    return {h: torch.cat(v) for h, v in out.items()}


def matched_cka(xs: dict, xt: dict, pairs: list[tuple[Head, Head]]) -> float:
    """Mean CKA of matched heads' outputs (``head_outputs`` of student and teacher)."""
    vals = [float(linear_cka(xs[s], xt[t])) for s, t in pairs]
    return float(np.mean(vals)) if vals else 0.0


# ---------------------------------------------------------------------------------------
# teacher
# ---------------------------------------------------------------------------------------
class Sequences(Dataset):
    """Multi-query training sequences: ids, and labels only on the answer tokens."""

    def __init__(self, seqs: list[list[tuple[str, bool]]], tokenizer: Any):
        self.examples = []
        for segs in seqs:
            ids: list[int] = []
            labels: list[int] = []
            for i, (text, answer) in enumerate(segs):
                toks = tokenizer(text, add_special_tokens=i == 0)["input_ids"]
                ids += toks
                labels += toks if answer else [IGNORE_INDEX] * len(toks)
            self.examples.append({"input_ids": ids, "labels": labels})

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int) -> dict[str, list[int]]:
        return self.examples[i]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for ex in self.examples:
            h.update(np.asarray(ex["input_ids"] + [-1] + ex["labels"], dtype=np.int64).tobytes())
        return "sha256:" + h.hexdigest()


def tuned_teacher(
    teacher_spec: str,
    settings: CircuitSettings,
    seqs: list[list[tuple[str, bool]]],
    out: Path,
    progress: bool,
) -> tuple[Any, Any, dict[str, Any]]:
    """The teacher fine-tuned on its split (every weight; CE on every answer of
    multi-query sequences), reused from ``out`` when the same base, data and settings
    made it."""
    from transformers import AutoModelForCausalLM

    model, tok, fp = load_model(teacher_spec)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    data = Sequences(seqs, tok)
    identity = {
        "base": teacher_spec,
        "base_fingerprint": fp,
        "data": data.fingerprint(),
        "epochs": settings.teacher_epochs,
        "lr": settings.teacher_lr,
        "batch_size": settings.batch_size,
    }
    info = cached_info(out, identity)
    if info is not None:
        return AutoModelForCausalLM.from_pretrained(out).eval(), tok, info
    info = {"identity": identity}
    if settings.teacher_epochs > 0:
        for p in model.parameters():
            p.requires_grad_(True)
        n_eval = min(256, len(data) // 8)  # a progress signal, not a selection criterion
        heldout, train_part = Subset(data, range(n_eval)), Subset(data, range(n_eval, len(data)))
        outcome = run_loop(
            model, SFT(), train_part, heldout, hp=settings.loop(0, teacher=True),
            collate=Collator(int(pad or 0)), work=out.with_name("work"), progress=progress,
            desc="tune teacher", identity={"role": "teacher", **identity},
        )  # fmt: skip
        model = outcome.model
        info["train_loss_per_epoch"] = outcome.state["train_loss_per_epoch"]
        info["eval_loss_per_epoch"] = outcome.state["eval_loss_per_epoch"]
    save_model(model, tok, out, info)
    return model.eval(), tok, info


# ---------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------
def distill_circuit(
    student: str,
    settings: CircuitSettings,
    out: Path,
    *,
    run: RunDir | None = None,
    alias: str = "student_circuit",
    progress: bool = True,
) -> dict[str, Any]:
    """Run the method and its controls over the seeds; write ``out`` (see module doc)."""
    t0 = time.perf_counter()
    check_alias(alias)
    student = normalize_base_spec(student)
    # A teacher spec that cannot be one is refused before the student loads (or builds).
    teacher_spec = (
        None
        if settings.teacher == BINDING_TEACHER
        else normalize_base_spec(settings.teacher, "use as a teacher")
    )
    s_model, s_tok, s_fp = load_model(student)
    binding: dict[str, Any] | None = None
    if teacher_spec is None:
        # Trained from scratch on the task with the student's tokenizer (cached by
        # content); used as it is, never tuned again.
        path, binding = build_binding_teacher(s_tok, binding_config(settings), progress=progress)
        teacher_spec = f"hf:{path.as_posix()}"
    _, t_tok, _ = load_model(teacher_spec)
    layout(s_model)  # a one-line error before any work for an unsupported architecture
    objects, boxes = entity_vocabulary([s_tok, t_tok])
    gen = dict(objects=objects, boxes=boxes, min_boxes=settings.min_boxes,
               max_boxes=settings.max_boxes, template=settings.task_template())  # fmt: skip
    # Split seeds are disjoint by construction (different names).
    teacher_seqs = (
        []
        if binding is not None
        else entity_recall_sequences(
            settings.n_teacher_train, "teacher", queries=settings.teacher_queries, **gen
        )
    )  # the binding teacher is never tuned
    scan_ex = entity_tracking(settings.n_scan, "scan", **gen)
    abl_ex = entity_tracking(settings.n_ablation, "ablation", **gen)
    eval_ex = entity_tracking(settings.n_eval, "heldout", **gen)
    train_ex = {s: entity_tracking(settings.n_train, f"train-{s}", **gen) for s in settings.seeds}
    every = [scan_ex, abl_ex, eval_ex, *train_ex.values()]
    s_w = max(len(s_tok(e.prompt)["input_ids"]) for ex in every for e in ex)
    t_w = max(len(t_tok(e.prompt)["input_ids"]) for ex in every for e in ex)

    if binding is not None:
        teacher, t_tok, _ = load_model(teacher_spec)
        teacher_dir = teacher_spec.removeprefix("hf:")
    else:
        teacher, t_tok, _ = tuned_teacher(teacher_spec, settings, teacher_seqs,
                                          out / "teacher", progress)  # fmt: skip
        teacher_dir = (out / "teacher").as_posix()
    teacher.eval().requires_grad_(False)
    t_objects = torch.tensor([token_of(t_tok, " " + o) for o in objects])
    s_objects = torch.tensor([token_of(s_tok, " " + o) for o in objects])

    def split(examples: list[EntityExample]) -> TaskSet:
        """Student-side rows, the teacher's inputs beside them, and the teacher's answer
        (its argmax over the objects) as the training label in the student's vocabulary."""
        s, t = encode(examples, s_tok, s_w), encode(examples, t_tok, t_w)
        t_set = TaskSet(input_ids=t.ids, attention_mask=t.mask, answer=t.answer)
        _, _, t_pred = answer_scores(teacher, t_set, restrict=t_objects)
        index = {int(tok): i for i, tok in enumerate(t_objects)}
        label = s_objects[[index[int(p)] for p in t_pred]]
        return TaskSet(input_ids=s.ids, attention_mask=s.mask, answer=s.answer, label=label,
                       t_input_ids=t.ids, t_attention_mask=t.mask, t_answer=t.answer)  # fmt: skip

    scan, abl, heldout = split(scan_ex), split(abl_ex), split(eval_ex)
    t_view = {
        name: TaskSet(input_ids=ds.columns["t_input_ids"],
                      attention_mask=ds.columns["t_attention_mask"], answer=ds.columns["t_answer"])
        for name, ds in (("scan", scan), ("ablation", abl), ("heldout", heldout))
    }  # fmt: skip
    teacher_perf = performance(teacher, t_view["heldout"])
    s_means = head_means(s_model, iter(batches(abl)), s_w)
    t_means = head_means(teacher, iter(batches(t_view["ablation"])), t_w)
    base_s = performance(s_model, scan)
    abl_s = scan_heads(s_model, scan, s_means, progress, "scan student heads")
    abl_t = scan_heads(teacher, t_view["scan"], t_means, progress, "scan teacher heads")
    s_heads, t_heads = layout(s_model).heads, layout(teacher).heads
    k = max(1, math.ceil(settings.heads_fraction * len(s_heads) - 1e-9))
    group = (
        scan_leave_one_in(teacher, t_view["scan"], t_means, progress, "scan teacher layers")
        if settings.matching == "group"
        else None
    )
    circuit, pairs, head_scores = pick_circuit(base_s, abl_s, abl_t, k, settings.score, group)
    t_out = head_outputs(teacher, heldout, t_heads, side="t_")  # frozen: once for every arm
    train_sets = {seed: split(ex) for seed, ex in train_ex.items()}  # teacher labels once
    if settings.cka_positions == "all" and any(
        not torch.equal(ds.columns["attention_mask"].sum(1), ds.columns["t_attention_mask"].sum(1))
        for ds in train_sets.values()
    ):
        raise BbiError(
            "cka_positions all: the student and teacher tokenize the prompts differently, "
            "so their positions do not line up (use final)"
        )

    def evaluate(model: Any, heads: list[Head], arm_pairs: list[tuple[Head, Head]]) -> dict:
        full = performance(model, heldout)["accuracy"]
        means = head_means(model, iter(batches(abl)), s_w)
        only = performance(model, heldout, ablate=set(s_heads) - set(heads), means=means)
        return {
            "accuracy": full,
            "circuit_accuracy": only["accuracy"],
            "faithfulness": only["accuracy"] / full if full > 0 else 0.0,
            "matched_cka": matched_cka(
                head_outputs(model, heldout, sorted({h for h, _ in arm_pairs})), t_out, arm_pairs
            ),
        }

    base_metrics = evaluate(s_model, circuit, pairs)

    def train_arm(seed: int, arm: str) -> tuple[dict, dict]:
        if arm == "random":
            rng = np.random.default_rng([seed, 7])
            heads = sorted(tuple(s_heads[i]) for i in rng.choice(len(s_heads), k, replace=False))
            arm_pairs = [(h, tuple(t_heads[i])) for h, i in
                         zip(heads, rng.choice(len(t_heads), k, replace=True), strict=True)]  # fmt: skip
        else:
            heads, arm_pairs = circuit, pairs
        objective = (
            FinalTokenCE()
            if arm == "ce"
            else CircuitCKA(
                teacher,
                arm_pairs,
                settings.cka_weight,
                settings.cka_bank,
                settings.cka_unbiased,
                settings.cka_positions,
            )  # fmt: skip
        )
        with train_only_heads(s_model, set(heads)) as n_trainable:
            outcome = run_loop(
                s_model, objective, train_sets[seed], scan, hp=settings.loop(seed),
                collate=default_collate, work=out / "work", desc=f"{arm} seed {seed}",
                identity={"role": "student", "arm": arm, "base": student, "base_fingerprint": s_fp},
                metrics_path=out / "arms" / f"{arm}-seed{seed}.jsonl",
            )  # fmt: skip
        return evaluate(outcome.model.eval(), heads, arm_pairs), {
            "heads": [list(h) for h in heads],
            "pairs": [[list(s), list(t)] for s, t in arm_pairs],
            "trainable_weights": n_trainable,
            "train_loss_per_epoch": outcome.state["train_loss_per_epoch"],
            "eval_loss_per_epoch": outcome.state["eval_loss_per_epoch"],
            "train_time_s": outcome.train_time_s,
        }

    per_seed, arms_detail, kept_model = run_arms(
        s_model, seeds=settings.seeds, arms=settings.arms, method="circuit",
        untrained=base_metrics, train_arm=train_arm, progress=progress, desc="circuit arms",
    )  # fmt: skip
    behaviour = summarise(
        per_seed, method="circuit", controls=[a for a in settings.arms if a != "circuit"],
        metrics=METRICS, seeds=settings.seeds, confidence=settings.confidence,
        higher_is_better={m: True for m in METRICS},
        unit_interval=("accuracy", "circuit_accuracy", "matched_cka"),
    )  # fmt: skip
    model_dir = out / "model"
    s_model.load_state_dict(kept_model)
    save_model(s_model, s_tok, model_dir)
    spec = student_spec(student, model_dir, full=True)
    record = {
        "spec": spec,
        "method": "circuit",
        "finetune": "circuit heads",
        "base": student,
        "base_fingerprint": s_fp,
        "teacher": teacher_spec,
        "teacher_tuned": teacher_dir,
        "binding_teacher": None if binding is None else {
            k: binding[k] for k in ("config", "params", "curriculum", "selected", "train_seconds")
        },
        "teacher_accuracy": teacher_perf["accuracy"],
        "student_accuracy": base_metrics["accuracy"],
        "model_dir": model_dir.as_posix(),
        "seed": settings.seeds[0],
        "settings": settings.model_dump(),
        "task": {"name": "entity_tracking", "template": settings.task_template(),
                 "objects": objects, "boxes": boxes,
                 "n": {"teacher": len(teacher_seqs), "train": settings.n_train,
                       "scan": len(scan_ex), "ablation": len(abl_ex), "heldout": len(eval_ex)}},
        "circuit": {"k": k, "of": len(s_heads), "heads": [list(h) for h in circuit],
                    "pairs": [[list(s), list(t)] for s, t in pairs], "score": settings.score,
                    "matching": settings.matching,
                    "baseline": base_s, "delta_p": head_scores},
        "arms": arms_detail,
        "behaviour": behaviour,
        "time_s": time.perf_counter() - t0,
    }  # fmt: skip
    write_outputs(out, record, run=run, alias=alias if run is not None else None)
    return record


__all__ = ["METRICS", "distill_circuit", "pick_circuit", "scan_leave_one_in"]
