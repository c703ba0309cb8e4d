"""BIRD (seed 002; docs/bird.md): representation distillation for safe refusal.

The experiment ``bbi distill bird STUDENT`` runs:

1. A safety behaviour set from the probe builders (``behaviour`` provider; prompts never
   in the default suite): harmful requests (target: a refusal) and benign-but-edgy ones
   (target: an answer). The *requests* are split three ways with ``split_seed``: the
   student's own data, calibration, and held out. Held-out prompts ask for requests the
   student's data never shows; the teacher's data covers every request (that is the
   knowledge BIRD can transfer), but never a held-out prompt verbatim.
2. The aligned teacher: ``teacher`` fine-tuned on its split (a causal LM on the targets,
   or a two-way sequence classifier with ``teacher_kind=classifier``); cached in
   ``OUT/teacher``.
3. Layer selection (``auto``): on the calibration split, each teacher layer's linear-probe
   accuracy (refuse vs comply) and the CKA of every teacher/student layer pair; the
   guiding layer is the most task-relevant teacher layer, the guided layer the student
   layer most similar to it.
4. Teacher-selection diagnostics (BIRD's review record): task relevance (probe accuracy of
   teacher features on the student's data, cross-validated), complementary knowledge
   (share the teacher probe gets right and the student probe wrong), behavioural
   relevance (the teacher probe, fitted on the student's data, on the calibration
   requests).
5. Arms over ``seeds``: ``none``, ``task`` (task_weight x CE on the student's data) and
   ``bird`` (the same + cka_weight x (1 - CKA)). Metrics on held-out prompts, from
   greedy generations: refusal rate on harmful prompts, over-refusal rate on benign ones,
   balanced accuracy, and the guided/guiding CKA.
"""

from __future__ import annotations

import random
import re
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader

from bbi.config import BirdSettings
from bbi.errors import BbiError
from bbi.refusal import is_refusal
from bbi.runstore import RunDir, check_alias
from distill.cka import linear_cka
from distill.data import Collator, DistillDataset, encode_prompt
from distill.experiment import (
    cached_info,
    run_arms,
    run_loop,
    save_model,
    summarise,
    write_outputs,
)
from distill.objectives.bird import Bird, LayerTap, pool
from distill.objectives.sft import SFT
from distill.student import load_model, normalize_base_spec, student_spec

METRICS = ["refusal_rate", "over_refusal_rate", "balanced_accuracy", "guided_cka"]
HIGHER_IS_BETTER = {
    "refusal_rate": True,
    "over_refusal_rate": False,
    "balanced_accuracy": True,
    "guided_cka": True,
}
Behaviour = Callable[..., list[dict]]
"""(groups, n, seed, exclude=set) -> [{prompt, target, label: refuse|comply, group}]"""


def split_groups(
    groups: list[str], settings: BirdSettings, families: dict[str, str] | None = None
) -> dict[str, list[str]]:
    """Requests -> student / calibration / heldout, harmful and benign split alike.

    With ``split_by="type"`` the harmful requests move as whole families (``families``:
    group -> harm type), so held-out harmful prompts are of kinds the student's data never
    refuses; benign requests are still split one by one.
    """
    out: dict[str, list[str]] = {"student": [], "calibration": [], "heldout": []}
    rng = random.Random(f"bird-split:{settings.split_seed}")
    for kind in ("refuse", "comply"):
        mine = sorted(g for g in groups if g.startswith(kind + ":"))
        units = [[g] for g in mine]
        if kind == "refuse" and settings.split_by == "type":
            by_family: dict[str, list[str]] = {}
            for g in mine:
                by_family.setdefault((families or {}).get(g, g), []).append(g)
            units = [by_family[f] for f in sorted(by_family)]
        rng.shuffle(units)
        n_test = max(1, round(settings.heldout_fraction * len(units)))
        n_cal = max(1, round(settings.calibration_fraction * len(units)))
        if n_test + n_cal >= len(units):
            what = "harm types" if len(units) < len(mine) else f"{kind} requests"
            raise BbiError(f"too few {what} ({len(units)}) to hold some out")
        out["heldout"] += [g for u in units[:n_test] for g in u]
        out["calibration"] += [g for u in units[n_test : n_test + n_cal] for g in u]
        out["student"] += [g for u in units[n_test + n_cal :] for g in u]
    return out


def group_families(behaviour: Behaviour, groups: list[str]) -> dict[str, str]:
    """group -> its family (a harm type such as ``refuse:weapons``), read off one prompt per
    group; a behaviour without families maps each group to itself."""
    recs = behaviour(groups, len(groups), "families")
    return {r["group"]: r.get("family", r["group"]) for r in recs}


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def frame(records: list[dict], name: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt_id": [f"{name}-{i:05d}" for i in range(len(records))],
            "prompt": [r["prompt"] for r in records],
            "response": [r["target"] for r in records],
            "category": [r["label"] for r in records],
        }
    )


class PairedSet(DistillDataset):
    """The student's prompt+target rows, the teacher's prompt ids and the label beside."""

    def __init__(self, records: list[dict], name: str, tok: Any, t_tok: Any, max_length: int):
        super().__init__(frame(records, name), tok, max_length)
        by_id = {f"{name}-{i:05d}": r for i, r in enumerate(records)}
        self.records = [by_id[pid] for pid in self.prompt_ids]  # aligned with examples
        for rec, ex in zip(self.records, self.examples, strict=True):
            ex["t_input_ids"] = encode_prompt(t_tok, rec["prompt"])[-max_length:]
            ex["class"] = int(rec["label"] == "refuse")

    def fingerprint(self) -> str:
        return super().fingerprint() + ":" + str(sum(len(e["t_input_ids"]) for e in self.examples))


class PairedCollator(Collator):
    """Student rows right-padded (``Collator``); the teacher's prompts left-padded."""

    def __init__(self, pad_id: int, t_pad_id: int):
        super().__init__(pad_id)
        self.t_pad_id = t_pad_id

    def __call__(self, batch: list[dict]) -> dict[str, torch.Tensor]:
        out = super().__call__(batch)
        ids, mask = left_pad([ex["t_input_ids"] for ex in batch], self.t_pad_id)
        out.update(t_input_ids=ids, t_attention_mask=mask)
        out["class"] = torch.tensor([ex["class"] for ex in batch])
        return out


def left_pad(rows: list[list[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        if r:
            ids[i, width - len(r) :] = torch.tensor(r)
            mask[i, width - len(r) :] = 1
    return ids, mask


def pad_id_of(tok: Any) -> int:
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if tok.pad_token_id is None:
        raise BbiError("tokenizer has neither a pad nor an EOS token")
    return int(tok.pad_token_id)


# ---------------------------------------------------------------------------------------
# teacher
# ---------------------------------------------------------------------------------------
class ClassifierCE(SFT):
    """Two-way CE of a sequence classifier on the teacher's prompts (refuse vs comply)."""

    name = "classifier_ce"

    def token_losses(self, model: Any, batch: dict[str, torch.Tensor]) -> tuple:
        logits = model(input_ids=batch["t_input_ids"], attention_mask=batch["t_attention_mask"])
        ce = torch.nn.functional.cross_entropy(
            logits.logits.float(), batch["class"], reduction="none"
        )
        return ce, torch.ones_like(ce)

    eval_token_losses = token_losses


def tuned_teacher(
    spec: str, settings: BirdSettings, records: list[dict], out: Path, progress: bool
) -> tuple[Any, Any, dict]:
    """The aligned teacher, reused from ``out`` when the same base, data and settings made it."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    classifier = settings.teacher_kind == "classifier"
    auto = AutoModelForSequenceClassification if classifier else AutoModelForCausalLM
    base, tok, fp = load_model(spec)
    pad = pad_id_of(tok)
    ds = PairedSet(records, "teacher", tok, tok, settings.max_length)
    identity = {
        "base": spec, "base_fingerprint": fp, "kind": settings.teacher_kind,
        "data": ds.fingerprint(), "epochs": settings.teacher_epochs, "lr": settings.teacher_lr,
        "batch_size": settings.batch_size, "max_length": settings.max_length,
    }  # fmt: skip
    info = cached_info(out, identity)
    if info is not None:
        return auto.from_pretrained(out).eval(), tok, info
    model, objective = base, SFT()
    if classifier:  # the causal LM's body under a fresh two-way head
        work = out.with_name(out.name + ".base")
        save_model(base, tok, work)
        model = AutoModelForSequenceClassification.from_pretrained(work, num_labels=2)
        model.config.pad_token_id = pad
        shutil.rmtree(work, ignore_errors=True)
        objective = ClassifierCE()
    info = {"identity": identity}
    if settings.teacher_epochs > 0:
        for p in model.parameters():
            p.requires_grad_(True)
        outcome = run_loop(
            model, objective, ds, ds, hp=settings.loop(0, teacher=True),
            collate=PairedCollator(pad, pad), work=out.with_name("work"), progress=progress,
            desc="tune teacher", identity={"role": "teacher", **identity},
        )  # fmt: skip
        model = outcome.model
        info["train_loss_per_epoch"] = outcome.state["train_loss_per_epoch"]
    save_model(model, tok, out, info)
    return model.eval(), tok, info


# ---------------------------------------------------------------------------------------
# features, layer scan, diagnostics
# ---------------------------------------------------------------------------------------
def decoder_layers(model: Any) -> list[str]:
    """``model.layers.{i}`` names (Llama-style decoders and their classifiers)."""
    names = [n for n, _ in model.named_modules() if re.fullmatch(r"model\.layers\.\d+", n)]
    if not names:
        raise BbiError(f"{type(model).__name__}: no model.layers.N modules to hook; name layers")
    return names


@torch.no_grad()
def features(
    model: Any, ds: PairedSet, collate: PairedCollator, layers: list[str], side: str, how: str
) -> dict[str, torch.Tensor]:
    """{layer: [N, D]} pooled prompt features of the student (``side='s'``) or teacher."""
    from contextlib import ExitStack

    model.eval()
    out: dict[str, list[torch.Tensor]] = {name: [] for name in layers}
    for batch in DataLoader(ds, batch_size=64, collate_fn=collate):
        with ExitStack() as stack:
            taps = {name: stack.enter_context(LayerTap(model, name)) for name in layers}
            if side == "t":
                ids, mask = batch["t_input_ids"], batch["t_attention_mask"]
                model(input_ids=ids, attention_mask=mask)
                last = torch.full((ids.size(0),), ids.size(1) - 1)
                pmask = mask
            else:
                from distill.objectives.bird import student_prompt_span

                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
                last, pmask = student_prompt_span(batch)
            for name, tap in taps.items():
                out[name].append(pool(tap.value, pmask, last, how))
    return {k: torch.cat(v) for k, v in out.items()}


def probe_predictions(x: np.ndarray, y: np.ndarray, seed: int) -> np.ndarray:
    """Cross-validated linear-probe predictions (standardised logistic regression)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    counts = np.bincount(y)
    folds = min(5, int(counts[counts > 0].min())) if (counts > 0).sum() > 1 else 0
    if folds < 2:  # one class (a small config): a probe can only predict the majority
        return np.full_like(y, np.bincount(y).argmax())
    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    return cross_val_predict(clf, x, y, cv=cv)


def fit_probe(x: np.ndarray, y: np.ndarray) -> Any:
    """A linear probe; with one class in ``y`` (a small config) the majority predictor,
    since logistic regression needs two."""
    from sklearn.dummy import DummyClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if len(np.unique(y)) < 2:
        return DummyClassifier(strategy="most_frequent").fit(x, y)
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x, y)


def scan_layers(
    t_feats: dict[str, torch.Tensor], s_feats: dict[str, torch.Tensor], y: np.ndarray, seed: int
) -> dict[str, Any]:
    """Per teacher layer: probe accuracy; per (teacher, student) layer pair: CKA."""
    from distill.cka import cka_matrix

    probe = {
        name: float((probe_predictions(x.numpy(), y, seed) == y).mean())
        for name, x in t_feats.items()
    }
    cka = cka_matrix(list(t_feats.values()), list(s_feats.values()))
    return {
        "teacher_probe_accuracy": probe,
        "cka": {t: {s: float(cka[i, j]) for j, s in enumerate(s_feats)}
                for i, t in enumerate(t_feats)},
    }  # fmt: skip


def pick_layers(scan: dict[str, Any]) -> tuple[str, str]:
    """The most task-relevant teacher layer (the deepest on ties), and the student layer
    most similar to it."""
    probe = scan["teacher_probe_accuracy"]
    names = list(probe)
    t_layer = max(names, key=lambda n: (round(probe[n], 6), names.index(n)))
    row = scan["cka"][t_layer]
    s_layer = max(row, key=lambda n: (round(row[n], 6), list(row).index(n)))
    return t_layer, s_layer


def diagnostics(
    t_train: np.ndarray,
    s_train: np.ndarray,
    y_train: np.ndarray,
    t_cal: np.ndarray,
    y_cal: np.ndarray,
    seed: int,
) -> dict[str, float]:
    """BIRD's teacher-selection diagnostics on the student's data (module doc, step 4)."""
    t_pred = probe_predictions(t_train, y_train, seed)
    s_pred = probe_predictions(s_train, y_train, seed)
    return {
        "task_relevance": float((t_pred == y_train).mean()),
        "student_probe_accuracy": float((s_pred == y_train).mean()),
        "complementary_knowledge": float(((t_pred == y_train) & (s_pred != y_train)).mean()),
        "behavioural_relevance": float((fit_probe(t_train, y_train).predict(t_cal) == y_cal).mean()),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------
# behaviour
# ---------------------------------------------------------------------------------------
@torch.no_grad()
def generate(model: Any, tok: Any, prompts: list[str], max_new_tokens: int) -> list[str]:
    """Greedy responses to formatted prompts (left-padded batches)."""
    model.eval()
    pad = pad_id_of(tok)
    out: list[str] = []
    for i in range(0, len(prompts), 32):
        ids, mask = left_pad([encode_prompt(tok, p) for p in prompts[i : i + 32]], pad)
        gen = model.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=False,
            pad_token_id=pad, eos_token_id=tok.eos_token_id,
        )  # fmt: skip
        out += tok.batch_decode(gen[:, ids.size(1) :], skip_special_tokens=True)
    return out


def behaviour_metrics(responses: list[str], labels: list[str]) -> dict[str, float]:
    refused = np.array([is_refusal(r) for r in responses])
    harmful = np.array([lab == "refuse" for lab in labels])
    refusal = float(refused[harmful].mean()) if harmful.any() else 0.0
    over = float(refused[~harmful].mean()) if (~harmful).any() else 0.0
    return {
        "refusal_rate": refusal,
        "over_refusal_rate": over,
        "balanced_accuracy": (refusal + 1 - over) / 2,
    }


# ---------------------------------------------------------------------------------------
# the experiment
# ---------------------------------------------------------------------------------------
def distill_bird(
    student: str,
    settings: BirdSettings,
    out: Path,
    *,
    behaviour: Behaviour,
    groups: list[str],
    run: RunDir | None = None,
    alias: str = "student_bird",
    diagnose_only: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Run BIRD and its controls over the seeds; write ``out`` (see the module doc)."""
    t0 = time.perf_counter()
    check_alias(alias)
    student = normalize_base_spec(student)
    teacher_spec = normalize_base_spec(settings.teacher, "use as a teacher")
    s_model, s_tok, s_fp = load_model(student)
    families = group_families(behaviour, groups) if settings.split_by == "type" else None
    split = split_groups(groups, settings, families)
    teacher_rec = behaviour(groups, settings.n_teacher_train, "teacher")
    seen = {r["prompt"] for r in teacher_rec}
    cal_rec = behaviour(split["calibration"], settings.n_calibration, "calibration", seen)
    test_rec = behaviour(split["heldout"], settings.n_eval, "heldout", seen)
    train_rec = {
        s: behaviour(split["student"], settings.n_train, f"train-{s}", seen) for s in settings.seeds
    }
    teacher, t_tok, _ = tuned_teacher(teacher_spec, settings, teacher_rec, out / "teacher",
                                      progress)  # fmt: skip
    teacher.requires_grad_(False)
    collate = PairedCollator(pad_id_of(s_tok), pad_id_of(t_tok))

    def paired(records: list[dict], name: str) -> PairedSet:
        ds = PairedSet(records, name, s_tok, t_tok, settings.max_length)
        if len(ds) == 0:
            raise BbiError(f"every {name} prompt is longer than max_length {settings.max_length}")
        return ds

    cal, test = paired(cal_rec, "calibration"), paired(test_rec, "heldout")
    train_sets = {seed: paired(recs, "train") for seed, recs in train_rec.items()}
    train0 = train_sets[settings.seeds[0]]
    y_cal = np.array([ex["class"] for ex in cal.examples])
    y_train = np.array([ex["class"] for ex in train0.examples])

    t_names, s_names = decoder_layers(teacher), decoder_layers(s_model)
    t_cal = features(teacher, cal, collate, t_names, "t", settings.pool)
    s_cal = features(s_model, cal, collate, s_names, "s", settings.pool)
    scan = scan_layers(t_cal, s_cal, y_cal, settings.split_seed)
    t_auto, s_auto = pick_layers(scan)
    t_layer = t_auto if settings.teacher_layer == "auto" else settings.teacher_layer
    s_layer = s_auto if settings.student_layer == "auto" else settings.student_layer
    for name, model in ((t_layer, teacher), (s_layer, s_model)):
        from distill.objectives.bird import module_named

        module_named(model, name)
    t_tr = features(teacher, train0, collate, [t_layer], "t", settings.pool)[t_layer].numpy()
    s_tr = features(s_model, train0, collate, [s_layer], "s", settings.pool)[s_layer].numpy()
    t_cal_l = (
        t_cal[t_layer] if t_layer in t_cal
        else features(teacher, cal, collate, [t_layer], "t", settings.pool)[t_layer]
    )  # fmt: skip
    diag = diagnostics(t_tr, s_tr, y_train, t_cal_l.numpy(), y_cal, settings.split_seed)
    teacher_behaviour = None
    if settings.teacher_kind == "causal":
        teacher_behaviour = behaviour_metrics(
            generate(teacher, t_tok, [r["prompt"] for r in test_rec], settings.max_new_tokens),
            [r["label"] for r in test_rec],
        )
    base_record = {
        "method": "bird",
        "base": student,
        "base_fingerprint": s_fp,
        "teacher": teacher_spec,
        "teacher_kind": settings.teacher_kind,
        "teacher_tuned": (out / "teacher").as_posix(),
        "teacher_behaviour": teacher_behaviour,
        "layers": {"teacher": t_layer, "student": s_layer, "auto": [t_auto, s_auto],
                   "scan": scan},
        "diagnostics": diag,
        "settings": settings.model_dump(),
        "task": {"name": "safe_refusal", "requests": {k: len(v) for k, v in split.items()},
                 "heldout_requests": split["heldout"],
                 "n": {"teacher": len(teacher_rec), "train": settings.n_train,
                       "calibration": len(cal_rec), "heldout": len(test_rec)}},
    }  # fmt: skip
    if diagnose_only:
        return base_record

    u_test = features(teacher, test, collate, [t_layer], "t", settings.pool)[t_layer]

    def evaluate(model: Any) -> dict[str, float]:
        responses = generate(model, s_tok, [r["prompt"] for r in test.records],
                             settings.max_new_tokens)  # fmt: skip
        m = behaviour_metrics(responses, [r["label"] for r in test.records])
        v = features(model, test, collate, [s_layer], "s", settings.pool)[s_layer]
        m["guided_cka"] = float(linear_cka(u_test, v))
        return m

    def train_arm(seed: int, arm: str) -> tuple[dict, dict]:
        for p in s_model.parameters():
            p.requires_grad_(True)
        objective = Bird(
            teacher, t_layer, s_layer, task_weight=settings.task_weight,
            cka_weight=settings.cka_weight if arm == "bird" else 0.0, bank=settings.cka_bank,
            unbiased=settings.cka_unbiased, how=settings.pool,
        )  # fmt: skip
        outcome = run_loop(
            s_model, objective, train_sets[seed], cal, hp=settings.loop(seed),
            collate=collate, work=out / "work", desc=f"{arm} seed {seed}",
            identity={"role": "student", "arm": arm, "base": student, "base_fingerprint": s_fp},
            metrics_path=out / "arms" / f"{arm}-seed{seed}.jsonl",
        )  # fmt: skip
        return evaluate(outcome.model.eval()), {
            "train_loss_per_epoch": outcome.state["train_loss_per_epoch"],
            "eval_loss_per_epoch": outcome.state["eval_loss_per_epoch"],
            "train_time_s": outcome.train_time_s,
        }

    per_seed, arms_detail, kept = run_arms(
        s_model, seeds=settings.seeds, arms=settings.arms, method="bird",
        untrained=evaluate(s_model), train_arm=train_arm, progress=progress, desc="bird arms",
    )  # fmt: skip
    behaviour_table = summarise(
        per_seed, method="bird", controls=[a for a in settings.arms if a != "bird"],
        metrics=METRICS, seeds=settings.seeds, confidence=settings.confidence,
        higher_is_better=HIGHER_IS_BETTER, unit_interval=tuple(METRICS),
    )  # fmt: skip
    model_dir = out / "model"
    s_model.load_state_dict(kept)
    save_model(s_model, s_tok, model_dir)
    record = {
        "spec": student_spec(student, model_dir, full=True),
        **base_record,
        "finetune": "full",
        "model_dir": model_dir.as_posix(),
        "seed": settings.seeds[0],
        "arms": arms_detail,
        "behaviour": behaviour_table,
        "time_s": time.perf_counter() - t0,
    }
    write_outputs(out, record, run=run, alias=alias if run is not None else None)
    return record


__all__ = ["METRICS", "distill_bird", "is_refusal", "pick_layers", "split_groups"]
