"""Synthetic run directories with *planted* differences, for calibrating the attack.

Every response is drawn from one simple generator (random sentences over a small
vocabulary, prompt words echoed). A "student" differs from the teacher only where an
artifact is planted: in the chosen categories, with probability ``rate`` its response gets
the artifact (a sign-off phrase, a bullet layout...). With an artifact the teacher never
shows, the best possible advantage in a planted category is exactly ``rate``, and overall
``rate * (planted categories / all categories)``; a ``null`` model is an independent
resample of the teacher (advantage 0). Tests and benchmarks use these to check that the
statistics are unbiased, calibrated under the null and flag the right categories.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bbi.runstore import RunDir, append_jsonl, write_json

CATEGORIES = (
    "conversational",
    "creative",
    "domain_technical",
    "factual",
    "instruction_constraints",
    "reasoning_math",
    "robustness",
    "safety_refusal",
    "style_format",
    "summarization",
)
_WORDS_TEXT = (
    "the a model answer data system value result method process table river garden light "
    "number pattern simple clear quick small large early later first second often rarely "
    "because while when where which this that these those some many each every most "
    "compute measure explain describe compare build test check write read find keep give "
    "time place person group world fact idea reason example question problem part area "
    "water stone paper music energy market signal memory city road field study story"
)
_WORDS = _WORDS_TEXT.split()

ARTIFACTS = {
    "signoff": lambda text, rng: text + " Hope this helps!",
    "bullets": lambda text, rng: "\n".join("- " + s.strip() for s in text.split(".") if s.strip()),
    "caps": lambda text, rng: text.upper(),
    # A pure length shift: one more sentence of the same generator, nothing else changes.
    "longer": lambda text, rng: text + " " + _sentence(rng, []),
}


def _sentence(rng: np.random.Generator, topic: list[str]) -> str:
    n = int(rng.integers(5, 14))
    words = list(rng.choice(_WORDS, size=n))
    if topic and rng.random() < 0.7:
        words[int(rng.integers(0, n))] = str(rng.choice(topic))
    return " ".join(words).capitalize() + "."


def response(prompt: str, rng: np.random.Generator) -> str:
    """One response from the shared generator: 1-4 sentences echoing prompt words."""
    topic = [w for w in prompt.lower().replace("?", "").split() if len(w) > 3]
    return " ".join(_sentence(rng, topic) for _ in range(int(rng.integers(1, 5))))


def make_run(
    path: str | Path,
    n_per_category: int = 50,
    test_fraction: float = 0.2,
    categories: Sequence[str] = CATEGORIES,
    students: dict[str, dict] | None = None,
    null: bool = True,
    seed: int = 0,
) -> RunDir:
    """Write suite.jsonl, run.yaml and responses/<alias>.jsonl; return the RunDir.

    ``students``: alias -> {"categories": [...], "rate": float, "artifact": name}; default
    one ``student`` with the ``signoff`` artifact at rate 0.6 in ``style_format``.
    """
    if students is None:
        students = {"student": {"categories": ["style_format"], "rate": 0.6, "artifact": "signoff"}}
    run = RunDir(path, create=True)
    rng = np.random.default_rng(seed)
    suite = []
    n_test = max(1, int(round(n_per_category * test_fraction)))
    for cat in categories:
        for i in range(n_per_category):
            topic = " ".join(rng.choice(_WORDS, size=3))
            suite.append(
                {
                    "id": f"{cat}-{i:05d}",
                    "category": cat,
                    "subcategory": "synthetic",
                    "prompt": f"[{cat}] Tell me about {topic}?",
                    "split": "test" if i < n_test else "train",
                    "reference": None,
                    "source": "generated",
                    "perturbation": None,
                    "base_id": None,
                }
            )
    append_jsonl(run.suite_path, suite)
    models = {"teacher": {"spec": "synthetic:teacher", "role": "teacher"}}
    if null:
        models["teacher_null"] = {"spec": "synthetic:teacher", "role": "null"}
    for alias in students:
        models[alias] = {"spec": f"synthetic:{alias}", "role": "student"}
    run.write_config({"models": models, "suite": {"name": "synthetic", "seed": seed}})

    def write(alias: str, plant: dict | None, sub_seed: int) -> None:
        r = np.random.default_rng([seed, sub_seed])
        recs = []
        for item in suite:
            text = response(item["prompt"], r)
            if plant and item["category"] in plant["categories"] and r.random() < plant["rate"]:
                text = ARTIFACTS[plant.get("artifact", "signoff")](text, r)
            recs.append(
                {
                    "prompt_id": item["id"],
                    "sample": 0,
                    "text": text,
                    "n_tokens": len(text.split()),
                    "finish_reason": "stop",
                }
            )
        append_jsonl(run.responses_path(alias), recs)

    write("teacher", None, 1)
    if null:
        write("teacher_null", None, 2)
    for j, (alias, plant) in enumerate(students.items()):
        write(alias, plant, 3 + j)
    write_json(run.manifest_path, {"synthetic": True, "seed": seed})
    return run
