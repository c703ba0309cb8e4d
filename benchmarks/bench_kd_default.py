"""Full-logit against cached top-k KD on the default pair, end to end, and the eps against
distillation tokens curve (BENCHMARKS.md, "Distillation at scale").

The default pair of ``bbi run`` (teacher zoo:smollm2, student zoo:smollm2-pruned, 200
prompts, 48 new tokens), probed and attacked by ``bbi run --no-distill``; then two
distillations with the default KD settings of ``bbi run`` (full weights, lr 1e-4, batch 8,
max length 160, 10% of the train prompts held out; 2 epochs, or ``--epochs``), the same
data (the train split plus ``--corpus-prompts`` corpus prompts), steps and seed, that
differ only in the teacher
signal: ``--teacher-logits model`` (the teacher beside the student at every step) and
``--teacher-logits cache`` (its top-k log-probabilities, computed once; the teacher
unloaded while training). Each distillation runs as its own process, both at once, so they
share the machine's load alike; reported per run: wall time and peak resident memory of the
process (``wait4``'s ``ru_maxrss``).

Afterwards both final students are compared with the teacher on the held-out train prompts
by the full-logit forward KL (nats per response token; the cached run's own record has its
top-k estimate) and probed and attacked like every student of the run (eps with its 95% CI
and the test, from the verdict's primary point). The full-logit run keeps token snapshots
(``--curve-tokens``); ``bbi curve`` probes and attacks each, with the A/A band.

    python benchmarks/bench_kd_default.py [--run runs/kd-default] [--corpus-prompts 120]
        [--curve-tokens 10000,30000] [--top-k 64] [--epochs 2] [--sequential]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

BBI = [sys.executable, "-m", "bbi.app.cli"]
# `bbi run`'s default KD settings (bbi/config.py, _default_distill).
KD_ARGS = ["--full", "--lr", "1e-4", "--batch-size", "8",
           "--max-length", "160", "--eval-fraction", "0.1", "--seed", "0"]  # fmt: skip
ALIASES = {"model": "student_kd_model", "cache": "student_kd_cache"}


def start(cmd: list[str], log: Path) -> tuple[subprocess.Popen, float]:
    print("$", shlex.join(["bbi", *cmd[len(BBI) :]]) if cmd[: len(BBI)] == BBI else cmd)
    with open(log, "w") as fh:
        return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT), time.perf_counter()


def finish(procs: dict[str, tuple[subprocess.Popen, float, Path]]) -> dict[str, dict]:
    """Wait for every process, in the order they end; each one's wall time and peak
    resident memory (its own ``wait4``)."""
    by_pid = {p.pid: name for name, (p, _, _) in procs.items()}
    out: dict[str, dict] = {}
    while by_pid:
        pid, status, usage = os.wait4(-1, 0)
        if pid not in by_pid:
            continue
        name = by_pid.pop(pid)
        proc, t0, log = procs[name]
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode:
            sys.exit(f"failed ({proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        out[name] = {
            "wall_s": round(wall, 1),
            "peak_rss_mib": round(usage.ru_maxrss * scale / 2**20),
        }
    return {name: out[name] for name in procs}


def run_cmd(cmd: list[str], log: Path) -> dict:
    return finish({"one": (*start(cmd, log), log)})["one"]


def heldout_kl(run_path: Path, specs: dict[str, str], corpus: int) -> dict[str, float]:
    """Full-logit forward KL(teacher||student) per response token on the held-out train
    prompts of the distillations (their own split: same pairs, fraction and seed)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_student import forward_kl

    from bbi.app.corpus import corpus_pairs
    from bbi.config import KDSettings
    from bbi.runstore import RunDir
    from distill.data import distillation_pairs, split_eval
    from distill.method import with_extra_pairs

    run = RunDir(run_path)
    teacher_alias = run.teacher_alias()
    pairs = distillation_pairs(run, teacher_alias)
    extra = corpus_pairs(run, corpus, 0) if corpus else None
    if extra is not None:
        pairs, _ = with_extra_pairs(run, pairs, extra)
    hp = KDSettings(max_length=160, eval_fraction=0.1, seed=0)
    _, eval_pairs = split_eval(pairs, hp.eval_fraction, hp.seed)
    out: dict[str, float] = {"n_eval_prompts": int(eval_pairs["prompt_id"].nunique())}
    teacher = run.models()[teacher_alias]["spec"]
    out.update(forward_kl(eval_pairs, specs, hp.max_length, teacher=teacher))
    return out


def primary(comp: dict) -> dict:
    """The verdict's primary point of one comparison: eps, 95% CI, where it was measured."""
    v = comp.get("verdict") or {}
    p = v.get("primary") or {}
    eps = p.get("eps") or {}
    return {
        "status": v.get("status"),
        **{k: p.get(k) for k in ("adversary", "strategy", "q", "k", "p_holm")},
        "eps": eps.get("value"),
        "ci": eps.get("ci"),
        "n_test": eps.get("n"),
        "text": v.get("text"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/kd-default")
    ap.add_argument("--corpus-prompts", type=int, default=120)
    ap.add_argument("--curve-tokens", default="10000,30000")
    ap.add_argument("--top-k", type=int, default=64)
    ap.add_argument("--epochs", type=int, default=2, help="bbi run's default: 2")
    ap.add_argument("--sequential", action="store_true", help="one distillation at a time")
    ap.add_argument("--out", default=None, help="also write the numbers as JSON here")
    args = ap.parse_args()
    run = Path(args.run)
    logs = run.parent / f"{run.name}.logs"
    logs.mkdir(parents=True, exist_ok=True)
    res: dict = {"commands": {}}

    # 1. the default pair, probed and attacked (every response cached by content)
    cmd = [*BBI, "run", "--run", str(run), "--no-distill", "--no-progress"]
    res["probe"] = run_cmd(cmd, logs / "run.log")

    # 2. the two distillations, side by side
    common = [
        *KD_ARGS,
        "--epochs",
        str(args.epochs),
        "--corpus-prompts",
        str(args.corpus_prompts),
        "--no-progress",
    ]
    cmds = {
        "model": [*BBI, "distill", "kd", str(run), "--alias", ALIASES["model"], *common,
                  "--teacher-logits", "model", "--curve-tokens", args.curve_tokens],
        "cache": [*BBI, "distill", "kd", str(run), "--alias", ALIASES["cache"], *common,
                  "--teacher-logits", "cache", "--top-k", str(args.top_k)],
    }  # fmt: skip
    # The corpus answers first (cached), so neither timed run generates them.
    from bbi.app.corpus import corpus_pairs
    from bbi.runstore import RunDir

    corpus_pairs(RunDir(run), args.corpus_prompts, 0)
    for name, c in cmds.items():
        res["commands"][name] = shlex.join(["bbi", *c[len(BBI) :]])
    if args.sequential:
        res["kd"] = {n: run_cmd(c, logs / f"kd_{n}.log") for n, c in cmds.items()}
    else:
        res["kd"] = finish({n: (*start(c, logs / f"kd_{n}.log"), logs / f"kd_{n}.log")
                            for n, c in cmds.items()})  # fmt: skip
    distill = json.loads((run / "results.json").read_text()).get("distill") or {}
    for name, alias in ALIASES.items():
        rec = distill[alias]
        res["kd"][name].update(
            recorded_eval_loss=rec["eval_loss_per_epoch"],
            steps=rec["steps"],
            train_time_s=round(rec["train_time_s"], 1),
            tokens_seen=(rec.get("curve") or {}).get("tokens_seen"),
            loss_tokens=rec.get("loss_tokens"),
            time_s=round(rec["time_s"], 1),
            n_train_examples=rec["n_train_examples"],
            objective_stats=rec.get("objective_stats"),
        )

    # 3. full-logit held-out KL of both final students (and the base), same split
    specs = {"base": "zoo:smollm2-pruned"}
    specs.update({n: distill[a]["spec"] for n, a in ALIASES.items()})
    res["heldout_kl"] = heldout_kl(run, specs, args.corpus_prompts)

    # 4. eps: the curve (probes every model of the run, the cached student's final included)
    res["curve_cmd"] = run_cmd(
        [*BBI, "curve", str(run), "--student", ALIASES["model"], "--no-progress"],
        logs / "curve.log",
    )
    from bbi.app.curve import settings_from_record
    from discriminators.attack import run_attack

    r = RunDir(run)
    attack = settings_from_record(r.read_results()["attack"]["config"], "attack")
    run_attack(r, attack, compare=[ALIASES["cache"]])
    results = r.read_results()
    comps = results["attack"]["comparisons"]
    res["eps"] = {a: primary(comps[a]) for a in ["teacher_null", "student", *ALIASES.values()]}
    res["token_curve"] = results.get("token_curve", {}).get(ALIASES["model"])
    text = json.dumps(res, indent=1, default=str)
    print(text)
    if args.out:
        Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
