"""eps against distillation tokens: the curve users want, from one training's snapshots.

A distillation with ``curve_tokens`` keeps a student snapshot when the tokens it has seen
first pass each milestone (``distill.method``; listed in ``distill.<alias>.curve``). This
step measures every snapshot exactly like the final student:

1. probe: each snapshot is a student of the run (alias ``<distilled>.t<tokens>``), answered
   on the run's suite with the run's generation settings by the usual probe path (responses
   cached by the snapshot's weights fingerprint, so a rerun generates nothing new);
2. attack: the run's own sweep settings, by the usual attack path (same split, same seeds;
   the base, final student and A/A null are attacked too if the run's attack did not
   cover them with these settings);
3. record (``results.json["token_curve"][<distilled>]``, ``bbi.results_schema.TokenCurve``):
   per point the tokens seen, step, and the eps of the analysis that decides the verdict:
   under ``decision: crossfit`` (the default) the cross-fitted adversary over every
   prompt, its 95% paired-bootstrap CI and the exact test's p; under ``decision: split``
   the (adversary, strategy, q) selected on the selection half of the test split, its eps
   and 95% CI on the confirmation half. The A/A band is the same for the teacher against
   its resample.

Part of the application layer: it composes probes (the suite), distill's records and the
attack (discriminators).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from rich.console import Console

from bbi.app.steps import file_key, key_of, mark, step_done
from bbi.config import AttackSettings
from bbi.errors import BbiError
from bbi.probe_run import ModelEntry
from bbi.results_schema import (
    ATTACK_SCHEMA_VERSION,
    SnapshotsRecord,
    snapshot_aliases,
    validated_token_curve,
)
from bbi.runstore import RunDir

console = Console(stderr=True)


def curve_students(run: RunDir) -> dict[str, SnapshotsRecord]:
    """Distilled alias -> its snapshots record, for every student that kept snapshots."""
    out: dict[str, SnapshotsRecord] = {}
    for alias, rec in (run.read_results().get("distill") or {}).items():
        if isinstance(rec, dict) and rec.get("curve"):
            try:
                out[str(alias)] = SnapshotsRecord.model_validate(rec["curve"])
            except ValueError as exc:
                raise BbiError(f"{run.results_path}: distill.{alias}.curve: {exc}") from None
    return out


def settings_from_record(record: dict[str, Any], where: str) -> AttackSettings:
    """The sweep settings that reproduce a recorded sweep (``attack.config``); refused when
    the record cannot be reproduced exactly."""
    from discriminators.sweep import config_record

    if not isinstance(record, dict) or not record.get("adversaries"):
        raise BbiError(f"{where}: no attack config recorded; run `bbi attack` first")
    seeds = record.get("seeds") or []
    params = {**(record.get("adversary_params") or {}), **(record.get("strategy_params") or {})}
    settings = AttackSettings.parse(
        {
            "adversaries": record.get("adversaries"),
            "budgets": record.get("budgets"),
            "strategies": record.get("strategies"),
            "seeds": len(seeds) if isinstance(seeds, list) else seeds,
            "test_queries": record.get("test_queries"),
            "epsilon": float(record.get("epsilon", 0.1)),
            "alpha": float(record.get("alpha", 0.05)),
            "n_bootstrap": record.get("n_bootstrap"),
            "n_permutations": record.get("n_permutations"),
            "params": params,
            "decision": record.get("decision", "split"),
            "equality": bool(record.get("equality", False)),
        },
        where,
    )
    if not _same_config(config_record(settings), record):
        raise BbiError(
            f"{where}: this bbi cannot reproduce the recorded sweep exactly; rerun `bbi attack`"
        )
    return settings


def _same_config(a: dict[str, Any] | None, b: dict[str, Any] | None) -> bool:
    def norm(x: dict[str, Any] | None) -> str:
        x = {k: v for k, v in (x or {}).items() if k != "statistics"}
        return json.dumps(x, sort_keys=True, default=str)

    return a is not None and b is not None and norm(a) == norm(b)


def _where(primary: dict[str, Any] | None) -> str:
    """In words: where a split primary point's eps comes from."""
    if not primary:
        return "no estimate (no adversary produced an eps)"
    n_conf = (primary.get("eps") or {}).get("n")
    n_sel = (primary.get("selection") or {}).get("n")
    return (
        f"test split, confirmation half ({n_conf} prompts); the point (adversary, strategy, "
        f"q) selected on the other half ({n_sel} prompts)"
    )


def _decider(verdict: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The eps of the analysis that decided ``verdict`` (its fields for a curve point or
    the band) and, in words, where it comes from."""
    cf = verdict.get("crossfit") or {}
    if cf.get("decides") and cf.get("primary"):
        prim = cf["primary"]
        eps = {**prim["eps"], "p": prim.get("p"), "h0": f"eps <= {cf.get('epsilon', 0):g}"}
        chosen = prim.get("chosen")
        where = (
            f"cross-fitted {prim.get('adversary', 'stack')} adversary over all "
            f"{prim['eps'].get('n')} prompts"
            + (f" (per fold: {', '.join(chosen)})" if chosen else "")
            + "; 95% paired-bootstrap CI; p: the exact per-fold tests merged"
        )
        return {"adversary": prim.get("adversary", "stack"), "eps": eps}, where
    prim = verdict.get("primary") or None
    if not prim:
        return {}, _where(None)
    fields = {k: prim[k] for k in ("adversary", "strategy", "q", "eps")}
    return fields, _where(prim)


def _point(alias: str, comp: dict[str, Any], sim: dict[str, Any] | None) -> dict[str, Any]:
    verdict = comp.get("verdict") or {}
    fields, where = _decider(verdict)
    out: dict[str, Any] = {"alias": alias, "test": where, "status": verdict.get("status")}
    out.update(fields)
    if sim and sim.get("test"):
        out["similarity"] = sim["test"]
    return out


def token_curve(
    run_path: str | Path,
    *,
    attack: AttackSettings | None = None,
    only: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Probe and attack every snapshot of the run's distilled students (or of ``only``);
    write and return ``results.json["token_curve"]``.

    ``attack`` is the sweep the run's students were attacked with (``bbi run`` passes its
    own); by default the one recorded in results.json. Every step is cached: a rerun with
    unchanged responses and settings only re-reads the run.
    """
    from bbi.app.progress import sweep_progress
    from bbi.probe_run import NULL_ALIAS, models_of_run, run_probe
    from discriminators.attack import run_attack
    from discriminators.deltas import distill_base
    from discriminators.sweep import check_sweep, config_record

    t0 = time.perf_counter()
    run = RunDir(run_path, must_exist=True)
    students = curve_students(run)
    if only is not None:
        if only not in students:
            raise BbiError(
                f"{run.path}: {only!r} kept no curve snapshots"
                + (f" (students with snapshots: {', '.join(students)})" if students else "")
            )
        students = {only: students[only]}
    if not students:
        raise BbiError(
            f"{run.path}: no distilled student kept curve snapshots; distil with "
            "--curve-tokens (bbi distill) or distill.<method>.curve_tokens (bbi run)"
        )
    results = run.read_results()
    raw_attack = results.get("attack") or {}
    if attack is None:
        if raw_attack.get("schema_version") != ATTACK_SCHEMA_VERSION:
            raise BbiError(f"{run.path}: no attack results of this bbi; run `bbi attack` first")
        attack = settings_from_record(raw_attack.get("config"), f"{run.results_path}: attack")
    check_sweep(attack)
    want = config_record(attack)

    models, records, suite_name, generation = models_of_run(run.path)
    by_alias = {m.alias: m for m in models}
    teacher = run.teacher_alias()
    null = next((m.alias for m in models if m.role == "null"), None)
    if null is None and NULL_ALIAS in by_alias:
        null = NULL_ALIAS
    entries: list[ModelEntry] = []
    plan: dict[str, dict[str, Any]] = {}
    roles = {a: {"role": m.role} for a, m in by_alias.items()}
    for alias, curve in students.items():
        if not curve.snapshots:
            raise BbiError(
                f"{run.path}: {alias} reached none of its token milestones "
                f"({', '.join(map(str, curve.milestones))}); lower them"
            )
        if alias not in by_alias:
            raise BbiError(f"{run.path}: {alias} is not a model of run.yaml")
        args = by_alias[alias].args
        for snap in curve.snapshots:
            if not Path(snap.dir).exists():
                raise BbiError(f"{snap.dir}: snapshot missing (distil {alias} again)")
            entries.append(ModelEntry(snap.alias, snap.spec, "student", args))
        record = (results.get("distill") or {}).get(alias)
        found = distill_base(
            alias, record, run.models(), {a: r for a, r in roles.items() if a != alias}
        )
        plan[alias] = {"curve": curve, "base": found[0] if found else None}

    snapshot_entries = {e.alias: e for e in entries}
    # An earlier training's snapshots (their directories are gone) are not answered again.
    stale = snapshot_aliases(results, [m.alias for m in models]) - set(snapshot_entries)
    probe_models = [m for m in models if m.alias not in {*snapshot_entries, *stale}] + entries
    # The usual probe path: every response is cached by its model's weights fingerprint,
    # so a rerun answers only what a new or retrained snapshot has not answered yet.
    console.rule(f"[bold]curve: probe {len(entries)} snapshot(s)")
    run_probe(run.path, probe_models, records, generation, suite_name=suite_name, progress=progress)

    # Attack what the curve reads and the run's attack did not cover with these settings.
    comps = (run.read_results().get("attack") or {}).get("comparisons") or {}
    needed = [*snapshot_entries, *(p["base"] for p in plan.values() if p["base"]), *plan]
    needed += [null] if null else []
    compare = [
        a
        for a in dict.fromkeys(needed)
        if a in snapshot_entries or not _same_config((comps.get(a) or {}).get("config"), want)
    ]
    key_attack = key_of(
        want, compare, {a: file_key(run.responses_path(a)) for a in [teacher, *needed]}
    )
    if step_done(run, "curve:attack", key_attack) and all(
        _same_config((comps.get(a) or {}).get("config"), want) for a in compare
    ):
        console.print("cached: curve attack results unchanged")
    else:
        console.rule(f"[bold]curve: attack {len(compare)} comparison(s)")
        t_attack = time.perf_counter()
        with sweep_progress(console, progress) as prog:
            run_attack(run, attack, compare=compare, progress=prog)
        mark(run, "curve:attack", key_attack, t_attack)

    results = run.read_results()
    comps = (results.get("attack") or {}).get("comparisons") or {}
    sims = results.get("similarity") or {}
    out: dict[str, Any] = {}
    for alias, p in plan.items():
        curve: SnapshotsRecord = p["curve"]
        points: list[dict[str, Any]] = []
        notes: list[str] = []
        if p["base"] and p["base"] in comps:
            points.append(
                {
                    **_point(p["base"], comps[p["base"]], sims.get(p["base"])),
                    "kind": "base",
                    "tokens_seen": 0,
                    "loss_tokens": 0,
                    "step": 0,
                }
            )
        else:
            notes.append("the student it was distilled from is not in the run's attack")
        for snap in curve.snapshots:
            points.append(
                {
                    **_point(snap.alias, comps[snap.alias], sims.get(snap.alias)),
                    "kind": "snapshot",
                    "tokens_seen": snap.tokens_seen,
                    "loss_tokens": snap.loss_tokens,
                    "step": snap.step,
                }
            )
        if curve.tokens_seen > curve.snapshots[-1].tokens_seen:
            points.append(
                {
                    **_point(alias, comps[alias], sims.get(alias)),
                    "kind": "final",
                    "tokens_seen": curve.tokens_seen,
                    "loss_tokens": curve.loss_tokens,
                    "step": curve.steps,
                }
            )
        band = None
        if null and null in comps:
            fields, where = _decider(comps[null].get("verdict") or {})
            band = {"alias": null, "test": where, **fields}
        else:
            notes.append("no A/A null comparison in this run: no band")
        if curve.unreached:
            notes.append(
                "milestones never reached (the training saw "
                f"{curve.tokens_seen} tokens): {', '.join(map(str, curve.unreached))}"
            )
        out[alias] = validated_token_curve(
            {
                "distilled": alias,
                "teacher": teacher,
                "base": p["base"],
                "attack": want,
                "points": points,
                "band": band,
                "unreached": list(curve.unreached),
                "notes": notes,
            }
        )
        run.update_results_entry("token_curve", alias, out[alias])
    run.update_manifest(timings={"curve": round(time.perf_counter() - t0, 3)})
    return out


__all__ = ["curve_students", "settings_from_record", "token_curve"]
