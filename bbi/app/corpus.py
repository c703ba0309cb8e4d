"""More distillation data than the suite's train split: prompts from the builders' corpus.

``probes.training_corpus`` draws prompts from the suite builders on separate random
streams and drops every prompt of the default suite. ``corpus_pairs`` takes
``--corpus-prompts N`` of them (round-robin over categories), drops any that the run's
own suite holds (a custom suite too), has the run's teacher answer them exactly as
``bbi probe run`` answers the suite (the run's generation settings, per-request seeds,
the global response cache, so a rerun generates nothing) into ``runs/NAME/corpus/nN-seedS/``, a
run directory of its own, and returns the (prompt, response) pairs for distillation.

The composition lives here because it joins two sibling packages (``probes`` builds the
prompts, ``distill`` trains on them), which never import each other.
"""

from __future__ import annotations

from typing import Any

from bbi.config import GenerationSettings
from bbi.errors import BbiError
from bbi.runstore import RunDir

CORPUS_DIR = "corpus"
CORPUS_SEED_OFFSET = 7919  # the corpus's random streams differ from the zoo's (seed 1)


def corpus_records(run: RunDir, n: int, seed: int) -> list[dict]:
    """``n`` training-corpus prompts, none of them in the run's suite."""
    from bbi.probe_run import select_limit
    from probes import CATEGORIES, training_corpus

    per_category = -(-n // len(CATEGORIES)) + 1
    in_suite = set(run.suite()["prompt"].astype(str))
    records = [
        r
        for r in training_corpus(seed=seed + CORPUS_SEED_OFFSET, per_category=per_category)
        if r["prompt"] not in in_suite
    ]
    return select_limit(records, n)


def corpus_pairs(
    run: RunDir, n: int, seed: int, teacher_alias: str | None = None, progress: bool = False
) -> Any:
    """The teacher's (prompt, response) pairs on ``n`` corpus prompts (see the module
    docstring); None when ``n`` is 0."""
    if not n:
        return None
    from bbi.probe_run import ModelEntry, run_probe
    from distill.data import distillation_pairs

    teacher_alias = teacher_alias or run.teacher_alias()
    entry = run.models().get(teacher_alias) or {}
    if not entry.get("spec"):
        raise BbiError(f"{run.path}: teacher {teacher_alias!r} has no model spec to answer with")
    gen = run.config().get("generation") or {}
    settings = GenerationSettings.parse(
        {k: v for k, v in gen.items() if k in GenerationSettings.model_fields},
        f"{run.config_path}: generation",
    )
    records = corpus_records(run, n, seed)
    if not records:
        raise BbiError("the training corpus has no prompt outside this run's suite")
    sub = run.path / CORPUS_DIR / f"n{n}-seed{seed}"
    run_probe(
        sub,
        [ModelEntry(teacher_alias, entry["spec"], "teacher", dict(entry.get("args") or {}))],
        records,
        settings,
        suite_name="training_corpus",
        progress=progress,
        similarity=False,
    )
    return distillation_pairs(RunDir(sub), teacher_alias)


__all__ = ["CORPUS_DIR", "corpus_pairs", "corpus_records"]
