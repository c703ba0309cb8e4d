"""The report's view of a run: results.json plus the run directory's files, nothing else.

The report never re-runs a model and never imports the adversaries; it reads what
``bbi probe``/``bbi attack``/``bbi distill`` wrote (docs/run-directory.md) and turns it
into plain objects the templates and the markdown/JSON summaries share. Every part of
results.json may be missing (a run that was probed but not attacked yet, a run without
an A/A null model, an attack without curves); each absence becomes a note instead of an
error, so a report can be written at any stage of a run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbi.errors import BbiError
from bbi.runstore import RunDir, read_jsonl

MAX_TEXT = 4000  # characters of a response shown in the examples (the rest is elided)


@dataclass
class Est:
    """One estimate as results.json stores it: value, 95% CI, n and optional test fields."""

    value: float | None
    ci: tuple[float, float] | None = None
    n: int | None = None
    p: float | None = None
    p_holm: float | None = None
    significant: bool = False

    @property
    def lo(self) -> float | None:
        return self.ci[0] if self.ci else None

    @property
    def hi(self) -> float | None:
        return self.ci[1] if self.ci else None

    def as_dict(self) -> dict:
        out: dict[str, Any] = {
            "value": self.value,
            "ci": list(self.ci) if self.ci else None,
            "n": self.n,
        }
        for key in ("p", "p_holm"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.p_holm is not None:
            out["significant"] = self.significant
        return out


def _num(x: Any, where: str) -> float | None:
    if x is None:
        return None
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise BbiError(f"results.json: {where}: expected a number, got {type(x).__name__}")
    return None if math.isnan(x) else float(x)


def _est(obj: Any, where: str) -> Est | None:
    """Parse an estimate object; None when absent. Malformed input is a user error."""
    if obj is None:
        return None
    if isinstance(obj, (int, float)) and not isinstance(obj, bool):
        return Est(value=float(obj))
    if not isinstance(obj, dict):
        raise BbiError(f"results.json: {where}: expected an estimate object")
    ci = obj.get("ci")
    if ci is not None:
        if not (isinstance(ci, (list, tuple)) and len(ci) == 2):
            raise BbiError(f"results.json: {where}.ci: expected [lo, hi]")
        lo, hi = _num(ci[0], f"{where}.ci"), _num(ci[1], f"{where}.ci")
        ci = (lo, hi) if lo is not None and hi is not None else None
    n = obj.get("n")
    return Est(
        value=_num(obj.get("value"), f"{where}.value"),
        ci=ci,
        n=int(n) if isinstance(n, (int, float)) and not isinstance(n, bool) else None,
        p=_num(obj.get("p"), f"{where}.p"),
        p_holm=_num(obj.get("p_holm"), f"{where}.p_holm"),
        significant=bool(obj.get("significant", False)),
    )


def _dict(obj: Any, where: str) -> dict:
    if obj is None:
        return {}
    if not isinstance(obj, dict):
        raise BbiError(f"results.json: {where}: expected an object")
    return obj


@dataclass
class CurvePoint:
    q: int
    k: int
    value: float | None
    ci: tuple[float, float] | None
    n_seeds: int | None


@dataclass
class Adversary:
    name: str
    eps: Est | None
    auroc: Est | None
    p: float | None
    kept_fraction: float | None
    budget: int | None
    strategy: str | None
    seed: int | None
    compute_s: float | None
    per_category: dict[str, Est]
    curves: dict[str, list[CurvePoint]]  # strategy -> points (all k)
    notes: str
    kind: str | None = None  # "pointwise" | "pairwise" | "test"
    statistic: float | None = None  # two-sample tests (kind "test") report a statistic, no eps
    test_n: int | None = None


@dataclass
class Example:
    prompt_id: str
    category: str
    prompt: str | None
    teacher: str | None
    other: str | None
    teacher_elided: int
    other_elided: int
    scores: dict[str, float]
    extra: dict[str, Any]


@dataclass
class Verdict:
    status: str  # "distinguishable" | "indistinguishable" | "inconclusive" | "unknown"
    epsilon: float | None
    broken_by: str | None
    at_budget: int | None
    max_eps: Est | None
    text: str
    strategy: str | None = None  # strategy of the breaking point
    max_adversary: str | None = None  # where the strongest eps was seen
    max_q: int | None = None
    # The declared primary analysis (discriminators.verdict): the point selected on half
    # the test prompts and its eps confirmed on the other half.
    primary: Est | None = None
    primary_adversary: str | None = None
    primary_strategy: str | None = None
    primary_q: int | None = None
    primary_p_holm: float | None = None
    primary_rejected: bool = False
    distinguishable_in: list[str] = field(default_factory=list)
    family_size: int | None = None
    alpha: float | None = None
    calibration: dict[str, Any] | None = None  # A/A comparisons: the eps = 0 family test
    gray_box: dict[str, str] = field(default_factory=dict)  # adversary -> note


@dataclass
class Comparison:
    alias: str
    role: str  # "student" | "null"
    spec: str | None
    reference: str
    adversaries: list[Adversary]
    verdict: Verdict
    examples: dict[str, list[Example]]
    similarity: dict[str, Any] | None  # {"overall": Est, "test": Est, "per_category": {cat: Est}}

    def adversary(self, name: str) -> Adversary | None:
        return next((a for a in self.adversaries if a.name == name), None)

    def best_per_category(self) -> dict[str, tuple[Est, str]]:
        """Category -> (highest eps estimate, adversary) over this comparison's adversaries."""
        out: dict[str, tuple[Est, str]] = {}
        for adv in self.adversaries:
            for cat, est in adv.per_category.items():
                if est.value is None:
                    continue
                if cat not in out or est.value > out[cat][0].value:
                    out[cat] = (est, adv.name)
        return out

    def significant_categories(self) -> dict[str, list[str]]:
        """Category -> adversaries whose Holm-adjusted test rejects there."""
        out: dict[str, list[str]] = {}
        for adv in self.adversaries:
            for cat, est in adv.per_category.items():
                if est.significant:
                    out.setdefault(cat, []).append(adv.name)
        return out


@dataclass
class DeltaRow:
    """One adversary's paired Delta-eps (distilled - base) at the full-budget point."""

    adversary: str
    eps_base: Est | None
    eps_distilled: Est | None
    delta: Est | None
    per_category: dict[str, Est]  # Delta-eps per category, Holm-adjusted p
    point: dict[str, Any]  # budget, strategy, seed, k of the paired point


@dataclass
class DistillDelta:
    """A distilled student against the student it was distilled from (attack deltas)."""

    alias: str
    base: str
    base_from: str | None
    method: str | None
    rows: list[DeltaRow]
    skipped: dict[str, str]
    similarity: Est | None  # paired Delta of cosine to the teacher (test prompts)
    sim_base: Est | None
    sim_distilled: Est | None
    status: str  # "closer" | "further" | "mixed" | "not-closer" | "none"
    reading: str

    @property
    def categories(self) -> list[str]:
        out: list[str] = []
        for row in self.rows:
            out += [c for c in row.per_category if c not in out]
        return out


@dataclass
class Report:
    run: str
    path: Path
    results: dict
    suite: dict
    categories: list[str]
    models: dict[str, dict]
    teacher: str | None
    attack_config: dict | None
    epsilon: float | None
    alpha: float | None
    comparisons: list[Comparison]  # students (model order), then the null comparison(s)
    similarity_only: list[Comparison]  # models with similarity but no attack entry
    manifest: dict
    config: dict
    notes: dict[str, str] = field(default_factory=dict)
    distillation: list[DistillDelta] = field(default_factory=list)

    @property
    def students(self) -> list[Comparison]:
        return [c for c in self.comparisons if c.role != "null"]

    @property
    def null(self) -> Comparison | None:
        return next((c for c in self.comparisons if c.role == "null"), None)

    @property
    def adversary_names(self) -> list[str]:
        names: list[str] = list((self.attack_config or {}).get("adversaries") or [])
        for comp in self.comparisons:
            names += [a.name for a in comp.adversaries if a.name not in names]
        return names

    @property
    def has_curves(self) -> bool:
        return any(
            p.value is not None
            for c in self.comparisons
            for a in c.adversaries
            for pts in a.curves.values()
            for p in pts
        )

    @property
    def k_values(self) -> list[int]:
        ks = {
            p.k
            for c in self.comparisons
            for a in c.adversaries
            for pts in a.curves.values()
            for p in pts
        }
        return sorted(ks)

    def category_order(self) -> list[str]:
        """Categories sorted by how far the first student gives itself away there."""
        cats = list(self.categories)
        if not self.students:
            return cats
        best = self.students[0].best_per_category()
        if not best:
            sim = (self.students[0].similarity or {}).get("per_category") or {}
            return sorted(
                cats, key=lambda c: sim[c].value if c in sim and sim[c].value is not None else 2
            )
        return sorted(cats, key=lambda c: -(best[c][0].value if c in best else -2))


# ---- loading ----------------------------------------------------------------------
def _parse_adversary(name: str, obj: Any, where: str) -> Adversary:
    obj = _dict(obj, where)
    eps_obj = obj.get("eps")
    eps = _est(eps_obj, f"{where}.eps")
    p = eps.p if eps else None
    stat = None
    test = obj.get("two_sample", obj.get("test"))
    if isinstance(test, dict):  # two-sample tests (kind "test"): {"statistic", "p", "n"}
        stat = _num(test.get("statistic"), f"{where}.test.statistic")
        p = p if p is not None else _num(test.get("p"), f"{where}.test.p")
    if p is None:
        p = _num(obj.get("p"), f"{where}.p")
    per_cat = {
        str(cat): e
        for cat, raw in _dict(obj.get("per_category"), f"{where}.per_category").items()
        if (e := _est(raw, f"{where}.per_category.{cat}")) is not None
    }
    curves: dict[str, list[CurvePoint]] = {}
    for strat, pts in _dict(obj.get("curves"), f"{where}.curves").items():
        if not isinstance(pts, list):
            raise BbiError(f"results.json: {where}.curves.{strat}: expected a list of points")
        parsed = []
        for i, pt in enumerate(pts):
            pt = _dict(pt, f"{where}.curves.{strat}[{i}]")
            est = _est(pt, f"{where}.curves.{strat}[{i}]")
            q = pt.get("q")
            if not isinstance(q, (int, float)) or q <= 0:
                raise BbiError(
                    f"results.json: {where}.curves.{strat}[{i}].q: expected a positive number"
                )
            parsed.append(
                CurvePoint(
                    q=int(q),
                    k=int(pt.get("k") or 1),
                    value=est.value,
                    ci=est.ci,
                    n_seeds=pt.get("n_seeds"),
                )
            )
        if parsed:
            curves[str(strat)] = parsed
    budget = obj.get("budget")
    return Adversary(
        name=name,
        eps=eps,
        auroc=_est(obj.get("auroc"), f"{where}.auroc"),
        p=p,
        kept_fraction=_num(obj.get("kept_fraction"), f"{where}.kept_fraction"),
        budget=int(budget) if isinstance(budget, (int, float)) else None,
        strategy=obj.get("strategy") if isinstance(obj.get("strategy"), str) else None,
        seed=obj.get("seed") if isinstance(obj.get("seed"), int) else None,
        compute_s=_num(obj.get("compute_s"), f"{where}.compute_s"),
        per_category=per_cat,
        curves=curves,
        notes=str(obj.get("notes") or ""),
        kind=obj.get("kind") if isinstance(obj.get("kind"), str) else None,
        statistic=stat,
        test_n=int(test["n"])
        if isinstance(test, dict) and isinstance(test.get("n"), (int, float))
        else None,
    )


def _parse_verdict(obj: Any, where: str, epsilon: float | None) -> Verdict:
    obj = _dict(obj, where)
    if not obj:
        return Verdict("unknown", epsilon, None, None, None, "no verdict recorded")
    ind = obj.get("indistinguishable")
    status = obj.get("status")
    if status not in ("distinguishable", "indistinguishable", "inconclusive"):
        # Older results carry only the boolean; "no-estimate" and the like are unknown.
        status = (
            "unknown"
            if ind is None or status
            else ("indistinguishable" if ind else "distinguishable")
        )
    at = obj.get("at_budget")
    eps_v = _num(obj.get("epsilon"), f"{where}.epsilon")
    mx = obj.get("max_eps") if isinstance(obj.get("max_eps"), dict) else {}
    prim = _dict(obj.get("primary"), f"{where}.primary")
    pq = prim.get("q")
    found = obj.get("distinguishable_in")
    fam = obj.get("family_size")
    cal = obj.get("calibration")
    return Verdict(
        status=status,
        epsilon=eps_v if eps_v is not None else epsilon,
        broken_by=obj.get("broken_by") if isinstance(obj.get("broken_by"), str) else None,
        at_budget=int(at) if isinstance(at, (int, float)) else None,
        max_eps=_est(obj.get("max_eps"), f"{where}.max_eps"),
        text=str(obj.get("text") or ""),
        strategy=obj.get("strategy") if isinstance(obj.get("strategy"), str) else None,
        max_adversary=mx.get("adversary") if isinstance(mx.get("adversary"), str) else None,
        max_q=int(mx["q"]) if isinstance(mx.get("q"), (int, float)) else None,
        primary=_est(prim.get("eps"), f"{where}.primary.eps") if prim else None,
        primary_adversary=prim.get("adversary") if isinstance(prim.get("adversary"), str) else None,
        primary_strategy=prim.get("strategy") if isinstance(prim.get("strategy"), str) else None,
        primary_q=int(pq) if isinstance(pq, (int, float)) else None,
        primary_p_holm=_num(prim.get("p_holm"), f"{where}.primary.p_holm"),
        primary_rejected=prim.get("rejected") is True,
        distinguishable_in=[str(c) for c in found] if isinstance(found, list) else [],
        family_size=int(fam) if isinstance(fam, (int, float)) else None,
        alpha=_num(obj.get("alpha"), f"{where}.alpha"),
        calibration=cal if isinstance(cal, dict) else None,
        gray_box={
            str(k): str(v) for k, v in _dict(obj.get("gray_box"), f"{where}.gray_box").items()
        },
    )


def _similarity(obj: Any, where: str) -> dict | None:
    obj = _dict(obj, where)
    if not obj:
        return None
    return {
        "overall": _est(obj.get("overall"), f"{where}.overall"),
        "test": _est(obj.get("test"), f"{where}.test"),
        "per_category": {
            str(c): e
            for c, raw in _dict(obj.get("per_category"), f"{where}.per_category").items()
            if (e := _est(raw, f"{where}.per_category.{c}")) is not None
        },
    }


_READINGS = ("closer", "further", "mixed", "not-closer", "none")


def _parse_deltas(obj: Any, comps: dict[str, Comparison], similarity: dict) -> list[DistillDelta]:
    """``attack.deltas``: paired distilled-vs-base differences written by ``bbi attack``."""
    out: list[DistillDelta] = []
    for alias, raw in _dict(obj, "attack.deltas").items():
        where = f"attack.deltas.{alias}"
        raw = _dict(raw, where)
        base = str(raw.get("base") or "")
        rows = []
        for adv, entry in _dict(raw.get("adversaries"), f"{where}.adversaries").items():
            w = f"{where}.adversaries.{adv}"
            entry = _dict(entry, w)
            b_comp, d_comp = comps.get(base), comps.get(str(alias))
            b_adv = b_comp.adversary(str(adv)) if b_comp else None
            d_adv = d_comp.adversary(str(adv)) if d_comp else None
            rows.append(
                DeltaRow(
                    adversary=str(adv),
                    eps_base=_est(entry.get("eps_base"), f"{w}.eps_base")
                    or (b_adv.eps if b_adv else None),
                    eps_distilled=_est(entry.get("eps_distilled"), f"{w}.eps_distilled")
                    or (d_adv.eps if d_adv else None),
                    delta=_est(entry.get("delta"), f"{w}.delta"),
                    per_category={
                        str(c): e
                        for c, r in _dict(entry.get("per_category"), f"{w}.per_category").items()
                        if (e := _est(r, f"{w}.per_category.{c}")) is not None
                    },
                    point=_dict(entry.get("point"), f"{w}.point"),
                )
            )
        sim_raw = raw.get("similarity")
        sim = _dict(sim_raw, f"{where}.similarity")
        sims_b = _dict(similarity.get(base), f"similarity.{base}")
        sims_d = _dict(similarity.get(alias), f"similarity.{alias}")
        reading = _dict(raw.get("reading"), f"{where}.reading")
        status = reading.get("status") if reading.get("status") in _READINGS else "none"
        out.append(
            DistillDelta(
                alias=str(alias),
                base=base,
                base_from=raw.get("base_from") if isinstance(raw.get("base_from"), str) else None,
                method=raw.get("method") if isinstance(raw.get("method"), str) else None,
                rows=rows,
                skipped={
                    str(k): str(v) for k, v in _dict(raw.get("skipped"), f"{where}.skipped").items()
                },
                similarity=_est(sim_raw, f"{where}.similarity") if sim else None,
                sim_base=_est(sim.get("base"), f"{where}.similarity.base")
                or _est(sims_b.get("test"), f"similarity.{base}.test"),
                sim_distilled=_est(sim.get("distilled"), f"{where}.similarity.distilled")
                or _est(sims_d.get("test"), f"similarity.{alias}.test"),
                status=str(status),
                reading=str(reading.get("text") or "no reading recorded"),
            )
        )
    return out


def _clip(text: str | None) -> tuple[str | None, int]:
    if text is None:
        return None, 0
    if len(text) <= MAX_TEXT:
        return text, 0
    return text[:MAX_TEXT], len(text) - MAX_TEXT


class _Texts:
    """Lazy lookups of prompts and sample-0 responses for the examples section."""

    def __init__(self, run: RunDir):
        self.run = run
        self._prompts: dict[str, str] | None = None
        self._responses: dict[str, dict[str, str]] = {}

    def prompt(self, pid: str) -> str | None:
        if self._prompts is None:
            self._prompts = {}
            if self.run.suite_path.exists():
                for rec in read_jsonl(self.run.suite_path):
                    if "id" in rec:
                        self._prompts[str(rec["id"])] = str(rec.get("prompt", ""))
        return self._prompts.get(pid)

    def response(self, alias: str, pid: str) -> str | None:
        if alias not in self._responses:
            table: dict[str, str] = {}
            try:
                path = self.run.responses_path(alias)
            except BbiError:
                path = None
            if path is not None and path.exists():
                for rec in read_jsonl(path, allow_torn_tail=True):
                    if rec.get("sample", 0) == 0 and "prompt_id" in rec:
                        table[str(rec["prompt_id"])] = str(rec.get("text", ""))
            self._responses[alias] = table
        return self._responses[alias].get(pid)


def load_report(run_dir: str | Path, max_examples: int = 3) -> Report:
    """Read a run directory into a :class:`Report`; BbiError if there is nothing to report."""
    run = RunDir(run_dir)
    if not run.results_path.exists():
        raise BbiError(
            f"{run.path}: no results.json yet; run `bbi probe run` (similarity) or `bbi attack` first"
        )
    results = run.read_results()
    if not isinstance(results, dict):
        raise BbiError(f"{run.results_path}: expected a JSON object")
    cfg = run.config()
    manifest = run.manifest() if run.manifest_path.exists() else {}
    suite = _dict(results.get("suite"), "suite")

    # Models: results.json first (it carries fingerprints), then run.yaml / responses/.
    models: dict[str, dict] = {}
    for alias, m in _dict(results.get("models"), "models").items():
        models[str(alias)] = dict(_dict(m, f"models.{alias}"))
    for alias, m in run.models().items():
        models.setdefault(alias, dict(m or {}))
    teacher = next((a for a, m in models.items() if m.get("role") == "teacher"), None)

    attack = _dict(results.get("attack"), "attack")
    attack_config = _dict(attack.get("config"), "attack.config") or None
    epsilon = _num((attack_config or {}).get("epsilon"), "attack.config.epsilon")
    alpha = _num((attack_config or {}).get("alpha"), "attack.config.alpha")
    similarity = _dict(results.get("similarity"), "similarity")
    texts = _Texts(run)

    comparisons: list[Comparison] = []
    raw_comps = _dict(attack.get("comparisons"), "attack.comparisons")
    for alias, comp in raw_comps.items():
        where = f"attack.comparisons.{alias}"
        comp = _dict(comp, where)
        role = comp.get("role") or (models.get(alias) or {}).get("role") or "student"
        reference = str(comp.get("reference") or teacher or "teacher")
        advs = [
            _parse_adversary(str(name), raw, f"{where}.adversaries.{name}")
            for name, raw in _dict(comp.get("adversaries"), f"{where}.adversaries").items()
        ]
        examples: dict[str, list[Example]] = {}
        for cat, items in _dict(comp.get("examples"), f"{where}.examples").items():
            if not isinstance(items, list):
                raise BbiError(f"results.json: {where}.examples.{cat}: expected a list")
            shown = []
            for item in items[:max_examples]:
                item = _dict(item, f"{where}.examples.{cat}[]")
                pid = str(item.get("prompt_id", ""))
                scores = {
                    str(k): float(v)
                    for k, v in _dict(
                        item.get("scores"), f"{where}.examples.{cat}[].scores"
                    ).items()
                    if isinstance(v, (int, float)) and not isinstance(v, bool)
                }
                t, t_el = _clip(texts.response(reference, pid))
                o, o_el = _clip(texts.response(str(alias), pid))
                extra = {
                    k: v
                    for k, v in item.items()
                    if k not in {"prompt_id", "scores"} and isinstance(v, (str, int, float))
                }
                shown.append(
                    Example(pid, str(cat), texts.prompt(pid), t, o, t_el, o_el, scores, extra)
                )
            examples[str(cat)] = shown
        comparisons.append(
            Comparison(
                alias=str(alias),
                role=str(role),
                spec=(models.get(alias) or {}).get("spec"),
                reference=reference,
                adversaries=advs,
                verdict=_parse_verdict(comp.get("verdict"), f"{where}.verdict", epsilon),
                examples=examples,
                similarity=_similarity(similarity.get(alias), f"similarity.{alias}"),
            )
        )
    # Students first in model order, the A/A null comparison last.
    order = {a: i for i, a in enumerate(models)}
    comparisons.sort(key=lambda c: (c.role == "null", order.get(c.alias, len(order))))

    similarity_only = [
        Comparison(
            alias=str(alias),
            role=str((models.get(alias) or {}).get("role") or "student"),
            spec=(models.get(alias) or {}).get("spec"),
            reference=teacher or "teacher",
            adversaries=[],
            verdict=Verdict("unknown", epsilon, None, None, None, "not attacked yet"),
            examples={},
            similarity=_similarity(sim, f"similarity.{alias}"),
        )
        for alias, sim in similarity.items()
        if alias not in raw_comps
    ]
    similarity_only.sort(key=lambda c: (c.role == "null", order.get(c.alias, len(order))))
    distillation = _parse_deltas(
        attack.get("deltas"), {c.alias: c for c in comparisons}, similarity
    )
    distillation.sort(key=lambda d: order.get(d.alias, len(order)))

    cats = [str(c) for c in (suite.get("categories") or [])]
    seen = set(cats)
    for comp in comparisons + similarity_only:
        extra = list(comp.similarity["per_category"]) if comp.similarity else []
        for adv in comp.adversaries:
            extra += list(adv.per_category)
        for c in extra:
            if c not in seen:
                cats.append(c)
                seen.add(c)

    if not comparisons and not similarity_only:
        raise BbiError(f"{run.results_path}: neither similarity nor attack results to report yet")

    notes: dict[str, str] = {}
    if not attack:
        notes["attack"] = (
            "No attack results yet (run `bbi attack`): this report shows semantic similarity only; "
            "there is no distinguishability verdict."
        )
    has_null = any(c.role == "null" for c in comparisons) or any(
        m.get("role") == "null" for m in models.values()
    )
    if attack and not any(c.role == "null" for c in comparisons):
        notes["null"] = (
            "No A/A calibration in this run: add a null model (an independent teacher resample, "
            "role `null`) to check that the adversaries find nothing where there is nothing."
            if not has_null
            else "No A/A calibration in this run: the null model was not attacked."
        )
    if attack and not any(
        p.value is not None
        for c in comparisons
        for a in c.adversaries
        for pts in a.curves.values()
        for p in pts
    ):
        notes["curves"] = "No budget curves in this run (the attack ran at a single budget)."
    if not similarity:
        notes["similarity"] = "No semantic-similarity results in this run."

    return Report(
        run=str(results.get("run") or run.name),
        path=run.path,
        results=results,
        suite=suite,
        categories=cats,
        models=models,
        teacher=teacher,
        attack_config=attack_config,
        epsilon=epsilon,
        alpha=alpha,
        comparisons=comparisons,
        similarity_only=similarity_only,
        manifest=manifest,
        config=cfg,
        notes=notes,
        distillation=distillation,
    )
