"""`bbi attack RUN_DIR`: budget sweeps of adversaries, written into the run directory."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from bbi.app.cli.params import path_value, text_value
from bbi.app.cli.settings_options import split_list, with_settings
from bbi.app.progress import sweep_progress
from bbi.config import AttackSettings
from bbi.console import console as plain_console
from bbi.errors import BbiError

_D = AttackSettings()  # the defaults, stated once in bbi.config


def _params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--param tfidf.C=2`` -> {"tfidf": {"C": 2}} (values parsed as JSON when possible)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, param = key.partition(".")
        if not sep or not dot or not name or not param:
            raise BbiError(f"--param expects NAME.KEY=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[param] = value
    return out


def _fmt(est: dict | None, digits: int = 2) -> str:
    if not est or est.get("value") is None:
        return "-"
    lo, hi = est.get("ci") or (None, None)
    if lo is None:
        return f"{est['value']:.{digits}f}"
    return f"{est['value']:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def print_attack(console: Console, attack: dict[str, Any], only: list[str] | None = None) -> None:
    """Rich tables: summary, per category, per budget and strategy, A/A rows marked."""
    comps = attack["comparisons"]
    names = [c for c in comps if only is None or c in only]
    summary = Table(title="Distinguishing advantage at the full budget (k = 1)")
    for col in ("comparison", "adversary", "eps [95% CI]", "p", "AUROC", "n", "q", "t (s)"):
        summary.add_column(col, justify="left" if col in ("comparison", "adversary") else "right")
    for other in names:
        comp = comps[other]
        label = f"{other} (A/A)" if comp.get("role") == "null" else other
        for adv, r in comp["adversaries"].items():
            eps = r.get("eps")
            if r.get("kind") == "test":
                ts = r.get("two_sample", {})
                summary.add_row(
                    label,
                    adv,
                    f"stat {ts.get('statistic', float('nan')):.4f}",
                    f"{ts.get('p', float('nan')):.3f}",
                    "-",
                    str(ts.get("n", "-")),
                    str(r["budget"]),
                    f"{r['compute_s']:.2f}",
                )
                continue
            summary.add_row(
                label,
                adv,
                _fmt(eps),
                f"{eps['p']:.3f}",
                _fmt(r.get("auroc")),
                str(eps["n"]),
                str(r["budget"]),
                f"{r['compute_s']:.2f}",
            )
    console.print(summary)
    for other in names:
        comp = comps[other]
        label = f"{other} (A/A)" if comp.get("role") == "null" else other
        advs = [a for a, r in comp["adversaries"].items() if r.get("kind") != "test"]
        cats = sorted({c for a in advs for c in comp["adversaries"][a]["per_category"]})
        if cats:
            t = Table(
                title=f"{label}: eps per category (* = significant in the verdict's family-wise test)"
            )
            t.add_column("category")
            for a in advs:
                t.add_column(a, justify="right")
            for c in cats:
                row = [c]
                for a in advs:
                    est = comp["adversaries"][a]["per_category"].get(c)
                    row.append(_fmt(est) + (" *" if est and est.get("significant") else ""))
                t.add_row(*row)
            console.print(t)
        budgets = sorted(
            {
                pt["q"]
                for a in comp["adversaries"].values()
                for cur in a["curves"].values()
                for pt in cur
            }
        )
        t = Table(title=f"{label}: eps(q, k) by budget, mean over seeds [pooled CI]")
        for col in ("adversary", "strategy", "k"):
            t.add_column(col)
        for q in budgets:
            t.add_column(f"q={q}", justify="right")
        for a, r in comp["adversaries"].items():
            for strat, cur in r["curves"].items():
                ks = sorted({pt["k"] for pt in cur})
                for k in ks:
                    by_q = {pt["q"]: pt for pt in cur if pt["k"] == k}
                    cells = []
                    for q in budgets:
                        pt = by_q.get(q)
                        if pt is None:
                            cells.append("-")
                        elif pt.get("value") is None:
                            cells.append(f"p={pt.get('p', pt.get('p_median', float('nan'))):.3f}")
                        else:
                            cells.append(_fmt(pt))
                    t.add_row(a, strat, str(k), *cells)
        console.print(t)
        console.print(f"[bold]{label}[/bold]: {comp['verdict']['text']}")
        cal = comp["verdict"].get("calibration")
        if cal and cal.get("text"):
            console.print(f"[bold]{label}[/bold]: {cal['text']}")
        eq = comp["verdict"].get("equality") or {}
        if eq.get("text"):  # its own question, not an eps claim
            console.print(f"{label}: equality (MMD): {eq['text']}", highlight=False)
        declared = comp["verdict"].get("sequential")
        if declared and declared.get("text"):
            # The one declared sequential test; per-budget minima would be a selection.
            console.print(f"{label}: queries until told apart: {declared['text']}")
    deltas = {a: d for a, d in (attack.get("deltas") or {}).items() if only is None or a in only}
    if deltas:
        t = Table(
            title="Distilled vs base student: paired Delta (distilled - base, 95% CI, "
            "full budget, k = 1; negative Delta-eps = closer)"
        )
        for col in ("student", "base", "measure", "Delta [95% CI]", "p", "n"):
            t.add_column(col, justify="left" if col in ("student", "base", "measure") else "right")
        for alias, d in deltas.items():
            sim = d.get("similarity")
            if sim:
                t.add_row(
                    alias, d["base"], "similarity", _fmt(sim, 3), f"{sim['p']:.3f}", str(sim["n"])
                )
            for adv, e in (d.get("adversaries") or {}).items():
                est = e["delta"]
                t.add_row(
                    alias, d["base"], f"eps {adv}", _fmt(est), f"{est['p']:.3f}", str(est["n"])
                )
        console.print(t)
        for alias, d in deltas.items():
            reading = (d.get("reading") or {}).get("text", "")
            console.print(f"[bold]{alias} vs {d['base']}[/bold]: {reading}")
            for adv, why in (d.get("skipped") or {}).items():
                console.print(f"  not paired: {adv}: {why}", highlight=False)


def _fit_default_budgets(
    run: Any, settings: AttackSettings, only: list[str] | None, notes: list[str]
) -> AttackSettings:
    """The default budgets and test-query counts, cut to what the smallest compared pool
    can pay (an imported pool of 805 prompts cannot buy 4,000 queries); budgets the user
    set are kept as given, and one that does not fit stays a one-line error. What was
    dropped goes to ``notes``, said once the sweep has run (bad input stays one line)."""
    from bbi.app.pipeline import fit_budgets
    from bbi.config import DEFAULT_BUDGETS, DEFAULT_TEST_QUERIES
    from discriminators.attack import default_comparisons

    budgets = list(settings.budgets) == list(DEFAULT_BUDGETS)
    ks = list(settings.test_queries) == list(DEFAULT_TEST_QUERIES)
    if not (budgets or ks):
        return settings
    models = run.models()
    sizes = []
    for other in only or default_comparisons(run):
        if other not in models or other == run.teacher_alias():
            return settings  # run_attack names what is wrong
        split = run.paired(other)["split"].astype(str)
        sizes.append((int((split == "train").sum()), int((split == "test").sum())))
    if not sizes:
        return settings
    n_train, n_test = min(s[0] for s in sizes), min(s[1] for s in sizes)
    if n_train < 2 or n_test < 1:
        return settings  # run_attack says what the pool lacks
    remedy = "pass --budget with what the pool allows"
    return fit_budgets(settings, n_train, n_test, str(run.path), remedy, budgets, ks, notes)


def register(app: typer.Typer) -> None:
    """Attach the `attack` command to the root app."""

    @app.command("attack")
    @with_settings(AttackSettings, skip=("params",))
    def attack(
        run_dir: Path = typer.Argument(..., help="Run directory (runs/NAME).", parser=path_value),
        compare: str | None = typer.Option(
            None,
            "--compare",
            help="Aliases to compare with the teacher, comma-separated (default: all).",
            parser=text_value,
        ),
        param: list[str] = typer.Option(
            [],
            "--param",
            help="Adversary or strategy parameter, e.g. tfidf.C=2 or"
            " disagreement.n_committee=4 (repeatable).",
        ),
        progress: bool = typer.Option(
            True, "--progress/--no-progress", help="Show progress bars and the result tables."
        ),
        settings: AttackSettings = _D,
    ) -> None:
        """Measure eps(q, k) of adversaries against every (teacher, other) comparison, with
        bootstrap CIs and p-values; the verdict controls family-wise error over the sweep
        and names the categories where the student gives itself away."""
        from bbi.runstore import RunDir
        from discriminators.attack import run_attack

        run = RunDir(run_dir)
        only = split_list(compare, "--compare")
        notes: list[str] = []
        settings = _fit_default_budgets(run, settings, only, notes)
        if param:  # on top of the file's params, adversary by adversary
            extra = _params(param)
            merged = {
                a: {**settings.params.get(a, {}), **extra.get(a, {})}
                for a in {*settings.params, *extra}
            }
            settings = settings.updated(params=merged)
        quiet = not progress
        out = plain_console()
        with sweep_progress(plain_console(stderr=True), not quiet) as prog:
            result = run_attack(run, settings, compare=only, progress=prog)
        if not quiet:
            print_attack(out, result, only)
        for note in notes:
            out.print(f"[yellow]note:[/] {note}", highlight=False)
        typer.echo(f"wrote {run.results_path} and {run.attack_dir}/")
