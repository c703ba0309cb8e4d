"""Circuit distillation from a teacher that binds: accuracy against training examples.

Run: python benchmarks/bench_circuit_binding.py [--n-train 64,256,1024] [--seeds 0,1,2]
     [--steps 96] [--lr LR] [--heads-fraction F] [--arms none,ce,circuit,random]
     [--student-answers any|bound] [--student-steps N] [--matching delta|group]
     [--cka-weight W] [--cka-positions final|all]
     [--out distilled/circuit-binding]

The teacher is ``distill.binding``'s purpose-trained binding model (``--teacher binding``,
on the student's tokenizer, cached); the student is ``distill.binding.PLATEAU_STUDENT``, a
smaller model of the same family trained on the task's sequences with random-object
answers (it copies an object of the context, it does not bind), also cached. The task is
in the adjacent layout (``template: auto`` with the binding teacher). For each size ``bbi distill
circuit`` runs its arms (none, ce, circuit, random) over the seeds with the same number
of optimizer steps at every size (epochs = steps x batch / n_train), and this script
collects each arm's held-out accuracy and the paired circuit - control differences into
``OUT/summary.json`` and ``OUT/summary.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-train", default="64,256,1024")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--steps", type=int, default=96, help="optimizer steps per arm")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=None, help="student lr (default: the command's)")
    ap.add_argument("--heads-fraction", type=float, default=None)
    ap.add_argument("--arms", default="none,ce,circuit,random")
    ap.add_argument(
        "--student-answers",
        default=None,
        choices=["any", "bound"],
        help="the student's training answers (default: PLATEAU_STUDENT's, any)",
    )
    ap.add_argument("--student-steps", type=int, default=None)
    ap.add_argument("--matching", default=None, choices=["delta", "group"],
                    help="teacher head matching (default: the command's, delta)")  # fmt: skip
    ap.add_argument("--cka-weight", type=float, default=None, help="default: the command's")
    ap.add_argument("--cka-positions", default=None, choices=["final", "all"])
    ap.add_argument("--out", default="distilled/circuit-binding")
    args = ap.parse_args()

    from bbi.config import CircuitSettings
    from distill.binding import PLATEAU_STUDENT, build_binding_teacher, task_tokenizer
    from distill.circuit import distill_circuit

    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    t0 = time.perf_counter()
    changes = {k: v for k, v in (("answers", args.student_answers), ("steps", args.student_steps))
               if v is not None}  # fmt: skip
    student_cfg = replace(PLATEAU_STUDENT, **changes)
    student_dir, student_rec = build_binding_teacher(task_tokenizer(), student_cfg)
    student = f"hf:{student_dir.as_posix()}"
    rows = []
    for n in [int(x) for x in args.n_train.split(",")]:
        epochs = max(1, round(args.steps * args.batch_size / n))
        extra = {k: v for k, v in (("lr", args.lr), ("heads_fraction", args.heads_fraction),
                                   ("matching", args.matching), ("cka_weight", args.cka_weight),
                                   ("cka_positions", args.cka_positions))
                 if v is not None}  # fmt: skip
        settings = CircuitSettings(teacher="binding", n_train=n, seeds=seeds, epochs=epochs,
                                   batch_size=args.batch_size, arms=args.arms.split(","),
                                   **extra)  # fmt: skip
        t1 = time.perf_counter()
        rec = distill_circuit(student, settings, out / f"n{n}", progress=True)
        b = rec["behaviour"]
        rows.append({
            "n_train": n, "epochs": epochs, "time_s": time.perf_counter() - t1,
            "teacher_accuracy": rec["teacher_accuracy"],
            "arms": {a: b["rows"][a]["accuracy"] for a in b["arms"]},
            "deltas": {c: b["deltas"][c]["accuracy"] for c in b["deltas"]},
            "trainable_weights": {a: d[0].get("trainable_weights") for a, d in rec["arms"].items()
                                  if d and "trainable_weights" in d[0]},
            "circuit": rec["circuit"]["heads"], "pairs": rec["circuit"]["pairs"],
            "matched_cka": {a: b["rows"][a]["matched_cka"]["mean"] for a in b["arms"]},
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)

    def cell(est: dict, with_p: bool = False) -> str:
        lo, hi = est["ci"]
        p = est.get("p") if with_p else None
        return f"{est['mean']:.3f} [{lo:.3f}, {hi:.3f}]" + ("" if p is None else f" p={p:.2g}")

    arms = list(rows[0]["arms"]) if rows else []
    deltas = list(rows[0]["deltas"]) if rows else []
    lines = ["| n_train | " + " | ".join(arms + [f"circuit - {c}" for c in deltas]) + " |",
             "|---|" + "---|" * (len(arms) + len(deltas))]  # fmt: skip
    for r in rows:
        cells = [cell(r["arms"][a]) for a in arms] + [cell(r["deltas"][c], True) for c in deltas]
        lines.append(f"| {r['n_train']} | " + " | ".join(cells) + " |")
    summary = {"student": student, "student_config": student_cfg.to_dict(),
               "student_record": student_rec["selected"], "seeds": seeds,
               "steps": args.steps, "lr": args.lr, "heads_fraction": args.heads_fraction,
               "matching": args.matching, "cka_weight": args.cka_weight,
               "cka_positions": args.cka_positions, "rows": rows, "time_s": time.perf_counter() - t0}  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n", encoding="utf-8")
    (out / "summary.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
