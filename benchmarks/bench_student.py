"""Choosing the default student: layer-pruned copies of zoo:smollm2 before and after KD
(BENCHMARKS.md, "Choosing the default student").

Two stages, both on one small stratified subset of the suite (``--limit``, default 100:
10 prompts per category) probed with ``bbi run``'s generation settings (48 new tokens,
T 0.7, top-p 0.95):

- ``screen``: the teacher and its A/A resample are probed once; then every layer set of
  ``--screen`` (contiguous blocks of ``--drop`` layers removed, plus the named candidates)
  is scored without training by the full-logit forward KL(teacher || candidate) per
  response token on the teacher's responses (teacher-forced; no generation).
- ``kd`` (default): for each of ``--candidates``, its own run directory under ``--root``
  (teacher and A/A lines are response-cache hits): the base candidate is probed, distilled
  by ``bbi distill kd`` with ``bbi run``'s KD settings (full weights, lr 1e-4, batch 8,
  ``--epochs``) on the train split plus ``--corpus-prompts`` prompts of the builders'
  training corpus (answered by the teacher; never a suite prompt), and probed again.
  Reported per candidate: bbi's similarity (MiniLM cosine of sample 0, teacher vs each
  model) for the A/A resample, the base and the distilled student; the held-out KL before
  and after (the run's own eval split) and the fraction of it closed; KD wall and train time;
  generation tokens/s of each model (response tokens over the probe step's time).

Candidate models are saved as plain transformers directories under ``ROOT/models/`` and
probed as ``hf:`` specs. Run it with one thread and ``nice`` on a shared machine:

    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_student.py screen
    OMP_NUM_THREADS=1 nice -n 5 python benchmarks/bench_student.py kd --candidates p24,p20
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

N_LAYERS = 30


def drop_block(start: int, n: int) -> tuple[int, ...]:
    """Every layer but the contiguous block ``start .. start + n - 1``."""
    return tuple(i for i in range(N_LAYERS) if not start <= i < start + n)


# name -> layers kept. p12 is zoo:smollm2-pruned; the others drop one contiguous block of
# late-middle layers (where block influence is lowest, bbi/smollm2.py).
CANDIDATES: dict[str, tuple[int, ...]] = {
    "p12": (0, 1, 2, 3, 20, 21, 22, 23, 24, 27, 28, 29),
}


def candidate_layers(name: str) -> tuple[int, ...]:
    """``p12`` or ``dNN-SS``: drop NN layers starting at SS (e.g. d6-18 keeps 24)."""
    if name in CANDIDATES:
        return CANDIDATES[name]
    n, start = name[1:].split("-")
    return drop_block(int(start), int(n))


def build_candidate(root: Path, name: str) -> Path:
    """Save the pruned copy once (teacher's tokenizer, float32)."""
    out = root / "models" / name
    if (out / "model.safetensors").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from bbi.smollm2 import prune_layers
    from bbi.zoo import model_path

    src = model_path("smollm2")
    teacher = AutoModelForCausalLM.from_pretrained(src)
    model = prune_layers(teacher, candidate_layers(name))
    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    AutoTokenizer.from_pretrained(src).save_pretrained(tmp)
    tmp.rename(out)
    return out


def settings(limit: int) -> object:
    from bbi.config import GenerationSettings

    return GenerationSettings(limit=limit, max_new_tokens=48, batch_size=32)


def probe(run_path: Path, extra: dict[str, str], limit: int) -> None:
    import probes
    from bbi.probe_run import ModelEntry, run_probe

    models = [
        ModelEntry("teacher", "zoo:smollm2", "teacher", {}),
        ModelEntry("teacher_null", "zoo:smollm2", "null", {}),
        *[ModelEntry(a, s, "student", {}) for a, s in extra.items()],
    ]
    run_probe(run_path, models, probes.default_suite(), settings(limit), progress=False)


def forward_kl(
    pairs: object, specs: dict[str, str], max_len: int = 160, teacher: str = "zoo:smollm2"
) -> dict[str, float]:
    """Full-logit KL(teacher || model) per response token on (prompt, response) pairs,
    teacher-forced (also what bench_kd_default.py reports as held-out KL)."""
    import torch
    from torch.utils.data import DataLoader

    from bbi.config import KDSettings
    from distill.data import DistillDataset
    from distill.objectives.kd import KD
    from distill.student import load_model

    torch.set_num_threads(1)
    teacher_model, tok, _ = load_model(teacher)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    kd = KD(teacher_model, KDSettings(max_length=max_len), max_new_tokens=48,
            pad_id=tok.pad_token_id, eos_id=tok.eos_token_id)  # fmt: skip
    ds = DistillDataset(pairs, tok, max_len)
    out = {}
    for name, spec in specs.items():
        model = load_model(spec)[0].eval()
        total = count = 0.0
        with torch.no_grad():
            for batch in DataLoader(ds, batch_size=8, collate_fn=kd.collator(tok.pad_token_id)):
                sums, counts = kd.eval_token_losses(model, batch)
                total, count = total + float(sums.sum()), count + float(counts.sum())
        out[name] = total / max(count, 1.0)
        print(f"  KL {name}: {out[name]:.4f}", flush=True)
        del model
    return out


def gen_rates(run_path: Path) -> dict[str, dict]:
    """Each model's generation of this run (requests generated, new tokens, tokens/s),
    from the manifest; cache hits are not counted."""
    from bbi.runstore import RunDir

    timings = RunDir(run_path).manifest().get("timings") or {}
    keys = ("generated", "new_tokens", "generate_s", "tokens_per_s")
    return {
        k.split(":", 1)[1]: {f: t.get(f) for f in keys}
        for k, t in timings.items()
        if k.startswith("generate:") and t.get("generated")
    }


def similarity(run_path: Path) -> dict[str, float]:
    from bbi.runstore import RunDir

    sim = RunDir(run_path).read_results().get("similarity") or {}
    return {a: round(s["overall"]["value"], 4) for a, s in sim.items()}


def cmd_screen(args: argparse.Namespace) -> None:
    from bbi.runstore import RunDir
    from distill.data import distillation_pairs

    root = Path(args.root)
    run_path = root / "screen"
    t0 = time.perf_counter()
    probe(run_path, {}, args.limit)
    print(f"teacher + A/A probed in {time.perf_counter() - t0:.0f} s", flush=True)
    pairs = distillation_pairs(RunDir(run_path), "teacher")
    names = [n for n in args.screen.split(",") if n]
    specs = {}
    for name in names:
        specs[name] = f"hf:{build_candidate(root, name).resolve()}"
    kl = {k: round(v, 4) for k, v in forward_kl(pairs, specs).items()}
    res = {"n_pairs": len(pairs), "kl": kl}
    res["layers"] = {n: list(candidate_layers(n)) for n in names}
    print(json.dumps(res, indent=1))
    out = root / "screen.json"
    old = json.loads(out.read_text()) if out.is_file() else {"kl": {}, "layers": {}}
    old["kl"].update(res["kl"])
    old["layers"].update(res["layers"])
    old["n_pairs"] = res["n_pairs"]
    out.write_text(json.dumps(old, indent=1))


def summarize(run_path: Path, name: str) -> dict:
    """One candidate's numbers, read back from its run directory."""
    from bbi.runstore import RunDir

    results = RunDir(run_path).read_results()
    rec = (results.get("distill") or {}).get("student_kd") or {}
    ev = rec.get("eval_loss_per_epoch") or []
    return {
        "layers": list(candidate_layers(name)),
        "similarity": similarity(run_path),
        "heldout_kl": [round(x, 4) for x in ev],
        "gap_closed": round((ev[0] - ev[-1]) / ev[0], 3) if ev and ev[0] else None,
        "train_time_s": round(rec.get("train_time_s") or 0, 1),
        "time_s": round(rec.get("time_s") or 0, 1),
        "steps": rec.get("steps"),
        "n_train_examples": rec.get("n_train_examples"),
        "tokens_seen": (rec.get("curve") or {}).get("tokens_seen"),
        "gen": gen_rates(run_path),
        "corpus_gen": gen_rates(next(iter((run_path / "corpus").glob("*")), run_path)),
        "load": [round(x, 1) for x in os.getloadavg()],
    }


def cmd_summary(args: argparse.Namespace) -> None:
    root = Path(args.root)
    out = {}
    for run_path in sorted(p for p in root.iterdir() if (p / "results.json").is_file()):
        if run_path.name == "screen":
            continue
        name = run_path.name.split("-c")[0]
        if name in CANDIDATES or name.startswith("d"):
            out[run_path.name] = summarize(run_path, name)
    print(json.dumps(out, indent=1))


def cmd_kd(args: argparse.Namespace) -> None:
    from bbi.app.corpus import corpus_pairs
    from bbi.config import KDSettings
    from bbi.runstore import RunDir
    from distill.kd import distill_kd

    root = Path(args.root)
    results_path = root / "kd.json"
    allres = json.loads(results_path.read_text()) if results_path.is_file() else {}
    for name in [n for n in args.candidates.split(",") if n]:
        tag = (
            f"{name}-c{args.corpus_prompts}-e{args.epochs}"
            + (f"-op{args.on_policy}" if args.on_policy else "")
            + (f"-lr{args.lr:g}" if args.lr != 1e-4 else "")
        )
        run_path = root / tag
        spec = f"hf:{build_candidate(root, name).resolve()}"
        t0 = time.perf_counter()
        probe(run_path, {"student": spec}, args.limit)
        t_probe = time.perf_counter() - t0
        run = RunDir(run_path)
        hp = KDSettings(
            epochs=args.epochs, lr=args.lr, batch_size=8, max_length=160, eval_fraction=0.1,
            corpus_prompts=args.corpus_prompts, lambda_on_policy=args.on_policy,
            on_policy_sampler="backend",
        )  # fmt: skip
        extra = corpus_pairs(run, args.corpus_prompts, hp.seed) if args.corpus_prompts else None
        t0 = time.perf_counter()
        res = distill_kd(
            run, student=spec, alias="student_kd", out=run_path / "models" / "student_kd",
            settings=hp, full=True, progress=False, extra_pairs=extra,
        )  # fmt: skip
        t_kd = time.perf_counter() - t0
        t0 = time.perf_counter()
        probe(run_path, {"student": spec, "student_kd": res.spec}, args.limit)
        t_probe_kd = time.perf_counter() - t0
        out = summarize(run_path, name)
        out.update(
            kd_wall_s=round(t_kd, 1),
            probe_base_s=round(t_probe, 1),
            probe_distilled_s=round(t_probe_kd, 1),
        )
        allres[tag] = out
        results_path.write_text(json.dumps(allres, indent=1))
        print(tag, json.dumps(out, indent=1), flush=True)


def cmd_speed(args: argparse.Namespace) -> None:
    """Generation tokens/s of the teacher and each student, side by side in one process:
    the same ``--speed-prompts`` suite prompts, ``bbi run``'s sampling settings, one batch,
    the models taking turns (``--rounds``), so every model sees the same load."""
    import probes
    from bbi.backends import GenerationConfig, load_backend
    from bbi.probe_run import select_limit

    prompts = [r["prompt"] for r in select_limit(probes.default_suite(), args.speed_prompts)]
    specs = [s for s in args.speed_specs.split(",") if s]
    backends = {s: load_backend(s, device="cpu") for s in specs}
    cfg = GenerationConfig(max_new_tokens=48, temperature=0.7, top_p=0.95, batch_size=32)
    res: dict[str, dict] = {s: {"tokens": 0, "seconds": 0.0} for s in specs}
    for r in range(args.rounds):
        for s, be in backends.items():
            t0 = time.perf_counter()
            gens = be.generate(prompts, cfg, [r * 1000 + i for i in range(len(prompts))])
            res[s]["seconds"] += time.perf_counter() - t0
            res[s]["tokens"] += sum(g.n_tokens for g in gens)
    for s in specs:
        res[s]["tok_s"] = round(res[s]["tokens"] / res[s]["seconds"], 1)
        res[s]["vs_teacher"] = round(res[s]["tok_s"] / res[specs[0]]["tok_s"], 2)
    res["load"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(res, indent=1))
    (Path(args.root) / "speed.json").write_text(json.dumps(res, indent=1))


def cmd_kdstep(args: argparse.Namespace) -> None:
    """Seconds per full-weight KD step of each student, side by side in one process: the
    teacher's forward (no grad), the student's forward and backward through the full-logit
    forward KL, an AdamW step; one batch of 8 x 160 tokens, the students taking turns."""
    import torch
    from transformers import AutoModelForCausalLM

    from bbi.zoo import model_path

    torch.set_num_threads(1)
    torch.manual_seed(0)
    teacher = AutoModelForCausalLM.from_pretrained(model_path("smollm2")).eval()
    names = [s for s in args.speed_specs.split(",") if s][1:]
    students = {n: AutoModelForCausalLM.from_pretrained(model_path(n.split(":")[1])) for n in names}
    opts = {n: torch.optim.AdamW(m.parameters(), lr=1e-5) for n, m in students.items()}
    ids = torch.randint(100, 20000, (8, 160))
    secs: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(args.rounds + 1):  # the first round warms up
        for n, m in students.items():
            t0 = time.perf_counter()
            with torch.no_grad():
                t_logp = teacher(ids).logits.log_softmax(-1)
            s_logp = m(ids).logits.log_softmax(-1)
            loss = (t_logp.exp() * (t_logp - s_logp)).sum(-1).mean()
            loss.backward()
            opts[n].step()
            opts[n].zero_grad()
            secs[n].append(time.perf_counter() - t0)
    res = {n: round(sum(v[1:]) / len(v[1:]), 2) for n, v in secs.items()}
    res["ratio"] = round(res[names[-1]] / res[names[0]], 2)
    res["load"] = [round(x, 1) for x in os.getloadavg()]
    print(json.dumps(res, indent=1))
    (Path(args.root) / "kdstep.json").write_text(json.dumps(res, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("stage", choices=["screen", "kd", "summary", "speed", "kdstep"])
    ap.add_argument("--root", default="runs/student")
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--screen", default="p12,d6-12,d6-14,d6-16,d6-18,d6-20,d6-22")
    ap.add_argument("--candidates", default="d6-12")
    ap.add_argument("--corpus-prompts", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--on-policy", type=float, default=0.0)
    ap.add_argument("--speed-specs", default="zoo:smollm2,zoo:smollm2-pruned,zoo:smollm2-pruned24")
    ap.add_argument("--speed-prompts", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    sys.stdout.reconfigure(line_buffering=True)
    stages = {"screen": cmd_screen, "kd": cmd_kd, "summary": cmd_summary, "speed": cmd_speed}
    stages["kdstep"] = cmd_kdstep
    stages[args.stage](args)


if __name__ == "__main__":
    main()
