"""The report's view of a run: results.json plus the run directory's files, nothing else.

The report never re-runs a model and never imports the adversaries; it reads what
``bbi probe``/``bbi attack``/``bbi distill`` wrote (docs/run-directory.md) and turns it
into plain objects the templates and the markdown/JSON summaries share. Every part of
results.json may be missing (a run that was probed but not attacked yet, a run without
an A/A null model, an attack without curves); each absence becomes a note instead of an
error, so a report can be written at any stage of a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bbi.errors import BbiError
from bbi.results_schema import (
    AdversaryResult,
    BehaviourCell,
    BehaviourView,
    Estimate,
    Similarity,
    TokenCurve,
    parse_attack,
    parse_similarity,
    parse_token_curves,
    read_task_distill,
    snapshot_aliases,
)
from bbi.results_schema import (
    DistillDelta as DeltaRecord,
)
from bbi.results_schema import Verdict as VerdictRecord
from bbi.runstore import RunDir, read_jsonl

MAX_TEXT = 4000  # characters of a response shown in the examples (the rest is elided)


Est = Estimate  # the report's estimate is the results schema's


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
    sequential: list[dict[str, Any]] = field(default_factory=list)  # queries until told apart


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
    text: str
    strategy: str | None = None  # strategy of the breaking point
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
    # The cross-fitted stacked adversary that decides (discriminators.verdict_cf):
    # its test, interval, categories (with minimum detectable eps), base adversaries and
    # best one-feature rule; ``{"skipped": reason}`` when too few prompts to cross-fit.
    crossfit: dict[str, Any] | None = None
    # The one declared "stop as soon as told apart" test (discriminators.verdict).
    sequential: dict[str, Any] | None = None
    # Its own question beside the decision: do the responses differ at all (MMD tests,
    # discriminators.equality)? ``{"skipped": reason}`` when it could not run.
    equality: dict[str, Any] | None = None


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
    explain: dict[str, Any] | None = None  # results.json's record (reports.explain reads it)

    def adversary(self, name: str) -> Adversary | None:
        return next((a for a in self.adversaries if a.name == name), None)

    def best_adversary(self) -> Adversary | None:
        """The adversary with the highest eps at its full budget (None without any eps)."""
        with_eps = [a for a in self.adversaries if a.eps is not None and a.eps.value is not None]
        return max(with_eps, key=lambda a: a.eps.value) if with_eps else None

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
class BehaviourRow:
    """One line of a behaviour table: an arm (or a paired difference) across the metrics."""

    label: str  # the arm, or the control a difference is taken against
    cells: dict[str, Est | None]  # metric -> mean over seeds with its CI (and p), n = seeds
    per_seed: dict[str, list[float]]
    is_method: bool = False


@dataclass
class Behaviour:
    """``distill.<alias>.behaviour``: a method beside its controls, over seeds.

    ``rows`` are the arms (method, controls, no training); ``deltas`` the paired
    differences method - control by seed, one row per control."""

    method: str | None
    metrics: list[str]
    higher_is_better: dict[str, bool]  # metrics without a recorded direction are absent
    rows: list[BehaviourRow]
    deltas: list[BehaviourRow]
    seeds: list[Any]
    confidence: float | None
    version: int | None


@dataclass
class TaskDistill:
    """A student from ``bbi distill bird|circuit``: its behaviour table and the facts of
    its method (BIRD's diagnostics and layers; the circuit's size and accuracies)."""

    alias: str
    method: str | None
    spec: str | None
    base: str | None
    teacher: str | None
    behaviour: Behaviour
    time_s: float | None = None
    seed: int | None = None
    diagnostics: dict[str, float] = field(default_factory=dict)  # bird
    layers: dict[str, str] = field(default_factory=dict)  # bird: teacher/student layer
    teacher_accuracy: float | None = None  # circuit
    student_accuracy: float | None = None  # circuit
    circuit_k: int | None = None  # circuit: heads kept ...
    circuit_of: int | None = None  # ... of the student's heads
    circuit_heads: list[tuple[int, int]] = field(default_factory=list)  # (layer, head)


@dataclass
class Report:
    run: str
    path: Path
    results: dict
    suite: dict
    categories: list[str]
    models: dict[str, dict]
    teacher: str | None
    attack_config: dict | None  # attack.config as recorded (typed: AttackConfigRecord)
    epsilon: float | None
    alpha: float | None
    comparisons: list[Comparison]  # students (model order), then the null comparison(s)
    similarity_only: list[Comparison]  # models with similarity but no attack entry
    manifest: dict
    config: dict
    notes: dict[str, str] = field(default_factory=dict)
    distillation: list[DistillDelta] = field(default_factory=list)
    task_distill: list[TaskDistill] = field(default_factory=list)
    task_distill_unreadable: list[str] = field(default_factory=list)  # aliases, table skipped
    # eps against distillation tokens (results.json "token_curve"), by distilled alias;
    # the snapshots it measured are kept out of ``comparisons`` (they are its points).
    token_curves: dict[str, TokenCurve] = field(default_factory=dict)

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
def _parse_adversary(name: str, a: AdversaryResult) -> Adversary:
    two = a.two_sample
    p = a.eps.p if a.eps else None
    if p is None and two is not None:
        p = two.p
    return Adversary(
        name=name,
        eps=a.eps,
        auroc=a.auroc,
        p=p,
        kept_fraction=a.kept_fraction,
        budget=a.budget,
        strategy=a.strategy,
        seed=a.seed,
        compute_s=a.compute_s,
        per_category=dict(a.per_category),
        curves={
            strat: [CurvePoint(pt.q, pt.k, pt.value, pt.ci, pt.n_seeds) for pt in pts]
            for strat, pts in a.curves.items()
            if pts
        },
        notes=a.notes or "",
        kind=a.kind,
        statistic=two.statistic if two else None,
        test_n=two.n if two else None,
        sequential=[pt.model_dump() for pt in a.sequential],
    )


def _parse_verdict(v: VerdictRecord) -> Verdict:
    prim = v.primary
    status = v.status if v.status != "no-estimate" else "unknown"
    return Verdict(
        status=status,
        epsilon=v.epsilon,
        broken_by=v.broken_by,
        at_budget=v.at_budget,
        text=v.text,
        strategy=v.strategy,
        primary=prim.eps if prim else None,
        primary_adversary=prim.adversary if prim else None,
        primary_strategy=prim.strategy if prim else None,
        primary_q=prim.q if prim else None,
        primary_p_holm=prim.p_holm if prim else None,
        primary_rejected=bool(prim and prim.rejected),
        distinguishable_in=list(v.distinguishable_in),
        family_size=v.family_size,
        alpha=v.alpha,
        calibration=v.calibration.model_dump() if v.calibration else None,
        gray_box=dict(v.gray_box),
        crossfit=dict(v.crossfit) if v.crossfit else None,
        sequential=dict(v.sequential) if v.sequential else None,
        equality=v.equality.model_dump() if v.equality else None,
    )


def _similarity(sim: Similarity | None) -> dict | None:
    if sim is None:
        return None
    return {"overall": sim.overall, "test": sim.test, "per_category": dict(sim.per_category)}


def _parse_deltas(
    deltas: dict[str, DeltaRecord], comps: dict[str, Comparison], sims: dict[str, Similarity]
) -> list[DistillDelta]:
    """``attack.deltas``: paired distilled-vs-base differences written by ``bbi attack``."""
    out: list[DistillDelta] = []
    for alias, raw in deltas.items():
        b_comp, d_comp = comps.get(raw.base), comps.get(alias)
        rows = []
        for adv, entry in raw.adversaries.items():
            b_adv = b_comp.adversary(adv) if b_comp else None
            d_adv = d_comp.adversary(adv) if d_comp else None
            rows.append(
                DeltaRow(
                    adversary=adv,
                    eps_base=entry.eps_base or (b_adv.eps if b_adv else None),
                    eps_distilled=entry.eps_distilled or (d_adv.eps if d_adv else None),
                    delta=entry.delta,
                    per_category=dict(entry.per_category),
                    point=dict(entry.point),
                )
            )
        sim = raw.similarity
        base_sim, dist_sim = sims.get(raw.base), sims.get(alias)
        out.append(
            DistillDelta(
                alias=alias,
                base=raw.base,
                base_from=raw.base_from,
                method=raw.method,
                rows=rows,
                skipped=dict(raw.skipped),
                similarity=Estimate(**sim.model_dump(include={"value", "ci", "n", "p"}))
                if sim
                else None,
                sim_base=(sim.base if sim else None) or (base_sim.test if base_sim else None),
                sim_distilled=(sim.distilled if sim else None)
                or (dist_sim.test if dist_sim else None),
                status=raw.reading.status,
                reading=raw.reading.text,
            )
        )
    return out


def _float(x: float | None) -> float | None:
    return None if x is None else float(x)


def _behaviour_rows(
    table: dict[str, dict[str, BehaviourCell | None]], metrics: list[str], method: str | None
) -> list[BehaviourRow]:
    out: list[BehaviourRow] = []
    for label, row in table.items():
        cells: dict[str, Est | None] = {}
        per_seed: dict[str, list[float]] = {}
        for m in metrics:
            cell = row.get(m)
            per_seed[m] = list(cell.per_seed) if cell else []
            if cell is None or (cell.mean is None and cell.ci is None):
                cells[m] = None
            else:  # the seed mean with its interval; n = seeds
                cells[m] = Estimate(
                    value=cell.mean, ci=cell.ci, n=len(cell.per_seed) or None, p=cell.p
                )
        out.append(BehaviourRow(label, cells, per_seed, is_method=label == method))
    return out


def _parse_behaviour(b: BehaviourView, method: str | None) -> Behaviour | None:
    """The behaviour table; None when it is unusable (no metrics, or no arm with a single
    readable cell). Parts of the wrong type were read as gaps (``TaskDistillView``)."""
    metrics = b.metrics
    if metrics is None:  # a hand-edited file without the list: the metrics the rows carry
        metrics = list(dict.fromkeys(m for row in b.rows.values() for m in row))
    if not metrics:
        return None
    method = b.method or method
    # Arms in the recorded order, then any further row the file carries.
    arms = list(dict.fromkeys(b.arms + list(b.rows)))
    rows = _behaviour_rows({a: b.rows[a] for a in arms if a in b.rows}, metrics, method)
    if not any(c is not None for row in rows for c in row.cells.values()):
        return None
    return Behaviour(
        method=method,
        metrics=metrics,
        higher_is_better=dict(b.higher_is_better),
        rows=rows,
        deltas=_behaviour_rows(b.deltas, metrics, None),
        seeds=list(b.seeds),
        confidence=b.confidence,
        version=b.version,
    )


def _parse_task_distill(
    distill: Any, models: dict[str, dict]
) -> tuple[list[TaskDistill], list[str]]:
    """``distill.<alias>`` records that carry a behaviour table (``bbi distill bird`` and
    ``bbi distill circuit``); LoRA/KD records have none and are left to the attack deltas.
    Returns the parsed students and the aliases whose behaviour block is unreadable."""
    out: list[TaskDistill] = []
    unreadable: list[str] = []
    for alias, rec in read_task_distill(distill).items():
        behaviour = _parse_behaviour(rec.behaviour, rec.method) if rec.behaviour else None
        if behaviour is None:
            unreadable.append(alias)
            continue
        model_spec = (models.get(alias) or {}).get("spec")
        out.append(
            TaskDistill(
                alias=alias,
                method=rec.method or behaviour.method,
                spec=rec.spec
                or (model_spec if isinstance(model_spec, str) and model_spec else None),
                base=rec.base,
                teacher=rec.teacher,
                behaviour=behaviour,
                time_s=rec.time_s,
                seed=rec.seed,
                diagnostics=dict(rec.diagnostics),
                layers=dict(rec.layers),
                teacher_accuracy=rec.teacher_accuracy,
                student_accuracy=rec.student_accuracy,
                circuit_k=rec.circuit.k,
                circuit_of=rec.circuit.of,
                circuit_heads=list(rec.circuit.heads),
            )
        )
    return out, unreadable


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

    raw_attack = results.get("attack")
    attack = parse_attack(raw_attack) if raw_attack else None
    attack_config = (attack.config.as_dict() or None) if attack else None
    epsilon = _float(attack.config.epsilon) if attack else None
    alpha = _float(attack.config.alpha) if attack else None
    similarity = parse_similarity(results.get("similarity"))
    texts = _Texts(run)

    comparisons: list[Comparison] = []
    raw_comps = attack.comparisons if attack else {}
    snapshots = snapshot_aliases(results, [*raw_comps, *(results.get("similarity") or {})])
    for alias, comp in raw_comps.items():
        if alias in snapshots:
            continue
        role = comp.role or (models.get(alias) or {}).get("role") or "student"
        # Older attacks wrote "teacher" whatever the teacher's alias: trust only a model.
        reference = comp.reference if comp.reference in models else (teacher or comp.reference)
        examples: dict[str, list[Example]] = {}
        for cat, items in comp.examples.items():
            shown = []
            for item in items[:max_examples]:
                pid = item.prompt_id
                t, t_el = _clip(texts.response(reference, pid))
                o, o_el = _clip(texts.response(alias, pid))
                shown.append(
                    Example(pid, cat, texts.prompt(pid), t, o, t_el, o_el, dict(item.scores), {})
                )
            examples[cat] = shown
        comparisons.append(
            Comparison(
                alias=alias,
                role=str(role),
                spec=(models.get(alias) or {}).get("spec"),
                reference=reference,
                adversaries=[_parse_adversary(n, a) for n, a in comp.adversaries.items()],
                verdict=_parse_verdict(comp.verdict),
                examples=examples,
                similarity=_similarity(similarity.get(alias)),
                explain=comp.explain,
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
            similarity=_similarity(sim),
        )
        for alias, sim in similarity.items()
        if alias not in raw_comps and alias not in snapshots
    ]
    similarity_only.sort(key=lambda c: (c.role == "null", order.get(c.alias, len(order))))
    distillation = _parse_deltas(
        attack.deltas if attack else {}, {c.alias: c for c in comparisons}, similarity
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

    task_distill, task_unreadable = _parse_task_distill(results.get("distill"), models)
    task_distill.sort(key=lambda d: order.get(d.alias, len(order)))

    if not comparisons and not similarity_only and not task_distill:
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
        task_distill=task_distill,
        task_distill_unreadable=task_unreadable,
        token_curves=parse_token_curves(results.get("token_curve")),
    )
