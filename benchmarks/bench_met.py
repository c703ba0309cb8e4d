"""Queries to tell a student from its teacher (power 0.8, alpha 0.05): MET vs bbi.

A query is one completion requested from either model; every method draws from the same
pool of responses.

* MET (Gao, Liang & Guestrin 2024; ``model-equality-testing`` 0.0.2):
  ``run_two_sample_test(stat_type="mmd_hamming" | "mmd_kspectrum")`` with its permutation
  p-value (``b`` permutations), in MET's sampling design: for ``Q`` queries, ``n = Q/(2m)``
  random prompts and ``Q/2`` completions per model whose prompts are drawn uniformly from
  those ``n`` (about ``m`` per prompt; i.i.d. rows, so MET's pooled permutation is exact).
  ``CompletionSample`` prompt index = the prompt's position among the ``n``; completions =
  the responses' unit ids (whitespace words by default, ``--unit char`` for code points)
  cut/padded with -1 to ``L``, as MET's ``tokenize_unicode``/``pad_to_length`` do.
* bbi ``mmd`` (``discriminators/mmd.py``): (a) on exactly MET's draw (unpaired: the two
  models' rows have different prompts), Hamming (start and end aligned) and k-spectrum
  (``k=5``, cumulative) kernels, same ``L``, units and ``b``; (b) in bbi's own design,
  ``Q/2`` prompts answered once by each model (sample 0), paired; (c) bbi's design with
  ``samples=S`` (``--bbi-samples``; default: MET's ``m`` > 1, and the run's ``M``): of the
  ``Q/2`` prompts bought, the first ``floor(Q/(2S))`` with samples ``0..S-1`` of each
  model read from the run (``Q`` queries at most), labels permuted within prompts
  (``pairs=cross``; ``--within`` adds MET's same-prompt-only entries as ``pairs=within``).
* bbi classifier route: ``tfidf`` fit on ``q`` train queries (``q/2`` prompts, sample 0
  from each model), then ``bbi.stats.betting_test`` (anytime-valid, eps0 = 0) over test
  prompts with ``d_i = 1[s_teacher >= .5] - 1[s_other >= .5]``; it may stop at
  ``n_to_reject``, so it spends ``q + 2 n_to_reject`` queries (test prompts are capped so
  this never exceeds the largest grid value). One row per ``q``: ``q`` has to be fixed
  before testing, so picking the best row afterwards is an oracle choice.

Power at ``Q`` = fraction of ``R`` repeats (fresh random prompts each) that reject at alpha
(``p <= alpha``; MET's p is ``mean(perm >= observed)``, bbi's adds one to both counts).
"Queries to power 0.8" = the smallest grid value reaching it; a method stops at that value.

Data: by default ``discriminators.synthetic.make_run`` (its sample 0 and prompts) plus more
samples per prompt from the same generator and planting rule (``synthetic.response`` +
``ARTIFACTS``): the student adds ``--artifact`` (``signoff``: " Hope this helps!") with
probability ``--rate`` (0.3) to each response, independently, in every category.
``--run PATH`` compares a run's teacher with ``--compare`` on every sample the run holds
(``bbi probe run --samples M``): ``M`` = the most samples (``0..M-1``, both models) that
90% of the prompts have (``--samples`` overrides), prompts with fewer are dropped. MET's
rows then draw as above from those ``M`` real samples; a prompt drawn more than ``M``
times for one model repeats a response, which makes MET's pooled permutation
anti-conservative (on a hand-made A/A run with ``M=4``, ``m=2``: 3.8% repeated rows, and
bbi's k-spectrum on MET's data rejected 37-63% at ``Q >= 64``), so the header prints the
expected fraction of repeated rows for each ``m`` and warns above 1% (``m <= M/4`` keeps
it under 0.5%); the run-mode default is ``m = max(1, M // 4)``. bbi's ``samples=S`` rows
never repeat a response (``S <= M``). Only a run with one sample per prompt
falls back to the old design: MET's within-prompt kernel is then undefined (masked XX/YY
kernels are empty, 0/0), so every MET row puts all prompts under one prompt index (a
plain, unmasked MMD) and draws ``Q/2`` distinct prompts. Run mode's defaults are sized
for a 200-prompt run on 2 cores (grid up to 256, ``R`` 30 / 10, ``b`` 100; a few
minutes); ``--grid``, ``--repeats``, ``--met-repeats`` change them.

Needs ``pip install model-equality-testing==0.0.2 --no-deps`` plus matplotlib (MET imports
it), for this benchmark only; exits 2 without them.

    python benchmarks/bench_met.py [--repeats 50] [--met-repeats 20] [--permutations 100]
        [--grid 16,32,64,128,256,512] [--per-prompt 2] [--met-stats mmd_hamming,...]
        [--artifact signoff --rate 0.3] [--unit word --length 64] [--within]
        [--run PATH [--compare student] [--samples M]]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")  # MET prints a bar per permutation test
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ALPHA = 0.05
ARTIFACT_TEXT = {
    "signoff": "appends ' Hope this helps!'",
    "bullets": "one '- ' line per sentence, periods dropped",
    "caps": "whole response upper-cased",
}
POWER = 0.8
RUN_DEFAULTS = {"grid": "16,32,64,128,256", "repeats": 30, "met_repeats": 10}
SYNTHETIC_DEFAULTS = {"grid": "16,32,64,128,256,512", "repeats": 50, "met_repeats": 20}


@dataclass
class Pool:
    """Responses of both models: ``texts[model][prompt][sample]``, codes ``(P, M, L)``;
    ``run`` holds the same samples (bbi's ``mmd`` reads them from there)."""

    prompts: list[str]
    categories: list[str]
    teacher: list[list[str]]
    other: list[list[str]]
    codes_teacher: np.ndarray
    codes_other: np.ndarray
    description: str
    ids: list[str]
    context: dict

    @property
    def n_prompts(self) -> int:
        return len(self.prompts)

    @property
    def n_samples(self) -> int:
        return len(self.teacher[0])


def _encode(
    pool_texts: tuple[list[list[str]], list[list[str]]], length: int, unit: str
) -> tuple[np.ndarray, np.ndarray]:
    """Unit ids of every response, one shared vocabulary (both models, all samples)."""
    from discriminators.mmd import encode_sequences

    t, o = pool_texts
    P, M = len(t), len(t[0])
    flat = [x for row in t for x in row] + [x for row in o for x in row]
    codes = encode_sequences(flat, length, unit, "start")
    return codes[: P * M].reshape(P, M, length), codes[P * M :].reshape(P, M, length)


def synthetic_pool(
    path: Path,
    n_per_category: int,
    samples: int,
    rate: float,
    artifact: str,
    seed: int,
    length: int,
    unit: str,
) -> Pool:
    """make_run's sample 0 plus ``samples - 1`` more per prompt from the same generator."""
    from bbi.runstore import append_jsonl
    from discriminators import synthetic

    plant = {"categories": list(synthetic.CATEGORIES), "rate": rate, "artifact": artifact}
    run = synthetic.make_run(
        path, n_per_category=n_per_category, students={"student": plant}, null=False, seed=seed
    )
    pr = run.paired("student")
    prompts, cats, ids = pr["prompt"].tolist(), pr["category"].tolist(), pr["id"].tolist()
    teacher = [[t] for t in pr["teacher"]]
    other = [[t] for t in pr["other"]]
    for j in range(1, samples):
        r_t = np.random.default_rng([seed, 1, j])
        r_o = np.random.default_rng([seed, 3, j])
        for i, prompt in enumerate(prompts):
            teacher[i].append(synthetic.response(prompt, r_t))
            text = synthetic.response(prompt, r_o)
            if r_o.random() < rate:
                text = synthetic.ARTIFACTS[artifact](text, r_o)
            other[i].append(text)
    for alias, texts in (("teacher", teacher), ("student", other)):
        append_jsonl(
            run.responses_path(alias),
            [
                {"prompt_id": pid, "sample": j, "text": row[j]}
                for pid, row in zip(ids, texts, strict=True)
                for j in range(1, samples)
            ],
        )
    ct, co = _encode((teacher, other), length, unit)
    desc = (
        f"synthetic.make_run(n_per_category={n_per_category}, seed={seed}) + "
        f"{samples - 1} extra sample(s)/prompt: student = teacher generator + artifact "
        f"{artifact!r} ({ARTIFACT_TEXT[artifact]}) with prob {rate} per response, in all "
        f"{len(synthetic.CATEGORIES)} categories"
    )
    context = {"run": run, "teacher": "teacher", "other": "student"}
    return Pool(prompts, cats, teacher, other, ct, co, desc, ids, context)


def run_pool(path: Path, compare: str, length: int, unit: str, samples: int | None) -> Pool:
    """A run directory's teacher vs ``compare``: samples ``0..M-1`` of the prompts that
    have them from both models (``M``: ``samples``, else what 90% of the prompts have)."""
    from bbi.runstore import RunDir

    run = RunDir(path)
    pr = run.paired(compare)
    teacher_alias = run.teacher_alias()
    ids = pr["id"].tolist()
    tables = []
    for alias in (teacher_alias, compare):
        df = run.responses(alias)
        tables.append(df.pivot(index="prompt_id", columns="sample", values="text").reindex(ids))
    # Per prompt: how many leading samples (0, 1, ...) both models have.
    have = np.ones(len(ids), dtype=bool)
    avail = np.zeros(len(ids), dtype=int)
    for j in range(min(int(t.columns.max()) + 1 for t in tables)):
        for t in tables:
            have &= t[j].notna().to_numpy() if j in t.columns else False
        avail += have
    M = samples or int(np.quantile(avail, 0.1, method="inverted_cdf"))
    if M < 1 or (avail >= M).sum() < 2:
        raise SystemExit(f"bench_met: {path}: fewer than 2 prompts have {M} samples of both")
    keep = np.flatnonzero(avail >= M)
    texts = [[[str(t[j].iat[i]) for j in range(M)] for i in keep] for t in tables]
    ct, co = _encode((texts[0], texts[1]), length, unit)
    dropped = len(ids) - len(keep)
    which = f"samples 0..{M - 1}" if M > 1 else "sample 0"
    desc = f"{path}: {teacher_alias} vs {compare}, {which} of {len(keep)} prompts"
    if dropped:
        desc += f" ({dropped} with fewer samples dropped)"
    context = {"run": run, "teacher": teacher_alias, "other": compare}
    return Pool(
        [pr["prompt"].iat[i] for i in keep],
        [pr["category"].iat[i] for i in keep],
        texts[0],
        texts[1],
        ct,
        co,
        desc,
        [ids[i] for i in keep],
        context,
    )


def repeated_fraction(m: int, M: int) -> float:
    """Expected fraction of one model's rows that repeat a response in MET's draw with
    ``m`` completions per prompt on average and ``M`` distinct samples (Poisson(m) counts)."""
    from scipy.stats import poisson

    c = np.arange(M + 1, M + 60)
    return float(np.sum((c - M) * poisson.pmf(c, m)) / m)


# ---- one test per method: (pool, queries, repeat rng, seed) -> rejected? ---------------


@dataclass
class Draw:
    """One model's completions for a test: prompt position per row (0..n-1) and texts/codes."""

    prompts: np.ndarray
    texts: list[str]
    codes: np.ndarray
    n_prompts: int


def draw(pool: Pool, nq: int, m: int, rng: np.random.Generator) -> tuple[Draw, Draw]:
    """MET's sampling design for ``nq`` queries: ``n = nq / (2m)`` random prompts; each
    model's ``nq / 2`` completions get prompts drawn uniformly from those ``n`` (so about
    ``m`` per prompt, i.i.d. rows: MET's pooled permutation is then exact), the ``j``-th
    completion of a prompt being its sample ``j``. Past the pool's samples it resamples with
    replacement, as MET does from a finite dataset; duplicates within one model break
    exchangeability (false positives), so the synthetic pool has ample samples per prompt.

    One sample per prompt (``--run``): ``nq / 2`` distinct prompts, each answered once by
    each model, all under prompt index 0 (see the module docstring).
    """
    M = pool.n_samples
    if M == 1:
        n = nq // 2
        if n > pool.n_prompts:
            raise SystemExit(f"bench_met: grid needs {n} prompts, the pool has {pool.n_prompts}")
        idx = rng.choice(pool.n_prompts, size=n, replace=False)
        zero = np.zeros(n, dtype=np.int64)
        return tuple(
            Draw(zero, [texts[i][0] for i in idx], codes[idx, 0], 1)
            for texts, codes in ((pool.teacher, pool.codes_teacher), (pool.other, pool.codes_other))
        )
    n, N = nq // (2 * m), nq // 2
    if n > pool.n_prompts:
        raise SystemExit(f"bench_met: grid needs {n} prompts, the pool has {pool.n_prompts}")
    idx = rng.choice(pool.n_prompts, size=n, replace=False)
    out = []
    for texts, codes in ((pool.teacher, pool.codes_teacher), (pool.other, pool.codes_other)):
        pos = np.sort(rng.integers(0, n, size=N))
        occ = np.arange(N) - np.searchsorted(pos, pos)  # j-th completion of its prompt
        samp = np.where(occ < M, occ, rng.integers(0, M, size=N))
        rows = idx[pos]
        out.append(
            Draw(pos, [texts[i][j] for i, j in zip(rows, samp, strict=True)], codes[rows, samp], n)
        )
    return out[0], out[1]


def met_test(stat_type: str, m: int, b: int) -> Callable[..., bool]:
    """MET's ``run_two_sample_test`` with its permutation p-value on a ``draw``."""
    import torch
    from model_equality_testing.algorithm import run_two_sample_test
    from model_equality_testing.distribution import CompletionSample

    def test(pool: Pool, nq: int, rng: np.random.Generator, seed: int) -> bool:
        t, o = draw(pool, nq, m, rng)
        s1 = CompletionSample(t.prompts, t.codes, m=t.n_prompts)
        s2 = CompletionSample(o.prompts, o.codes, m=o.n_prompts)
        torch.manual_seed(seed)
        p, stat = run_two_sample_test(
            s1, s2, pvalue_type="permutation_pvalue", stat_type=stat_type, b=b
        )
        return bool(np.isfinite(stat) and p <= ALPHA)

    return test


def bbi_mmd_test(m: int, b: int, same_data: bool, pool: Pool, **params) -> Callable[..., bool]:
    """bbi's mmd: on MET's ``draw`` (unpaired: the rows' prompts differ between the models)
    or, ``same_data=False``, in bbi's design: ``nq / 2`` prompts bought (sample 0 of each
    model), paired; with ``samples=S`` in ``params`` the test reads ``S`` samples of the
    first ``floor(nq / (2S))`` of them from the run."""
    from discriminators import get_adversary

    # One instance per row: it reads the run's samples once.
    adv = get_adversary("mmd", context=pool.context, n_permutations=b, **params)

    def test(pool: Pool, nq: int, rng: np.random.Generator, seed: int) -> bool:
        if same_data:
            t, o = draw(pool, nq, m, rng)
            X_t = pd.DataFrame(
                {"prompt_id": [f"t{i}" for i in range(len(t.texts))], "response": t.texts}
            )
            X_o = pd.DataFrame(
                {"prompt_id": [f"o{i}" for i in range(len(o.texts))], "response": o.texts}
            )
        else:
            if nq // 2 > pool.n_prompts:
                raise SystemExit(
                    f"bench_met: grid needs {nq // 2} prompts, the pool has {pool.n_prompts}"
                )
            idx = rng.choice(pool.n_prompts, size=nq // 2, replace=False)
            ids = [pool.ids[i] for i in idx]
            X_t = pd.DataFrame({"prompt_id": ids, "response": [pool.teacher[i][0] for i in idx]})
            X_o = pd.DataFrame({"prompt_id": ids, "response": [pool.other[i][0] for i in idx]})
        return adv.two_sample(X_t, X_o, np.random.default_rng(seed))["p"] <= ALPHA

    return test


def tfidf_betting_cost(
    pool: Pool, q: int, q_max: int, rng: np.random.Generator, seed: int
) -> float:
    """Queries the tfidf + betting route spends before rejecting (inf if within q_max it does not)."""
    from bbi.stats import betting_test, pointwise_contrib
    from discriminators import get_adversary

    n_train = q // 2
    n_test = min((q_max - q) // 2, pool.n_prompts - n_train)
    if n_test < 1:
        return float("inf")
    perm = rng.permutation(pool.n_prompts)
    train, test = perm[:n_train], perm[n_train : n_train + n_test]

    def items(idx: np.ndarray, model: list[list[str]]) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "prompt_id": [str(i) for i in idx],
                "category": [pool.categories[i] for i in idx],
                "prompt": [pool.prompts[i] for i in idx],
                "response": [model[i][0] for i in idx],
            }
        )

    X = pd.concat([items(train, pool.teacher), items(train, pool.other)], ignore_index=True)
    y = np.r_[np.ones(n_train, int), np.zeros(n_train, int)]
    adv = get_adversary("tfidf").fit(X, y)
    d = pointwise_contrib(
        adv.predict_proba(items(test, pool.teacher)),
        adv.predict_proba(items(test, pool.other)),
        0.5,
    )
    res = betting_test(d, eps0=0.0, alpha=ALPHA, seed=seed)
    return float("inf") if res["n_to_reject"] is None else q + 2 * res["n_to_reject"]


# ---- power over the grid ----------------------------------------------------------------


def power_curve(
    name: str,
    test: Callable[..., bool],
    pool: Pool,
    grid: list[int],
    repeats: int,
    seed: int,
    min_q: int,
) -> dict:
    """Power at each grid value (ascending) until it reaches POWER."""
    powers: list[float | None] = []
    found = None
    t0 = time.process_time()
    for nq in grid:
        if nq < min_q:
            powers.append(None)
            continue
        hits = 0
        for r in range(repeats):
            rng = np.random.default_rng([seed, nq, r])
            hits += test(pool, nq, rng, seed * 100_003 + r)
        powers.append(hits / repeats)
        print(f"  {name}: Q={nq} power={hits / repeats:.2f}", file=sys.stderr, flush=True)
        if hits / repeats >= POWER:
            found = nq
            break
    powers += [None] * (len(grid) - len(powers))
    return {"name": name, "found": found, "powers": powers, "cpu_s": time.process_time() - t0}


def tfidf_curve(q: int, pool: Pool, grid: list[int], repeats: int, seed: int) -> dict:
    """Power at each grid value from the queries each repeat spent (anytime-valid stop)."""
    t0 = time.process_time()
    costs = np.array(
        [
            tfidf_betting_cost(pool, q, grid[-1], np.random.default_rng([seed, q, r, 7]), r)
            for r in range(repeats)
        ]
    )
    powers = [float(np.mean(costs <= nq)) if nq > q else None for nq in grid]
    found = next(
        (nq for nq, p in zip(grid, powers, strict=True) if p is not None and p >= POWER), None
    )
    q80 = float(np.quantile(costs, POWER, method="inverted_cdf"))
    name = f"bbi tfidf + betting (train q={q})"
    print(f"  {name}: 80% of repeats done by {q80} queries", file=sys.stderr, flush=True)
    return {
        "name": name,
        "found": found,
        "powers": powers,
        "cpu_s": time.process_time() - t0,
        "q80": q80,
    }


def _ratio(bbi: int | None, met: int | None, top: int) -> str:
    """bbi / MET queries; a bound when either did not reach POWER on the grid."""
    if bbi and met:
        return f"{bbi / met:.2f}"
    if bbi:
        return f"< {bbi / top:.2f}"
    if met:
        return f"> {top / met:.2f}"
    return "?"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, default=None, help="run dir (teacher vs --compare)")
    ap.add_argument("--compare", default="student")
    ap.add_argument("--samples", type=int, default=None, help="--run: samples M per prompt")
    ap.add_argument("--repeats", type=int, default=None, help="R for the bbi rows (50; run 30)")
    ap.add_argument(
        "--met-repeats", type=int, default=None, help="R for the MET rows (slow; 20, run 10)"
    )
    ap.add_argument("--grid", default=None, help="total query counts (up to 512; run 256)")
    ap.add_argument(
        "--per-prompt",
        default=None,
        help="MET mean completions per prompt per model (2; run: max(1, M // 4))",
    )
    ap.add_argument(
        "--bbi-samples",
        default=None,
        help="bbi mmd samples=S rows (default: the --per-prompt values > 1, and M in run mode)",
    )
    ap.add_argument("--within", action="store_true", help="add bbi mmd pairs=within rows")
    ap.add_argument("--met-stats", default="mmd_hamming,mmd_kspectrum")
    ap.add_argument("--train-queries", default="16,32,64,128", help="tfidf train queries q")
    ap.add_argument("--permutations", type=int, default=100, help="b, for MET and bbi mmd")
    ap.add_argument("--unit", choices=["word", "char"], default="word")
    ap.add_argument("--length", type=int, default=64, help="L: units kept per response")
    ap.add_argument("--artifact", choices=sorted(ARTIFACT_TEXT), default="signoff")
    ap.add_argument("--rate", type=float, default=0.3, help="synthetic: artifact probability")
    ap.add_argument("--n-per-category", type=int, default=60, help="synthetic pool size / 10")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    try:
        import model_equality_testing.algorithm  # noqa: F401
    except ImportError as exc:
        print(
            f"bench_met: model_equality_testing is not importable ({exc}); for this benchmark "
            "only: pip install model-equality-testing==0.0.2 --no-deps (and matplotlib)"
        )
        sys.exit(2)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    defaults = RUN_DEFAULTS if args.run is not None else SYNTHETIC_DEFAULTS
    grid = sorted(int(x) for x in (args.grid or defaults["grid"]).split(",") if x)
    repeats = args.repeats or defaults["repeats"]
    met_repeats = args.met_repeats or defaults["met_repeats"]
    train_q = [int(x) for x in args.train_queries.split(",") if x]
    met_stats = [x for x in args.met_stats.split(",") if x]
    if args.run is not None:
        pool = run_pool(args.run, args.compare, args.length, args.unit, args.samples)
        M = pool.n_samples
        if M == 1:
            per_prompt = [1]  # one completion per prompt: MET's rows use one prompt index
        else:
            per_prompt = [int(x) for x in (args.per_prompt or str(max(1, M // 4))).split(",")]
    else:
        per_prompt = [int(x) for x in (args.per_prompt or "2").split(",") if x]
        tmp = Path(tempfile.mkdtemp(prefix="bbi-bench-met-"))
        pool = synthetic_pool(
            tmp / "r",
            args.n_per_category,
            max(12, 4 * max(per_prompt) + 4),  # prompts rarely get more: no duplicates
            args.rate,
            args.artifact,
            args.seed,
            args.length,
            args.unit,
        )
    print(
        f"python {platform.python_version()} {platform.machine()}, cpus {os.cpu_count()}, "
        f"load {os.getloadavg()[0]:.1f}; 1 thread"
    )
    print(f"data: {pool.description}")
    if args.bbi_samples is not None:
        bbi_samples = [int(x) for x in args.bbi_samples.split(",") if x]
    else:
        bbi_samples = [m for m in per_prompt if m > 1]
        if args.run is not None and pool.n_samples > 1:
            bbi_samples.append(pool.n_samples)
    bbi_samples = sorted({S for S in bbi_samples if S > 1})
    if bbi_samples and max(bbi_samples) > pool.n_samples:
        raise SystemExit(f"bench_met: --bbi-samples exceeds the pool's {pool.n_samples} samples")
    if args.run is not None and pool.n_samples > 1:
        dup = ", ".join(
            f"m={m}: {100 * repeated_fraction(m, pool.n_samples):.1f}%" for m in per_prompt
        )
        print(f"MET draw, expected rows repeating a response (M={pool.n_samples}): {dup}")
        for m in per_prompt:
            if repeated_fraction(m, pool.n_samples) > 0.01:
                print(
                    f"WARNING: m={m} repeats over 1% of the rows: MET's rows and bbi's rows on "
                    "MET's data are then anti-conservative (an A/A run with M=4, m=2 rejected "
                    "up to 60% at alpha 0.05); use m <= M/4 or check --compare on a null alias"
                )
    print(
        f"seed {args.seed}; repeat r at Q queries draws its prompts from "
        f"default_rng([{args.seed}, Q, r]) and seeds its permutations with "
        f"{args.seed}*100003+r; alpha {ALPHA}; b={args.permutations} permutations; "
        f"units {args.unit}, L={args.length}; MET m = {per_prompt} completions/prompt/model; "
        f"bbi mmd samples = {[1, *bbi_samples]}"
    )
    common = {"max_length": args.length, "unit": args.unit}
    b = args.permutations
    results = []
    t_start = time.process_time()

    def add(name: str, test: Callable[..., bool], repeats: int, min_q: int) -> None:
        print(f"{name} ...", file=sys.stderr, flush=True)
        res = power_curve(name, test, pool, grid, repeats, args.seed, min_q)
        results.append({**res, "repeats": repeats})

    with threadpool_limits(limits=1):
        for m in per_prompt:
            tag = f"m={m}" if pool.n_samples > 1 else "1 prompt index"
            for stat in met_stats:
                add(f"MET {stat} ({tag})", met_test(stat, m, b), met_repeats, 4 * m)
            same = f"MET's data, {tag}"
            add(
                f"bbi mmd hamming ({same})",
                bbi_mmd_test(m, b, True, pool, kernel="hamming", **common),
                repeats,
                4 * m,
            )
            add(
                f"bbi mmd hamming align=end ({same})",
                bbi_mmd_test(m, b, True, pool, kernel="hamming", align="end", **common),
                repeats,
                4 * m,
            )
            add(
                f"bbi mmd kspectrum k=5 ({same})",
                bbi_mmd_test(m, b, True, pool, kernel="kspectrum", **common),
                repeats,
                4 * m,
            )
        for kernel in ("hamming", "kspectrum"):
            add(
                f"bbi mmd {kernel} (paired: Q/2 prompts x 1)",
                bbi_mmd_test(1, b, False, pool, kernel=kernel, **common),
                repeats,
                4,
            )
        for S in bbi_samples:
            for pairs in ("cross", "within") if args.within else ("cross",):
                for kernel in ("hamming", "kspectrum"):
                    add(
                        f"bbi mmd {kernel} samples={S} pairs={pairs} "
                        f"(paired: Q/(2*{S}) prompts x {S})",
                        bbi_mmd_test(
                            S, b, False, pool, kernel=kernel, samples=S, pairs=pairs, **common
                        ),
                        repeats,
                        4 * S,
                    )
        for q in train_q:
            print(f"bbi tfidf q={q} ...", file=sys.stderr, flush=True)
            results.append({**tfidf_curve(q, pool, grid, repeats, args.seed), "repeats": repeats})

    top = grid[-1]
    print(f"\n## queries to power {POWER} at alpha {ALPHA}")
    print(
        "| method | R | queries to power 0.8 | power at Q = "
        + ", ".join(map(str, grid))
        + " | CPU s |"
    )
    print("|---|---:|---:|---|---:|")
    for r in results:
        pw = ", ".join("-" if p is None else f"{p:.2f}" for p in r["powers"])
        found = str(r["found"]) if r["found"] else f"> {top}"
        if "q80" in r:
            found += f" (80th pct {r['q80']:g})"
        print(f"| {r['name']} | {r['repeats']} | {found} | {pw} | {r['cpu_s']:.1f} |")
    met = [r for r in results if r["name"].startswith("MET")]
    if met:
        print("\n## ratio bbi / MET of queries to power 0.8 (< 1: bbi needs fewer)")
        print("| bbi method | " + " | ".join(r["name"] for r in met) + " |")
        print("|---|" + "---:|" * len(met))
        for r in results:
            if r["name"].startswith("bbi"):
                cells = [_ratio(r["found"], x["found"], top) for x in met]
                print(f"| {r['name']} | " + " | ".join(cells) + " |")
    print(f"\ntotal CPU {time.process_time() - t_start:.0f} s")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
