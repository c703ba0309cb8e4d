"""A method beside its controls, over seeds: the table ``bbi distill bird|circuit`` print.

Every arm (the method, its controls, no training) is run once per seed on the same
held-out set, so a seed's arms form a paired comparison. The table gives per arm and
metric the mean over seeds with a Student-t confidence interval of that mean, and per
control the paired difference method - control (per-seed differences) with its t
interval and two-sided p. With 3 seeds t(0.975, 2) = 4.30: the intervals are wide on
purpose; more seeds (``--seeds``) narrow them. An arm that does not depend on the seed
(no training) has a zero-width interval.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from bbi.runstore import RunDir, write_json

BEHAVIOUR_VERSION = 1


def mean_ci(
    values: list[float], confidence: float = 0.95, bounds: tuple[float, float] | None = None
) -> dict[str, Any]:
    """Mean of per-seed values, a t interval of the mean (clipped to ``bounds``, e.g. a
    rate's [0, 1]), and a two-sided p of mean = 0."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    mean = float(x.mean())
    n = len(x)
    sd = float(x.std(ddof=1)) if n > 1 else 0.0
    if n < 2 or sd == 0.0:
        p = None if n < 2 else (1.0 if mean == 0 else 0.0)
        return {"mean": mean, "ci": [mean, mean], "p": p, "per_seed": x.tolist()}
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * sd / math.sqrt(n)
    p = float(2 * stats.t.sf(abs(mean) / (sd / math.sqrt(n)), n - 1))
    lo, hi = mean - half, mean + half
    if bounds is not None:
        lo, hi = max(lo, bounds[0]), min(hi, bounds[1])
    return {"mean": mean, "ci": [lo, hi], "p": p, "per_seed": x.tolist()}


def summarise(
    per_seed: dict[str, list[dict[str, float]]],
    *,
    method: str,
    controls: list[str],
    metrics: list[str],
    seeds: list[int],
    confidence: float,
    higher_is_better: dict[str, bool],
    unit_interval: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The behaviour table: per arm and metric a seed-mean CI (clipped to [0, 1] for the
    ``unit_interval`` metrics, rates); per control the paired method - control
    difference. ``per_seed[arm][i]`` is seed ``seeds[i]``'s metrics."""
    rows = {
        arm: {
            m: mean_ci([r[m] for r in recs], confidence, (0.0, 1.0) if m in unit_interval else None)
            for m in metrics
        }
        for arm, recs in per_seed.items()
    }
    deltas = {}
    for ctl in controls:
        if ctl not in per_seed or ctl == method:
            continue
        deltas[ctl] = {
            m: mean_ci(
                [a[m] - b[m] for a, b in zip(per_seed[method], per_seed[ctl], strict=True)],
                confidence,
            )
            for m in metrics
        }
    return {
        "version": BEHAVIOUR_VERSION,
        "method": method,
        "controls": [c for c in controls if c in per_seed and c != method],
        "arms": list(per_seed),
        "metrics": metrics,
        "higher_is_better": higher_is_better,
        "seeds": seeds,
        "confidence": confidence,
        "rows": rows,
        "deltas": deltas,
    }


def _fmt(est: dict[str, Any]) -> str:
    lo, hi = est["ci"]
    return f"{est['mean']:.3f} [{lo:.3f}, {hi:.3f}]"


def table_markdown(behaviour: dict[str, Any]) -> str:
    """The behaviour table as markdown (arms x metrics, then the paired differences)."""
    metrics = behaviour["metrics"]
    pct = round(100 * behaviour["confidence"])
    lines = [
        f"| arm | {' | '.join(metrics)} |",
        "|---|" + "---|" * len(metrics),
    ]
    for arm in behaviour["arms"]:
        cells = [_fmt(behaviour["rows"][arm][m]) for m in metrics]
        lines.append(f"| {arm} | {' | '.join(cells)} |")
    for ctl, row in behaviour["deltas"].items():
        cells = []
        for m in metrics:
            p = row[m]["p"]
            cells.append(_fmt(row[m]) + ("" if p is None else f" p={p:.2g}"))
        lines.append(f"| {behaviour['method']} - {ctl} | {' | '.join(cells)} |")
    n = len(behaviour["seeds"])
    lines.append("")
    lines.append(
        f"mean over {n} seeds [{pct}% t interval of the mean]; differences are paired by seed"
    )
    return "\n".join(lines)


def write_outputs(
    out_dir: Path,
    record: dict[str, Any],
    *,
    run: RunDir | None = None,
    alias: str | None = None,
) -> None:
    """``results.json`` and ``table.md`` in ``out_dir`` (atomically), and with a run the
    student registered there (``bbi probe run`` answers it; the report shows the table)."""
    from bbi.results_schema import validated_distill
    from bbi.runstore import atomic_write_text

    write_json(out_dir / "results.json", validated_distill(record))

    atomic_write_text(out_dir / "table.md", table_markdown(record["behaviour"]) + "\n")
    if run is not None and alias is not None:
        from distill.method import register

        register(run, alias, record["spec"], record)


def run_arms(
    model: Any,
    *,
    seeds: list[int],
    arms: list[str],
    method: str,
    untrained: dict[str, float],
    train_arm: Any,
    progress: bool,
    desc: str,
) -> tuple[dict[str, list[dict]], dict[str, list[dict]], dict[str, Any]]:
    """Every arm once per seed, each from the same starting weights of ``model``.

    ``none`` reports ``untrained`` (the model as is; it does not depend on the seed). Any
    other arm resets the weights, seeds everything with the seed and calls
    ``train_arm(seed, arm) -> (metrics, detail)``, which trains ``model`` in place. Returns
    the per-seed metrics and details per arm and the method's first-seed weights.
    """
    from accelerate.utils import set_seed

    from bbi.console import progress_bar

    start = {k: v.clone() for k, v in model.state_dict().items()}
    per_seed: dict[str, list[dict]] = {arm: [] for arm in arms}
    details: dict[str, list[dict]] = {arm: [] for arm in arms}
    kept: dict[str, Any] = {}
    bar = progress_bar([(s, a) for s in seeds for a in arms], desc=desc, disable=not progress)
    for seed, arm in bar:
        bar.set_postfix(arm=arm, seed=seed)
        if arm == "none":
            per_seed[arm].append(dict(untrained))
            details[arm].append({"seed": seed})
            continue
        model.load_state_dict(start)
        set_seed(seed)
        metrics, detail = train_arm(seed, arm)
        per_seed[arm].append(metrics)
        details[arm].append({"seed": seed, **detail})
        if arm == method and not kept:
            kept = {k: v.clone() for k, v in model.state_dict().items()}
    return per_seed, details, kept


def run_loop(
    model: Any,
    objective: Any,
    train_ds: Any,
    eval_ds: Any,
    *,
    hp: Any,
    collate: Any,
    work: Path,
    identity: dict,
    desc: str,
    progress: bool = False,
    metrics_path: Path | None = None,
) -> Any:
    """One arm's training on the shared loop, checkpointing into a scratch directory that
    is removed afterwards: an arm takes seconds to minutes, so an interrupted experiment
    is rerun (the tuned teacher is kept) rather than resumed."""
    from accelerate import Accelerator

    from distill.trainer import train

    shutil.rmtree(work, ignore_errors=True)
    try:
        return train(
            model, objective, train_ds, eval_ds, hp=hp, accelerator=Accelerator(),
            collate=collate, ckpt_dir=work / "checkpoint", identity=identity,
            metrics_path=metrics_path, progress=progress, desc=desc,
        )  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


TEACHER_FILE = "bbi_teacher.json"


def default_out(run: RunDir | None, alias: str, method: str) -> Path:
    """``runs/NAME/models/ALIAS`` with a run, else ``./distilled/METHOD``."""
    return run.path / "models" / alias if run is not None else Path("distilled") / method


def check_out(out: Path) -> None:
    """An output directory is new, empty, or an earlier output of these commands (a rerun
    replaces its results and reuses its tuned teacher); anything else is refused."""
    from bbi.errors import BbiError

    if not out.exists() or (out / "results.json").exists() or (out / "teacher").exists():
        return
    if not out.is_dir():
        raise BbiError(f"--out {out}: is a file; give a directory")
    if any(out.iterdir()):
        raise BbiError(f"--out {out}: exists and is not a bbi distill output; choose another")


def cached_info(out: Path, identity: dict) -> dict | None:
    """The saved tuned teacher's record when it was made from ``identity`` (same base
    weights, data and settings), else None."""
    path = out / TEACHER_FILE
    if not path.exists():
        return None
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return info if isinstance(info, dict) and info.get("identity") == identity else None


def save_model(model: Any, tokenizer: Any, out: Path, info: dict | None = None) -> None:
    """``save_pretrained`` into a sibling temp dir, then swap it in: a crash leaves the old
    model (or none), never a half-written one."""
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if info is not None:
        write_json(tmp / TEACHER_FILE, info)
    old = out.with_name(out.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


__all__ = [
    "BEHAVIOUR_VERSION",
    "TEACHER_FILE",
    "cached_info",
    "check_out",
    "default_out",
    "mean_ci",
    "run_arms",
    "run_loop",
    "save_model",
    "summarise",
    "table_markdown",
    "write_outputs",
]
