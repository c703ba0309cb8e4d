"""`bbi attack RUN_DIR`: budget sweeps of adversaries, written into the run directory."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from bbi.errors import BbiError


def _ints(text: str, what: str) -> list[int]:
    try:
        out = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BbiError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not out:
        raise BbiError(f"{what}: give at least one value")
    return out


def _names(text: str | None) -> list[str] | None:
    if text is None:
        return None
    out = [x.strip() for x in text.split(",") if x.strip()]
    return out or None


def _params(items: list[str]) -> dict[str, dict[str, Any]]:
    """``--param tfidf.C=2`` -> {"tfidf": {"C": 2}} (values parsed as JSON when possible)."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        name, dot, param = key.partition(".")
        if not sep or not dot or not name or not param:
            raise BbiError(f"--param expects ADVERSARY.NAME=VALUE, got {item!r}")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(name, {})[param] = value
    return out


@contextmanager
def _progress(console: Console, enabled: bool):
    if not enabled:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as prog:

        class _Task:
            def __init__(self, desc: str, total: int):
                self.id = prog.add_task(desc, total=total)

            def advance(self) -> None:
                prog.advance(self.id)

        yield _Task


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
            t = Table(title=f"{label}: eps per category (* = Holm p < alpha)")
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
                            cells.append(f"p~{pt.get('p_median', float('nan')):.3f}")
                        else:
                            cells.append(_fmt(pt))
                    t.add_row(a, strat, str(k), *cells)
        console.print(t)
        console.print(f"[bold]{label}[/bold]: {comp['verdict']['text']}")


def register(app: typer.Typer) -> None:
    """Attach the `attack` command to the root app."""

    @app.command("attack")
    def attack(
        run_dir: Path = typer.Argument(..., help="Run directory (runs/NAME)."),
        budget: str = typer.Option(
            "50,100,200,400,800,1600,4000",
            "--budget",
            help="Query budgets q (one query = one prompt to one model; q//2 train prompts).",
        ),
        strategy: str = typer.Option(
            "random,stratified,disagreement",
            "--strategy",
            help="Acquisition strategies: random, stratified, disagreement, bandit.",
        ),
        seeds: int = typer.Option(5, "--seeds", help="Number of seeds (0..N-1)."),
        test_queries: str = typer.Option(
            "1", "--test-queries", help="k: responses of the unknown model combined per decision."
        ),
        adversary: str = typer.Option(
            "surface,tfidf,embed,pairwise", "--adversary", help="Adversaries (comma-separated)."
        ),
        epsilon: float = typer.Option(0.1, "--epsilon", help="Advantage bound for the verdict."),
        alpha: float = typer.Option(0.05, "--alpha", help="Significance level (Holm)."),
        compare: str | None = typer.Option(
            None, "--compare", help="Aliases to compare with the teacher (default: all)."
        ),
        n_bootstrap: int = typer.Option(1000, "--n-bootstrap"),
        n_permutations: int = typer.Option(1000, "--n-permutations"),
        param: list[str] = typer.Option(
            [], "--param", help="Adversary hyperparameter, e.g. tfidf.C=2 (repeatable)."
        ),
        quiet: bool = typer.Option(False, "--quiet", help="No progress bars or tables."),
    ) -> None:
        """Measure eps(q, k) of adversaries against every (teacher, other) comparison,
        with bootstrap CIs, permutation p-values, per-category Holm tests and a verdict."""
        from bbi.runstore import RunDir
        from discriminators.attack import AttackConfig, run_attack

        run = RunDir(run_dir)
        if seeds < 1:
            raise BbiError("--seeds must be >= 1")
        cfg = AttackConfig(
            budgets=_ints(budget, "--budget"),
            strategies=_names(strategy) or [],
            seeds=list(range(seeds)),
            test_queries=_ints(test_queries, "--test-queries"),
            epsilon=epsilon,
            alpha=alpha,
            adversaries=_names(adversary) or [],
            n_bootstrap=n_bootstrap,
            n_permutations=n_permutations,
            adversary_params=_params(param),
        )
        if not cfg.strategies or not cfg.adversaries:
            raise BbiError("give at least one strategy and one adversary")
        console = Console(stderr=False)
        only = _names(compare)
        with _progress(Console(stderr=True), not quiet) as prog:
            result = run_attack(run, cfg, compare=only, progress=prog)
        if not quiet:
            print_attack(console, result, only)
        typer.echo(f"wrote {run.results_path} and {run.attack_dir}/")
