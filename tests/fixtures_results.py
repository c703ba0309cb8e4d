"""Synthetic run directories with a results.json that follows docs/run-directory.md.

Reusable by any test that needs a complete run without running a model: the suite,
responses, similarity lines, run.yaml, manifest.json and results.json are all written
here from a seeded RNG. Numbers are generated, not hand-typed, so tests must compare the
output against the written results.json (``json.loads(path.read_text())``), never against
literals.

``build_run(tmp_path / "demo")`` gives the full picture (two students, the second
recorded as distilled from the first with paired deltas in ``attack.deltas``, an A/A null
model, four adversaries, budget curves with k in {1, 4}); the keyword arguments remove
parts to exercise the degraded paths (no attack yet, no null model, no curves).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from bbi.config import AttackSettings
from bbi.results_schema import validated_attack
from bbi.runstore import RunDir, append_jsonl, write_json
from bbi.stats import delta_reading, holm, paired_delta
from discriminators.attack import attack_verdict, calibration
from discriminators.verdict import sequential_curve
from probes import CATEGORIES

ADVERSARIES = ("surface", "tfidf", "embed", "pairwise")

# Text that must be shown literally and never interpreted by the report.
HOSTILE_TEXT = (
    "<script>document.title='pwned';window.__pwned=1</script>"
    '<img src="http://evil.example/x.png" onerror="window.__pwned=2">'
    "**bold** [link](https://evil.example/) `code` & ampersand "
    "naïve café — 日本語 🙂 \u202eevil"
)

# Category -> true advantage planted for the first student (others get ~0).
DEFAULT_PLANTED = {"style_format": 0.95, "robustness": 0.85, "domain_technical": 0.3}


def _est(rng: np.random.Generator, value: float, n: int, spread: float = 0.06) -> dict:
    lo = value - spread * (0.8 + 0.4 * rng.random())
    hi = value + spread * (0.8 + 0.4 * rng.random())
    return {
        "value": round(float(value), 4),
        "ci": [round(float(lo), 4), round(float(hi), 4)],
        "n": n,
    }


def _holm(pvals: list[float]) -> list[float]:
    return [float(p) for p in holm(pvals)]


def _verdict(
    rng: np.random.Generator,
    advs: dict,
    epsilon: float,
    budgets: list[int],
    strategies: list[str],
    test_cats: np.ndarray,
    strength,
    role: str,
) -> dict:
    """The attack's own verdict, on per-prompt contributions drawn from the planted
    strengths (d = +1 with probability (1 + strength) / 2, else -1); it also writes the
    family-wise category findings into each adversary's ``per_category``, as the attack
    does. Adversaries without curves count at their full budget."""
    with_curves, seed_means = {}, {}
    for name, a in advs.items():
        curves = a["curves"]
        if not curves and a["eps"] is not None:
            e = a["eps"]
            curves = {
                a["strategy"]: [{"q": a["budget"], "k": 1, "value": e["value"], "ci": e["ci"]}]
            }
        with_curves[name] = {**a, "curves": curves}
        if a["kind"] == "test":
            continue
        seed_means[name] = {}
        for strat, curve in curves.items():
            for pt in curve:
                if pt["k"] != 1:
                    continue
                frac = np.log(pt["q"]) / np.log(budgets[-1])
                m = np.array([strength(c) for c in test_cats]) * a["skill"] * frac
                d = np.where(rng.random(len(test_cats)) < (1 + m) / 2, 1.0, -1.0)
                seed_means[name][(strat, pt["q"])] = d
        a["sequential"] = sequential_curve(seed_means[name], strategies[0], 0.05)
    cfg = AttackSettings(budgets=list(budgets), epsilon=epsilon, strategies=list(strategies))
    out = attack_verdict(with_curves, seed_means, test_cats, cfg, 0)
    if role == "null":
        out["calibration"] = calibration(with_curves, seed_means, test_cats, cfg, 0)
    return out


def _deltas(
    rng: np.random.Generator,
    comparisons: dict,
    base: str,
    alias: str,
    sim_lines: list[dict],
    similarity: dict,
    budget: int,
    strategy: str,
) -> dict:
    """``attack.deltas[alias]`` as ``bbi attack`` writes it: distilled minus base, paired.

    Delta-eps values are the differences of the two comparisons' estimates (what the
    paired computation gives when both score every test prompt); CIs are generated
    around them. The similarity Delta is computed from the similarity lines themselves.
    """
    advs: dict = {}
    for adv, d_entry in comparisons[alias]["adversaries"].items():
        b_entry = comparisons[base]["adversaries"].get(adv)
        if b_entry is None or d_entry.get("eps") is None or b_entry.get("eps") is None:
            continue
        value = round(d_entry["eps"]["value"] - b_entry["eps"]["value"], 4)
        delta = _est(rng, value, d_entry["eps"]["n"], spread=0.05)
        delta["p"] = 0.001 if delta["ci"][1] < 0 or delta["ci"][0] > 0 else 0.4
        per_cat: dict = {}
        for cat, e in d_entry["per_category"].items():
            v = round(e["value"] - b_entry["per_category"][cat]["value"], 4)
            est = _est(rng, v, e["n"], spread=0.15)
            est["p"] = round(float(0.001 if est["ci"][1] < 0 else 0.2 + 0.7 * rng.random()), 4)
            per_cat[cat] = est
        for cat, ph in zip(per_cat, _holm([e["p"] for e in per_cat.values()]), strict=True):
            per_cat[cat]["p_holm"] = round(ph, 4)
            per_cat[cat]["significant"] = bool(ph < 0.05)
        advs[adv] = {
            "delta": delta,
            "eps_base": b_entry["eps"],
            "eps_distilled": d_entry["eps"],
            "point": {"budget": budget, "strategy": strategy, "seed": 0, "k": 1},
            "per_category": per_cat,
        }
    cos = {
        who: {
            line["prompt_id"]: line["cosine"]
            for line in sim_lines
            if line["student"] == who and line["split"] == "test"
        }
        for who in (base, alias)
    }
    common = sorted(cos[base])
    sim = paired_delta(
        np.array([cos[alias][p] for p in common]),
        np.array([cos[base][p] for p in common]),
        n_bootstrap=200,
        n_permutations=200,
    )
    sim["base"] = similarity[base]["test"]
    sim["distilled"] = similarity[alias]["test"]
    return {
        "base": base,
        "base_from": "distill record",
        "method": "lora",
        "adversaries": advs,
        "skipped": {},
        "similarity": sim,
        "reading": delta_reading({a: e["delta"] for a, e in advs.items()}, alpha=0.05),
    }


def build_run(
    path: str | Path,
    *,
    students: Sequence[str] = ("student", "student_lora"),
    null: bool = True,
    attack: bool = True,
    curves: bool = True,
    test_queries: Sequence[int] = (1, 4),
    adversaries: Sequence[str] = ADVERSARIES,
    categories: Sequence[str] = CATEGORIES,
    n_per_category: int = 60,
    planted: dict[str, float] | None = None,
    hostile: bool = True,
    epsilon: float = 0.1,
    two_sample: bool = False,
    seed: int = 0,
) -> Path:
    """Write a complete synthetic run directory at ``path`` and return it.

    The first student carries the planted per-category advantages; later students carry
    a third of them (a "distilled" student that closed most of the gap); the null model
    carries none. With ``hostile`` the first example of the most distinguishable
    category has a student response full of HTML/markdown/unicode.
    """
    rng = np.random.default_rng(seed)
    planted = dict(DEFAULT_PLANTED if planted is None else planted)
    run = RunDir(path, create=True)
    teacher = "teacher"
    models = {teacher: {"spec": "zoo:teacher", "role": "teacher"}}
    if null:
        models["teacher_null"] = {"spec": "zoo:teacher", "role": "null"}
    for i, s in enumerate(students):
        spec = "zoo:student" if i == 0 else f"zoo:student+lora:runs/demo/adapters/{s}"
        models[s] = {"spec": spec, "role": "student"}

    # ---- suite -------------------------------------------------------------------
    suite = []
    n_test = max(1, n_per_category // 2)
    for cat in categories:
        for j in range(n_per_category):
            suite.append(
                {
                    "id": f"{cat}-{j:05d}",
                    "category": cat,
                    "subcategory": "generic",
                    "prompt": f"Prompt {j} about {cat.replace('_', ' ')}: explain briefly.",
                    "split": "test" if j < n_test else "train",
                    "reference": None,
                    "source": "generated",
                    "perturbation": None,
                    "base_id": None,
                }
            )
    append_jsonl(run.suite_path, suite)
    canon = "".join(json.dumps(r, sort_keys=True) + "\n" for r in suite).encode()
    suite_hash = "sha256:" + hashlib.sha256(canon).hexdigest()

    # ---- responses ---------------------------------------------------------------
    def strength(alias: str, cat: str) -> float:
        if models[alias]["role"] != "student":
            return 0.0
        base = planted.get(cat, 0.0)
        return base if alias == students[0] else base / 3

    ranked = sorted(categories, key=lambda c: -planted.get(c, 0.0))
    hostile_id = f"{ranked[0]}-00000"
    for alias in models:
        recs = []
        for r in suite:
            if alias == teacher or models[alias]["role"] == "null":
                text = f"Teacher-style answer to {r['id']}. It is concise."
            else:
                text = f"Student answer to {r['id']}" + (
                    " — **with markdown**" if strength(alias, r["category"]) > 0.2 else "."
                )
            if hostile and alias == students[0] and r["id"] == hostile_id:
                text = HOSTILE_TEXT
            recs.append(
                {
                    "prompt_id": r["id"],
                    "sample": 0,
                    "text": text,
                    "n_tokens": len(text.split()),
                    "finish_reason": "stop",
                }
            )
        append_jsonl(run.responses_path(alias), recs)

    # ---- similarity ----------------------------------------------------------------
    sim_lines = []
    similarity: dict = {}
    for alias in models:
        if alias == teacher:
            continue
        per_cat_vals: dict[str, list[float]] = {}
        for r in suite:
            mu = (
                0.93
                if models[alias]["role"] == "null"
                else 0.86 - 0.5 * strength(alias, r["category"])
            )
            cos = float(np.clip(mu + rng.normal(0, 0.05), -1, 1))
            sim_lines.append(
                {
                    "student": alias,
                    "prompt_id": r["id"],
                    "category": r["category"],
                    "split": r["split"],
                    "cosine": round(cos, 4),
                }
            )
            per_cat_vals.setdefault(r["category"], []).append(cos)
        all_vals = [v for vs in per_cat_vals.values() for v in vs]
        test_vals = [
            line["cosine"]
            for line in sim_lines
            if line["student"] == alias and line["split"] == "test"
        ]

        def mean_ci(vals: list[float]) -> dict:
            arr = np.asarray(vals)
            half = 1.96 * arr.std(ddof=1) / np.sqrt(len(arr)) if len(arr) > 1 else 0.0
            m = float(arr.mean())
            return {
                "value": round(m, 4),
                "ci": [round(m - half, 4), round(m + half, 4)],
                "n": len(arr),
            }

        similarity[alias] = {
            "overall": mean_ci(all_vals),
            "test": mean_ci(test_vals),
            "per_category": {c: mean_ci(v) for c, v in per_cat_vals.items()},
        }
    append_jsonl(run.similarity_path, sim_lines)

    # ---- run.yaml / manifest ---------------------------------------------------------
    run.write_config(
        {
            "name": run.name,
            "models": models,
            "suite": {"source": "default", "seed": 0},
            "generation": {"max_new_tokens": 64, "temperature": 0.7, "top_p": 0.95},
            "seeds": {"generation": 0, "attack": [0, 1, 2]},
        }
    )
    run.update_manifest(
        bbi_version="0.1.0",
        git_sha="0123456789abcdef0123456789abcdef01234567",
        versions={
            "python": "3.11.2",
            "torch": "2.13.0",
            "transformers": "5.0.0",
            "scikit-learn": "1.6.0",
        },
        models={
            a: {"fingerprint": hashlib.sha256(a.encode()).hexdigest()[:16], "chat_format": "plain"}
            for a in models
        },
        timings={"probe_s": 12.5, "similarity_s": 3.25, "attack_s": 41.0},
    )

    results: dict = {
        "schema_version": 1,
        "run": run.name,
        "suite": {
            "hash": suite_hash,
            "n": len(suite),
            "n_train": sum(r["split"] == "train" for r in suite),
            "n_test": sum(r["split"] == "test" for r in suite),
            "categories": list(categories),
        },
        "models": {
            a: {**m, "fingerprint": hashlib.sha256(a.encode()).hexdigest()[:16]}
            for a, m in models.items()
        },
        "similarity": similarity,
    }

    # ---- attack ------------------------------------------------------------------
    if attack:
        budgets = [50, 100, 200, 400]
        strategies = ["random", "stratified", "disagreement"]
        seeds = [0, 1, 2]
        n_test_prompts = results["suite"]["n_test"]
        comparisons: dict = {}
        skill = {a: 0.6 + 0.4 * i / max(1, len(adversaries) - 1) for i, a in enumerate(adversaries)}
        for alias in models:
            if alias == teacher:
                continue
            role = models[alias]["role"]
            advs: dict = {}
            for adv in adversaries:
                per_cat: dict = {}
                pvals = []
                for cat in categories:
                    v = strength(alias, cat) * skill[adv] + rng.normal(0, 0.02)
                    est = _est(rng, v, n_test, spread=0.12)
                    est["p"] = round(
                        float(0.0009 if v > 0.15 else min(1.0, 0.3 + rng.random() * 0.6)), 4
                    )
                    pvals.append(est["p"])
                    per_cat[cat] = est
                for cat, ph in zip(categories, _holm(pvals), strict=True):
                    per_cat[cat]["p_holm"] = round(ph, 4)
                    per_cat[cat]["significant"] = bool(ph < 0.05)
                top = max([strength(alias, c) for c in categories], default=0.0)
                overall = (
                    0.25 * top + float(np.mean([strength(alias, c) for c in categories]))
                ) * skill[adv]
                overall += rng.normal(0, 0.01)
                eps = _est(rng, overall, n_test_prompts, spread=0.04)
                eps["p"] = 0.001 if overall > 0.05 else round(float(0.2 + rng.random() * 0.7), 3)
                auroc = _est(rng, 0.5 + overall / 2, n_test_prompts, spread=0.03)
                curve_data: dict = {}
                if curves:
                    for si, strat in enumerate(strategies):
                        pts = []
                        for q in budgets:
                            for k in test_queries:
                                frac = np.log(q) / np.log(budgets[-1])
                                mean = overall * frac * (1 + 0.6 * np.log2(k) / 4) * (1 - 0.05 * si)
                                sv = [round(float(mean + rng.normal(0, 0.015)), 4) for _ in seeds]
                                m = float(np.mean(sv))
                                pts.append(
                                    {
                                        "q": q,
                                        "k": k,
                                        "value": round(m, 4),
                                        "ci": [round(m - 0.05, 4), round(m + 0.05, 4)],
                                        "n_seeds": len(seeds),
                                        "seed_values": sv,
                                    }
                                )
                        curve_data[strat] = pts
                advs[adv] = {
                    "kind": "pairwise" if adv == "pairwise" else "pointwise",
                    "eps": eps,
                    "auroc": auroc,
                    "kept_fraction": 0.82 if adv == "pairwise" else None,
                    "budget": budgets[-1],
                    "strategy": strategies[0],
                    "seed": 0,
                    "compute_s": round(float(0.5 + rng.random() * 5), 2),
                    "per_category": per_cat,
                    "curves": curve_data,
                    "notes": "gray-box: reference LM is the teacher" if adv == "embed" else "",
                }
            if two_sample:
                advs["mmd"] = {
                    "kind": "test",
                    "eps": None,
                    "auroc": None,
                    "kept_fraction": None,
                    "budget": budgets[-1],
                    "strategy": strategies[0],
                    "seed": 0,
                    "compute_s": 0.8,
                    "per_category": {},
                    "curves": {
                        s: [
                            {
                                "q": q,
                                "k": 1,
                                "value": None,
                                "ci": None,
                                "n_seeds": len(seeds),
                                "p": 0.5,
                            }
                            for q in budgets
                        ]
                        for s in strategies
                    },
                    "two_sample": {
                        "statistic": round(float(rng.random() * 0.1), 4),
                        "p": 0.04,
                        "n": budgets[-1] // 2,
                    },
                    "notes": None,
                }
            test_cats = np.array([r["category"] for r in suite if r["split"] == "test"])
            for adv in adversaries:
                advs[adv]["skill"] = skill[adv]
            verdict = _verdict(
                rng,
                advs,
                epsilon,
                budgets,
                strategies,
                test_cats,
                lambda c, alias=alias: strength(alias, c),
                role,
            )
            for adv in adversaries:
                advs[adv].pop("skill")
            examples: dict = {}
            for cat in categories:
                ids = [r["id"] for r in suite if r["category"] == cat and r["split"] == "test"][:3]
                examples[cat] = [
                    {
                        "prompt_id": pid,
                        "scores": {
                            a: round(
                                float(
                                    strength(alias, cat) * (0.5 + rng.random())
                                    + rng.normal(0, 0.05)
                                ),
                                3,
                            )
                            for a in adversaries
                        },
                    }
                    for pid in ids
                ]
            comparisons[alias] = {
                "reference": teacher,
                "role": role,
                "adversaries": advs,
                "verdict": verdict,
                "examples": examples,
            }
        deltas = (
            {
                s: _deltas(
                    rng,
                    comparisons,
                    students[0],
                    s,
                    sim_lines,
                    similarity,
                    budgets[-1],
                    strategies[0],
                )
                for s in students[1:]
            }
            if len(students) > 1
            else {}
        )
        results["attack"] = validated_attack(
            {
                "deltas": deltas,
                "config": {
                    "budgets": budgets,
                    "strategies": strategies,
                    "seeds": seeds,
                    "test_queries": list(test_queries),
                    "epsilon": epsilon,
                    "alpha": 0.05,
                    "adversaries": list(adversaries),
                    "n_bootstrap": 1000,
                    "n_permutations": 1000,
                },
                "comparisons": comparisons,
            }
        )
    if len(students) > 1:
        results["distill"] = {
            s: {"spec": models[s]["spec"], "method": "lora", "base": models[students[0]]["spec"]}
            for s in students[1:]
        }
    write_json(run.results_path, results)
    return run.path


def token_curve_record(distilled: str, text: str = "", null: str | None = "teacher_null") -> dict:
    """A ``token_curve`` entry as ``bbi curve`` writes it: base, two snapshots, the final
    student and the A/A band; ``text`` is put wherever run-provided text is shown."""
    from bbi.results_schema import validated_token_curve

    def point(alias, kind, tokens, value, lo, hi):
        return {
            "alias": alias, "kind": kind, "tokens_seen": tokens, "loss_tokens": tokens // 5,
            "step": tokens // 100, "adversary": f"surface{text}", "strategy": "random", "q": 80,
            "eps": {"value": value, "ci": [lo, hi], "n": 20},
            "test": f"test split, confirmation half (20 prompts){text}", "status": "inconclusive",
        }  # fmt: skip

    return validated_token_curve(
        {
            "distilled": distilled,
            "teacher": "teacher",
            "base": "student",
            "attack": {"budgets": [40, 80], "adversaries": ["surface"]},
            "points": [
                point("student", "base", 0, 0.62, 0.45, 0.78),
                point(f"{distilled}.t1000", "snapshot", 1000, 0.41, 0.22, 0.6),
                point(f"{distilled}.t10000", "snapshot", 10000, 0.2, 0.02, 0.38),
                point(distilled, "final", 25000, 0.12, -0.05, 0.3),
            ],
            "band": {
                "alias": null,
                "adversary": "surface",
                "strategy": "random",
                "q": 80,
                "eps": {"value": 0.02, "ci": [-0.12, 0.15], "n": 20},
                "test": "test split, confirmation half (20 prompts)",
            }  # fmt: skip
            if null
            else None,
            "notes": [f"milestones never reached{text}"] if text else [],
        }
    )


# What ``bbi distill bird|circuit`` measure (distill/bird.py, distill/circuit.py).
TASK_METRICS = {
    "bird": (
        ("none", "task", "bird"),
        {
            "refusal_rate": True,
            "over_refusal_rate": False,
            "balanced_accuracy": True,
            "guided_cka": True,
        },
    ),
    "circuit": (
        ("none", "ce", "random", "circuit"),
        {"accuracy": True, "circuit_accuracy": True, "faithfulness": True, "matched_cka": True},
    ),
}


def task_distill_record(
    method: str,
    spec: str,
    *,
    base: str = "zoo:student",
    teacher: str = "zoo:teacher",
    seeds: Sequence[int] = (0, 1, 2),
    seed: int = 0,
) -> dict:
    """A ``distill.<alias>`` record as ``bbi distill bird|circuit`` writes it: generated
    per-seed metrics (the method's arm ahead of its controls) summarised into the behaviour
    table by the writer's own ``distill.experiment.summarise``."""
    from distill.experiment import summarise

    rng = np.random.default_rng(seed)
    arms, higher = TASK_METRICS[method]
    per_seed: dict[str, list[dict[str, float]]] = {}
    for i, arm in enumerate(arms):
        lift = 0.1 * i  # later arms (the method last) do better
        per_seed[arm] = [
            {
                m: round(
                    float(
                        np.clip(
                            0.5 + (lift if up else -lift) + (rng.normal(0, 0.03) if i else 0),
                            0,
                            1,
                        )
                    ),
                    4,
                )
                for m, up in higher.items()
            }
            for _ in seeds
        ]
    behaviour = summarise(
        per_seed,
        method=method,
        controls=[a for a in arms if a != method],
        metrics=list(higher),
        seeds=list(seeds),
        confidence=0.95,
        higher_is_better=dict(higher),
    )
    record: dict = {
        "spec": spec,
        "method": method,
        "base": base,
        "teacher": teacher,
        "time_s": round(float(300 + 600 * rng.random()), 1),
        "seed": seeds[0],
        "settings": {"seeds": list(seeds), "confidence": 0.95},
        "behaviour": behaviour,
    }
    if method == "bird":
        record["diagnostics"] = {
            "task_relevance": 0.99,
            "student_probe_accuracy": 0.96,
            "complementary_knowledge": 0.03,
            "behavioural_relevance": 0.98,
        }
        record["layers"] = {"teacher": "model.layers.3", "student": "model.layers.2"}
    else:
        record["teacher_accuracy"] = 0.97
        record["student_accuracy"] = 0.04
        record["circuit"] = {
            "k": 3,
            "of": 12,
            "heads": [[0, 1], [1, 0], [2, 3]],
            "pairs": [[[0, 1], [3, 2]], [[1, 0], [2, 2]], [[2, 3], [3, 1]]],
        }
    return record


def load_results(path: str | Path) -> dict:
    """results.json of a run built above, as the tests' source of truth."""
    return json.loads((Path(path) / "results.json").read_text(encoding="utf-8"))
