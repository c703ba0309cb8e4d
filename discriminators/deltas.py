"""Distilled vs base student: paired Delta-eps and Delta-similarity on the same prompts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bbi import stats
from bbi.errors import BbiError
from bbi.runstore import RunDir, alias_file_stem, read_json_object, read_jsonl

if TYPE_CHECKING:
    from bbi.config import AttackSettings

# ---- distilled vs base student ----------------------------------------------------------
# Delta-eps = eps(distilled vs teacher) - eps(base vs teacher), paired by test prompt: both
# comparisons' full-budget points (largest budget, first strategy, the first seed: the
# point whose per-prompt scores are kept) are scored on the same test prompts, so each prompt gives
# d_i(distilled) - d_i(base), where d_i is its contribution to eps (bbi.stats). See
# docs/statistics.md ("Distillation: paired Delta").


def _canonical_spec(spec: Any) -> str | None:
    if not isinstance(spec, str):
        return None
    from bbi.specs import parse_spec

    try:
        return str(parse_spec(spec))
    except BbiError:
        return spec.strip()


def distill_base(
    alias: str, record: Any, models: dict[str, dict], compared: dict[str, Any]
) -> tuple[str, str] | None:
    """(base alias, how it was found) for a distilled student, when the base was attacked.

    The distill record's ``base`` spec names the model it was trained from; the base is
    the attacked student alias with that spec. Without a match, alias ``student`` (the
    pipeline's base) is used when it was attacked.
    """
    students = [a for a, c in compared.items() if a != alias and (c or {}).get("role") == "student"]
    want = _canonical_spec(record.get("base")) if isinstance(record, dict) else None
    if want is not None:
        for other in students:
            if _canonical_spec((models.get(other) or {}).get("spec")) == want:
                return other, "distill record"
    if alias != "student" and "student" in students:
        return "student", "default alias"
    return None


def _point_threshold(directory: Path, adv: str, entry: dict) -> float | None:
    path = directory / RunDir.attack_point_name(
        adv, entry.get("strategy"), entry.get("budget"), entry.get("seed")
    )
    if not path.exists():
        return None
    thr = read_json_object(path).get("threshold")
    return float(thr) if isinstance(thr, (int, float)) else None


def full_budget_contributions(
    directory: Path, adv: str, entry: dict
) -> dict[str, tuple[str, float]] | None:
    """prompt_id -> (category, d_i) at a comparison's full-budget point; None if unknown.

    Abstained items (the judge) contribute 0, as in eps itself. Scores files written before ``d`` was
    recorded are read back through the point's threshold (pointwise) or p_correct
    (pairwise without abstention).
    """
    path = directory / f"{adv}.scores.jsonl"
    if not path.exists():
        return None
    out: dict[str, tuple[str, float]] = {}
    thr: float | None = None
    for rec in read_jsonl(path):
        if "d" in rec:
            d = rec["d"]
        elif "score_teacher" in rec:
            if thr is None:
                thr = _point_threshold(directory, adv, entry)
                if thr is None:
                    return None
            d = float(rec["score_teacher"] >= thr) - float(rec["score_other"] >= thr)
        elif "p_correct" in rec and entry.get("kept_fraction") in (None, 1.0):
            d = float(np.sign(float(rec["p_correct"]) - 0.5))
        else:
            return None
        if d is None or rec.get("kept") is False:
            d = 0.0
        out[str(rec["prompt_id"])] = (str(rec.get("category")), float(d))
    return out


def _point(entry: dict) -> dict[str, Any]:
    return {
        "budget": entry.get("budget"),
        "strategy": entry.get("strategy"),
        "seed": entry.get("seed"),
        "k": 1,
    }


def _adversary_delta(
    adv: str, base: dict, dist: dict, base_dir: Path, dist_dir: Path, cfg: AttackSettings
) -> tuple[dict[str, Any] | None, str | None]:
    """(the Delta-eps entry, None) or (None, why it cannot be computed)."""
    pb, pd_ = _point(base), _point(dist)
    if pb != pd_:
        return None, (
            f"full-budget points differ (base q={pb['budget']} {pb['strategy']} s{pb['seed']}, "
            f"distilled q={pd_['budget']} {pd_['strategy']} s{pd_['seed']}); rerun bbi attack "
            "on both"
        )
    cb = full_budget_contributions(base_dir, adv, base)
    cd = full_budget_contributions(dist_dir, adv, dist)
    if cb is None or cd is None:
        return None, "per-prompt scores are missing; rerun bbi attack on both comparisons"
    common = sorted(set(cb) & set(cd))
    if not common:
        return None, "no test prompt scored in both comparisons"
    a = np.array([cd[pid][1] for pid in common])
    b = np.array([cb[pid][1] for pid in common])
    cats = [cb[pid][0] for pid in common]
    seed = int(pb["seed"]) if isinstance(pb["seed"], int) else 0
    return {
        "delta": stats.paired_delta(a, b, cfg.n_bootstrap, cfg.n_permutations, seed=seed),
        "eps_base": base.get("eps"),
        "eps_distilled": dist.get("eps"),
        "point": pb,
        "per_category": stats.paired_delta_per_category(
            a, b, cats, cfg.alpha, cfg.n_bootstrap, cfg.n_permutations, seed=seed
        ),
    }, None


def _similarity_delta(
    run: RunDir, base: str, alias: str, cfg: AttackSettings, similarity: dict
) -> dict[str, Any] | None:
    """Paired Delta of per-prompt cosine to the teacher on the test prompts."""
    if not run.similarity_path.exists():
        return None
    cos: dict[str, dict[str, float]] = {base: {}, alias: {}}
    for rec in read_jsonl(run.similarity_path, allow_torn_tail=True):
        who, c = rec.get("student"), rec.get("cosine")
        ok = who in cos and rec.get("split") == "test" and isinstance(c, (int, float))
        if ok and np.isfinite(c):
            cos[who][str(rec.get("prompt_id"))] = float(c)
    common = sorted(set(cos[base]) & set(cos[alias]))
    if not common:
        return None
    out = stats.paired_delta(
        np.array([cos[alias][pid] for pid in common]),
        np.array([cos[base][pid] for pid in common]),
        cfg.n_bootstrap,
        cfg.n_permutations,
        seed=0,
    )
    out["base"] = (similarity.get(base) or {}).get("test")
    out["distilled"] = (similarity.get(alias) or {}).get("test")
    return out


def distill_deltas(
    run: RunDir, comps: dict[str, Any], cfg: AttackSettings, staged: dict[str, Path]
) -> dict[str, Any]:
    """``results["attack"]["deltas"]``: every attacked distilled student vs its base.

    ``staged`` maps the comparisons of this sweep to their (not yet published) detail
    directories; the others are read from ``attack/``.
    """
    results = run.read_results()
    distill = results.get("distill") or {}
    similarity = results.get("similarity") or {}
    models = run.models()
    out: dict[str, Any] = {}
    for alias, comp in comps.items():
        if alias not in distill or (comp or {}).get("role") != "student":
            continue
        found = distill_base(alias, distill[alias], models, comps)
        if found is None:
            continue
        base, how = found
        base_dir = staged.get(base, run.attack_dir / alias_file_stem(base))
        dist_dir = staged.get(alias, run.attack_dir / alias_file_stem(alias))
        advs: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        base_advs = comps[base].get("adversaries") or {}
        for adv, entry in (comp.get("adversaries") or {}).items():
            if entry.get("kind") == "test" or entry.get("eps") is None or adv not in base_advs:
                continue  # two-sample tests report no eps; unshared adversaries pair nothing
            delta, why = _adversary_delta(adv, base_advs[adv], entry, base_dir, dist_dir, cfg)
            if delta is None:
                skipped[adv] = str(why)
            else:
                advs[adv] = delta
        out[alias] = {
            "base": base,
            "base_from": how,
            "method": (distill[alias] or {}).get("method"),
            "adversaries": advs,
            "skipped": skipped,
            "similarity": _similarity_delta(run, base, alias, cfg, similarity),
            "reading": stats.delta_reading(
                {a: e["delta"] for a, e in advs.items()}, alpha=cfg.alpha
            ),
        }
    return out
