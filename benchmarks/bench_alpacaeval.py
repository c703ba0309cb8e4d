"""Real public pairs: AlpacaEval's published generations, imported and attacked with bbi's CLI alone.

For each (teacher, student) pair below, the script runs only `bbi` commands on the files
exactly as AlpacaEval publishes them (``results/<model>/model_outputs.json``, a JSON array
of ``{instruction, output, generator, dataset}``): two `bbi probe import` calls with field
flags (the suite is built from the prompts, split seeded and stratified by ``dataset``),
`bbi attack` with budgets that fit the train pool, and `bbi report --format json`. It
prints a markdown table: eps per adversary at the full budget, the verdict, the categories
named, what gives the student away, and the wall time per pair.

    git clone https://github.com/tatsu-lab/alpaca_eval
    python benchmarks/bench_alpacaeval.py alpaca_eval [--out DIR] [--seeds 3]
    python benchmarks/bench_alpacaeval.py alpaca_eval --table-from DIR/records.json

SOURCE is a checkout (or its ``results`` directory), or a bare git mirror of it; from a
mirror, each file is written out byte for byte with ``git show HEAD:results/...``. A pair
whose files are missing is skipped and said so. Nothing is converted.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PAIRS: list[tuple[str, str, str]] = [
    ("text_davinci_003", "alpaca-7b", "distilled from the teacher's outputs"),
    ("claude-2", "claude2-alpaca-13b", "distilled from the teacher's outputs"),
    ("gpt-3.5-turbo-0301", "vicuna-7b", "trained on ShareGPT conversations"),
    ("gpt-3.5-turbo-0301", "vicuna-13b", "trained on ShareGPT conversations"),
    ("vicuna-13b-v1.5", "vicuna-13b-v1.5-togetherai", "same weights, another provider"),
    ("gpt4_1106_preview", "gpt4_1106_preview_concise", "same model, 'be concise' prompt"),
    ("gpt4_1106_preview", "gpt4_1106_preview_verbose", "same model, 'be verbose' prompt"),
]
# The default adversaries less "embed": MiniLM over 1,610 long answers per pair is the
# slow part on 2 shared cores (--adversaries surface,tfidf,embed,pairwise --similarity
# restores it).
ADVERSARIES = ("surface", "tfidf", "pairwise")
FIELDS = [
    "--prompt-field",
    "instruction",
    "--response-field",
    "output",
    "--category-field",
    "dataset",
    "--model-field",
    "generator",
]


def _results_dir(source: Path, models: set[str], work: Path) -> Path:
    """The directory holding ``<model>/model_outputs.json``: the source's own, or, for a
    bare git mirror, the published files written out unchanged."""
    for cand in (source / "results", source):
        if any((cand / m / "model_outputs.json").is_file() for m in models):
            return cand
    if (source / "HEAD").is_file() and (source / "objects").is_dir():  # bare git mirror
        out = work / "results"
        for m in sorted(models):
            blob = subprocess.run(
                ["git", f"--git-dir={source}", "show", f"HEAD:results/{m}/model_outputs.json"],
                capture_output=True,
            )
            if blob.returncode == 0:
                (out / m).mkdir(parents=True, exist_ok=True)
                (out / m / "model_outputs.json").write_bytes(blob.stdout)
        return out
    raise SystemExit(f"{source}: no results/<model>/model_outputs.json and not a git mirror")


def _bbi(*args: str) -> str:
    """One bbi CLI call; its stdout+stderr (printed on failure)."""
    cmd = [sys.executable, "-m", "bbi.app.cli", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout + proc.stderr)
        raise RuntimeError(f"failed ({proc.returncode}): bbi {' '.join(args)}")
    return proc.stdout + proc.stderr


def _est(e: dict[str, Any] | None, digits: int = 2) -> str:
    if not e or e.get("value") is None:
        return "–"
    text = f"{e['value']:.{digits}f}"
    if e.get("ci"):
        lo, hi = e["ci"]
        text += f" [{lo:.{digits}f}, {hi:.{digits}f}]"
    return text


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def run_pair(
    results: Path, teacher: str, student: str, run_dir: Path, args: argparse.Namespace
) -> dict[str, Any]:
    """Import both sides, attack, report; the JSON report with the wall time."""
    t0 = time.perf_counter()
    split = ["--build-suite", "--split-seed", "0", "--test-fraction", str(args.test_fraction)]
    if not args.similarity:
        split.append("--no-similarity")
    out = _bbi(
        "probe", "import", str(results / teacher / "model_outputs.json"),
        "--run", str(run_dir), *FIELDS, *split, "--role", "teacher",
    )  # fmt: skip
    m = re.search(r"(\d+) train / (\d+) test", " ".join(out.split()))
    if m is None:
        raise RuntimeError(f"no train/test split in the import's output:\n{out}")
    n_train, n_test = int(m.group(1)), int(m.group(2))
    _bbi(
        "probe", "import", str(results / student / "model_outputs.json"),
        "--run", str(run_dir), *FIELDS, *split, "--role", "student",
    )  # fmt: skip
    full = 2 * n_train  # q//2 train prompts: the whole train pool
    budgets = sorted({b for b in (100, 400) if b < full} | {full})
    _bbi(
        "attack", str(run_dir),
        "--adversary", ",".join(args.adversaries),
        "--budget", ",".join(map(str, budgets)),
        "--strategy", args.strategy,
        "--seeds", str(args.seeds),
        "--test-queries", "1",
        "--n-jobs", str(args.n_jobs),
        "--no-progress",
    )  # fmt: skip
    report = json.loads(_bbi("report", str(run_dir), "--format", "json", "-o", "-"))
    return {
        "teacher": teacher,
        "student": student,
        "n_train": n_train,
        "n_test": n_test,
        "budgets": budgets,
        "wall_s": time.perf_counter() - t0,
        "report": report,
    }


def _row(rec: dict[str, Any], adversaries: list[str]) -> str:
    rep = rec["report"]
    comp = rep["comparisons"][rec["student"]]
    v = comp["verdict"]
    advs = comp["adversaries"]
    eps = [_est(advs.get(a)) for a in adversaries]
    verdict = v["status"]
    if v.get("confirmed_eps"):
        verdict += f": eps {_est(v['confirmed_eps'])} by {v.get('confirmed_by') or '?'}"
        if v.get("at_budget"):
            verdict += f" at q={v['at_budget']}"
    cats = ", ".join(v.get("distinguishable_in") or []) or "none"
    ex = comp.get("explain") or {}
    give = ex.get("summary") or "–"
    rules = ex.get("rules") or []
    for r in rules:  # the best feature's pairwise rule, then its one-answer threshold
        if r["kind"] == "pairwise":
            give += f" Best rule: {r['text']} (test eps {_est(r['eps'])})."
        else:
            give += f" On one answer: {r['text']} (test eps {_est(r['eps'])})."
    cells = [
        f"{rec['teacher']} vs {rec['student']}",
        f"{rec['n_train'] + rec['n_test']} ({rec['n_train']}/{rec['n_test']})",
        *eps,
        verdict,
        cats,
        give,
        f"{rec['wall_s']:.0f}",
    ]
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def table(records: list[dict[str, Any]], adversaries: list[str]) -> str:
    head = [
        "pair (teacher vs student)",
        "prompts (train/test)",
        *[f"eps {a}" for a in adversaries],
        "verdict (confirmed eps, test)",
        "categories named",
        "what gives it away (summary; best one-feature rule)",
        "wall s (under load)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += [_row(r, adversaries) for r in records]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("source", type=Path, help="alpaca_eval checkout, its results/, or a mirror")
    ap.add_argument("--out", type=Path, default=None, help="keep runs and JSON here")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--strategy", default="random")
    ap.add_argument("--adversaries", default=",".join(ADVERSARIES))
    ap.add_argument("--test-fraction", type=float, default=0.2)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--similarity", action="store_true", help="embed both sides (MiniLM) on import")
    ap.add_argument("--pairs", default=None, help="indices of PAIRS to run (0,3,...)")
    ap.add_argument(
        "--table-from", type=Path, default=None, help="reprint the table of a run's records.json"
    )
    args = ap.parse_args()
    args.adversaries = args.adversaries.split(",")
    if args.table_from is not None:
        print(table(json.loads(args.table_from.read_text()), args.adversaries))
        return

    work = args.out or Path(tempfile.mkdtemp(prefix="bbi-bench-alpacaeval-"))
    work.mkdir(parents=True, exist_ok=True)
    pairs = PAIRS if args.pairs is None else [PAIRS[int(i)] for i in args.pairs.split(",")]
    results = _results_dir(args.source, {m for t, s, _ in pairs for m in (t, s)}, work)
    records, skipped = [], []
    for teacher, student, _why in pairs:
        missing = [
            m for m in (teacher, student) if not (results / m / "model_outputs.json").is_file()
        ]
        if missing:
            skipped.append(f"{teacher} vs {student}: missing {', '.join(missing)}")
            continue
        run_dir = work / "runs" / f"{teacher}__{student}"
        if run_dir.exists():
            raise SystemExit(f"{run_dir} exists; use a fresh --out")
        rec = run_pair(results, teacher, student, run_dir, args)
        records.append(rec)
        (work / "records.json").write_text(json.dumps(records, indent=1))
        print(f"done {teacher} vs {student} in {rec['wall_s']:.0f} s", file=sys.stderr, flush=True)
    print(table(records, args.adversaries))
    for s in skipped:
        print(f"\nskipped {s}")
    print(
        f"\nadversaries {','.join(args.adversaries)}; strategy {args.strategy}; "
        f"{args.seeds} seeds; k = 1; runs in {work}"
    )


if __name__ == "__main__":
    main()
