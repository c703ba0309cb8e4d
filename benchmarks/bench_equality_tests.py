"""Responses per model to power 0.8, and the A/A false-positive rate, of bbi's verdict,
bbi's ``mmd``, MET, RUT and the best one-feature rule, side by side on the same draws.

Settings (``--settings``, default all):

* ``synthetic``: the planted sets of benchmarks/bench_power.py's ``DESIGNS`` (``broad``:
  a sign-off on 15% of answers in every category; ``one-category``: on 60% in
  style_format only; ``length``: 30% of answers longer, every category), each repeat a
  fresh ``discriminators.synthetic.make_run`` (its ``teacher_null`` is the A/A);
  responses per model = prompts (10 categories, one answer per prompt and model).
* ``alpaca``: AlpacaEval's published outputs (``--alpaca DIR``:
  ``DIR/<model>/model_outputs.json``, as benchmarks/bench_alpacaeval.py reads them;
  default /tmp/alp/data/results), the pairs in ``ALPACA_PAIRS``, joined on the
  instruction, ``dataset`` as the category; a repeat draws N of the 805 prompts without
  replacement (at N = 805 every repeat sees the same answers). One output per prompt and
  model: no A/A and no RUT.
* ``audit``: substitution audits on the default teacher, zoo:smollm2, from pools generated
  once by benchmarks/_eq_pools.py and cached in ``--pools`` (default /tmp/met_pools):
  160 stratified default-suite prompts, top-p 1, 48 new tokens; the teacher in float32
  at temperature 1.0 (``fast:`` dtype float32, which samples exactly as ``hf:``), 2 S
  samples per prompt; ``bf16`` (``fast:`` dtype bfloat16), ``int8`` (``ct2:``
  compute_type int8: CTranslate2's int8 weights, not torch dynamic quantization) and
  ``t09`` (float32 at temperature 0.9), S samples each (S = 2 as generated here). The
  teacher side of every comparison is float32 samples 0..S-1; the A/A "other" side is
  float32 samples S..2S-1. A repeat at N responses per model takes min(N, 160) random
  prompts and N of their (prompt, sample) cells, each prompt once before any twice.

Methods (alpha 0.05 each; a repeat counts when its test rejects):

* ``verdict``: ``discriminators.verdict_cf.crossfit_verdict`` (the public entry point of
  the default cross-fitted decision, called as ``bbi attack`` calls it) at eps0 = 0 on the
  paired rows, base adversaries ``--adversaries`` (surface, tfidf, pairwise: the default
  less the MiniLM ``embed``, too slow here); rejects when its status is "distinguishable"
  (overall or a category). A row is one (prompt, sample) cell answered by both models.
* ``mmd``: bbi's ``mmd`` adversary's two-sample test, k-spectrum kernel (k = 5,
  cumulative, characters, 128 per response), 200 within-row swaps, on the same rows.
* ``MET``: ``model_equality_testing.algorithm.run_two_sample_test(stat_type=
  "mmd_hamming", pvalue_type="permutation_pvalue", b=--met-b)`` (200), MET's own
  statistic (``_mmd``), permutations and p-value, with the pooled Hamming kernel computed
  once instead of once per permutation (``met_pvalue``; ``--check-met`` shows it equal to
  ``run_two_sample_test``, statistic and p-value, on one draw), on the same responses as unit ids (whitespace words, cut/padded to 64 with -1, one vocabulary,
  as bench_met.py encodes them). Prompt index: in the audits the prompt (each model's N
  rows are N cells drawn independently for each model, MET's i.i.d.-row design, about
  N / prompts samples per prompt); with one output per prompt (synthetic, AlpacaEval) the
  category (10 planted categories; AlpacaEval's 5 datasets): MET's within-prompt kernel
  needs two completions of a prompt, so m = 1 per real prompt becomes "categories as
  prompts", m = N / categories per index.
* ``RUT`` (audits only; Zhu et al. 2025): one query per prompt from the tested model, its
  score (mean log-rank of its tokens under the float32 teacher, the paper's statistic,
  by ``hf:`` teacher forcing) ranked among the 2S - 1 local reference samples of the
  float32 teacher (samples 0..2S-2; the A/A query is sample 2S-1), ties broken at
  random, so u = (rank + U) / 2S is exactly uniform under H0;
  ``scipy.stats.cramervonmises(u, "uniform")``. N <= 160 (one query per prompt); the
  reference samples are local and not counted.
* ``rule``: the best one-feature rule: for each of bbi's surface features, "the answer with
  the larger (smaller) feature is the teacher's", direction chosen on the other fold
  (``discriminators.crossfit.one_feature_rules``, 2 folds stratified by category), each
  tested by an exact one-sided sign test per fold (scipy's ``binomtest`` on the nonzero
  contributions; H0 eps = 0), the folds merged by Bonferroni, then Bonferroni over the
  30 features. (The verdict's Berger-Boos test adds gamma = 0.001 to every fold's
  p-value, so 2 folds x 30 features could never reject at 0.05 with it.)

Power at N = rejections / repeats; "responses to power 0.8" = the smallest grid value
reaching it (a method stops there); "> G" = not reached on the grid (its power at G
given). Repeats: ``--repeats`` for verdict (and for MET on the synthetic sets, where MET
is the slow one), ``--cheap-repeats`` for mmd, rule, RUT and MET elsewhere. The A/A rate
pools every grid value up to ``--aa-max`` (all repeats of each). Repeat r at N of
comparison j draws from ``numpy.random.default_rng([0, N, r, j])`` (synthetic:
``make_run(seed=1000 * N + r)``); every method of a repeat sees the same draw.
Each N prints one progress line (stderr) with the power of every method still running.

    python benchmarks/_eq_pools.py [--out /tmp/met_pools]   # once: generate, then score
    python benchmarks/bench_equality_tests.py [--settings synthetic,alpaca,audit]
        [--repeats 10] [--cheap-repeats 20] [--out results.json]

Needs ``model-equality-testing==0.0.2`` (``--no-deps``) and matplotlib, for this
benchmark only.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
sys.path.insert(0, str(Path(__file__).parent))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

ALPHA = 0.05
POWER = 0.8
METHODS = ("verdict", "mmd", "MET", "RUT", "rule")
ALPACA_PAIRS = [
    ("gpt4_1106_preview", "gpt4_1106_preview_concise"),
    ("claude-2", "claude2-alpaca-13b"),
    ("text_davinci_003", "alpaca-7b"),
]
GRIDS = {
    "synthetic": [100, 200, 400, 800, 1600],
    "alpaca": [50, 100, 200, 400, 805],
    "audit": [20, 40, 80, 160, 320],
}
AA_MAX = {"synthetic": 800, "audit": 320}


@dataclass
class Rows:
    """One test's data: row i pairs ``teacher[i]`` and ``other[i]`` (same prompt);
    ``met`` optionally gives MET its own draw (prompt index and texts per model);
    ``rut`` optionally the query scores and reference scores (rows x refs)."""

    ids: list[str]
    categories: list[str]
    prompts: list[str]
    teacher: list[str]
    other: list[str]
    met_index: tuple[np.ndarray, np.ndarray] | None = None
    met_texts: tuple[list[str], list[str]] | None = None
    rut: tuple[np.ndarray, np.ndarray] | None = None
    extra: dict = field(default_factory=dict)


# ---- methods: (rows, seed) -> rejected ---------------------------------------------------


def verdict_test(adversaries: list[str]) -> Callable[[Rows, int], bool]:
    from discriminators.comparison import comparison_from_paired
    from discriminators.verdict_cf import crossfit_verdict

    def test(rows: Rows, seed: int) -> bool:
        paired = pd.DataFrame(
            {
                "id": rows.ids,
                "category": rows.categories,
                "split": "train",
                "prompt": rows.prompts,
                "teacher": rows.teacher,
                "other": rows.other,
            }
        )
        data = comparison_from_paired(paired, "other", "student")
        res = crossfit_verdict(data, adversaries, {}, 0.0, ALPHA, n_bootstrap=50, seed=seed)
        return res["status"] == "distinguishable"

    return test


def mmd_test(rows: Rows, seed: int) -> bool:
    from discriminators import get_adversary

    adv = get_adversary("mmd", kernel="kspectrum", n_permutations=200)
    X_t = pd.DataFrame({"prompt_id": rows.ids, "response": rows.teacher})
    X_o = pd.DataFrame({"prompt_id": rows.ids, "response": rows.other})
    return float(adv.two_sample(X_t, X_o, np.random.default_rng(seed))["p"]) <= ALPHA


def hamming_gram(codes: np.ndarray, chunk: int = 256) -> np.ndarray:
    """K[i, j] = sum_l 1[codes[i, l] == codes[j, l]]: MET's Hamming kernel (its
    ``get_hamming_kernel``, padding included) over all pooled rows, computed once."""
    n = len(codes)
    K = np.empty((n, n), dtype=float)
    for a in range(0, n, chunk):
        K[a : a + chunk] = (codes[a : a + chunk, None, :] == codes[None, :, :]).sum(-1)
    return K


def met_pvalue(it: np.ndarray, io: np.ndarray, codes: np.ndarray, b: int, seed: int) -> float:
    """MET's ``run_two_sample_test(stat_type="mmd_hamming", pvalue_type=
    "permutation_pvalue", b=b)`` with the Hamming kernel of the pooled rows computed once.

    MET's permutation loop recomputes the kernel of every permuted sample from the
    sequences; here MET's own ``_mmd`` (masking by prompt, normalisation, the estimate)
    runs on each permuted sample with the matching rows of the pooled kernel, the
    permutations drawn as MET draws them (``torch.randperm`` over the pooled rows) and
    the p-value by MET's ``EmpiricalPvalueCalculator``: the same statistic and p-value at
    a fraction of the cost (``--check-met`` compares them on a small draw)."""
    import torch
    from model_equality_testing.pvalue import EmpiricalPvalueCalculator
    from model_equality_testing.tests import _mmd

    K = hamming_gram(codes)
    n1 = len(it)
    prompts = np.concatenate([it, io]).astype(np.int64)
    rows = np.arange(len(prompts), dtype=np.int64)
    seq = np.column_stack([prompts, rows])  # [prompt, row]: the kernel looks the row up

    def kernel(X, Y, *args, **kwargs):
        x, y = X[:, 0], Y[:, 0]
        return K[np.ix_(x, x)].copy(), K[np.ix_(x, y)].copy(), K[np.ix_(y, y)].copy()

    observed = _mmd(seq[:n1], seq[n1:], get_kernel=kernel)
    torch.manual_seed(seed)
    stats = []
    for _ in range(b):
        ix = torch.randperm(len(seq)).numpy()
        stats.append(_mmd(seq[ix][:n1], seq[ix][n1:], get_kernel=kernel))
    st = np.array(stats)[:, None, None]
    return float(EmpiricalPvalueCalculator(st)(float(observed))), float(observed)


def met_codes(rows: Rows, length: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """MET's input: prompt index per row of each model and the pooled unit-id codes."""
    from discriminators.mmd import encode_sequences

    if rows.met_index is not None:
        (it, io), (tt, to) = rows.met_index, rows.met_texts
    else:
        names = sorted(set(rows.categories))
        it = io = np.array([names.index(c) for c in rows.categories], dtype=np.int64)
        tt, to = rows.teacher, rows.other
    codes = encode_sequences(list(tt) + list(to), length, "word", "start")
    return it, io, codes


def met_test(b: int) -> Callable[[Rows, int], bool]:
    def test(rows: Rows, seed: int) -> bool:
        it, io, codes = met_codes(rows)
        p, stat = met_pvalue(it, io, codes, b, seed)
        return bool(np.isfinite(stat) and p <= ALPHA)

    return test


def check_met(b: int = 20) -> None:
    """MET's own ``run_two_sample_test`` against ``met_pvalue`` on one small draw."""
    import torch
    from model_equality_testing.algorithm import run_two_sample_test
    from model_equality_testing.distribution import CompletionSample

    rows = Synthetic(["broad"]).draw(100, 0)["broad"]
    it, io, codes = met_codes(rows)
    n = int(max(it.max(), io.max())) + 1
    s1 = CompletionSample(it, codes[: len(it)], m=n)
    s2 = CompletionSample(io, codes[len(it) :], m=n)
    torch.manual_seed(3)
    p_met, stat_met = run_two_sample_test(
        s1, s2, pvalue_type="permutation_pvalue", stat_type="mmd_hamming", b=b
    )
    p, stat = met_pvalue(it, io, codes, b, 3)
    print(
        f"MET's code: stat {stat_met:.6f} p {p_met:.3f}; cached kernel: stat {stat:.6f} p {p:.3f}"
    )
    if not (np.isclose(stat, stat_met) and np.isclose(p, p_met)):
        raise SystemExit("bench_equality_tests: the cached-kernel MET differs from MET's code")


def rut_test(rows: Rows, seed: int) -> bool:
    from scipy.stats import cramervonmises

    q, ref = rows.rut
    rng = np.random.default_rng([seed, 17])
    below = (ref < q[:, None]).sum(1)
    ties = (ref == q[:, None]).sum(1)
    rank = below + rng.integers(0, ties + 1)  # uniform on {0..R} under H0
    u = (rank + rng.random(len(q))) / (ref.shape[1] + 1)
    return float(cramervonmises(u, "uniform").pvalue) <= ALPHA


def rule_test(rows: Rows, seed: int) -> bool:
    from scipy.stats import binomtest

    from bbi import stats
    from discriminators.crossfit import one_feature_rules
    from discriminators.surface import surface_features

    surf = surface_features(list(rows.teacher) + list(rows.other))
    n = len(rows.teacher)
    S = surf[:n] - surf[n:]
    folds = stats.stratified_folds(np.asarray(rows.categories).astype(str), 2, seed)
    rules = one_feature_rules(S, folds)

    def p_rule(d: np.ndarray) -> float:
        # exact one-sided sign test per fold (H0: eps = 0 makes the sign of a nonzero
        # contribution a fair coin given the other fold), folds merged by Bonferroni
        ps = []
        for k in sorted(set(folds.tolist())):
            dk = d[folds == k]
            nz = int((dk != 0).sum())
            ps.append(binomtest(int((dk > 0).sum()), nz, 0.5, "greater").pvalue if nz else 1.0)
        return min(1.0, len(ps) * min(ps))

    return min(1.0, len(rules) * min(p_rule(d) for d in rules.values())) <= ALPHA


# ---- settings: (N, repeat) -> {comparison: Rows} ------------------------------------------


def _rows_from_paired(pr: pd.DataFrame) -> Rows:
    return Rows(
        ids=pr["id"].astype(str).tolist(),
        categories=pr["category"].astype(str).tolist(),
        prompts=pr["prompt"].astype(str).tolist(),
        teacher=pr["teacher"].astype(str).tolist(),
        other=pr["other"].astype(str).tolist(),
    )


class Synthetic:
    name = "synthetic"

    def __init__(self, designs: list[str]):
        from bench_power import DESIGNS

        self.designs = {k: DESIGNS[k] for k in designs}
        self.comparisons = [*self.designs, "A/A synthetic"]

    def draw(self, N: int, r: int) -> dict[str, Rows]:
        from bbi.runstore import RunDir
        from discriminators import synthetic

        with tempfile.TemporaryDirectory() as tmp:
            synthetic.make_run(
                tmp, n_per_category=N // 10, students=dict(self.designs), seed=1000 * N + r
            )
            run = RunDir(Path(tmp))
            out = {d: _rows_from_paired(run.paired(d)) for d in self.designs}
            out["A/A synthetic"] = _rows_from_paired(run.paired("teacher_null"))
        return out


class Alpaca:
    name = "alpaca"

    def __init__(self, root: Path, pairs: list[tuple[str, str]]):
        self.frames = {}
        for t, o in pairs:
            a = self._load(root, t)
            b = self._load(root, o)
            df = a.merge(b, on="prompt", suffixes=("_t", "_o"))
            self.frames[f"{t} vs {o}"] = pd.DataFrame(
                {
                    "id": [f"a{i}" for i in range(len(df))],
                    "category": df["dataset_t"].astype(str),
                    "prompt": df["prompt"],
                    "teacher": df["output_t"].astype(str),
                    "other": df["output_o"].astype(str),
                }
            )
        self.comparisons = list(self.frames)

    @staticmethod
    def _load(root: Path, model: str) -> pd.DataFrame:
        for path in (root / model / "model_outputs.json", root.parent / f"{model}.json"):
            if path.is_file():
                d = pd.DataFrame(json.loads(path.read_text()))
                d = d.rename(columns={"instruction": "prompt"})
                return d.drop_duplicates("prompt")[["prompt", "output", "dataset"]]
        raise SystemExit(f"bench_equality_tests: no outputs of {model} under {root}")

    def draw(self, N: int, r: int) -> dict[str, Rows]:
        out = {}
        for j, (name, df) in enumerate(self.frames.items()):
            rng = np.random.default_rng([0, N, r, j])
            n = min(N, len(df))
            out[name] = _rows_from_paired(df.iloc[np.sort(rng.choice(len(df), n, replace=False))])
        return out


class Audit:
    name = "audit"
    OTHERS = {"bf16": "bfloat16", "int8": "int8 (ct2)", "t09": "temperature 0.9"}
    AA = "A/A teacher fp32"

    def __init__(self, pools: Path, configs: list[str], aa: bool = True):
        meta = json.loads((pools / "prompts.json").read_text())
        self.meta = meta
        self.prompts = meta["prompts"]
        # S samples per prompt on each side: the others' count; float32 holds 2 S
        self.S = min(meta["configs"][c][3] for c in configs)
        if meta["configs"]["fp32"][3] < 2 * self.S:
            raise SystemExit("bench_equality_tests: the float32 pool needs 2 S samples")
        pid = {p["id"]: i for i, p in enumerate(self.prompts)}
        self.text: dict[str, dict] = {}
        for name in ("fp32", *configs):
            t = {}
            for line in (pools / f"{name}.jsonl").read_text().splitlines():
                d = json.loads(line)
                t[(pid[d["id"]], d["sample"])] = d["text"]
            self.text[name] = t
        self.score: dict[tuple, float] = {}
        sp = pools / "scores.jsonl"
        if sp.exists():
            for line in sp.read_text().splitlines():
                try:
                    d = json.loads(line)
                except json.JSONDecodeError:  # a line cut by an interrupted writer
                    continue
                self.score[(d["config"], pid[d["id"]], d["sample"])] = d["logrank"]
        self.configs = configs
        S = self.S
        # prompts with every sample of every config (a stopped generation leaves fewer)
        full = [
            i
            for i in range(len(self.prompts))
            if all((i, s) in self.text["fp32"] for s in range(2 * S if aa else S))
            and all((i, s) in self.text[c] for c in configs for s in range(S))
        ]
        self.keep = np.array(full)
        # RUT: references = float32 samples 0 .. 2S-2, the A/A query = sample 2S-1
        self.n_ref = 2 * S - 1
        self.rut_keep = np.array(
            [
                i
                for i in full
                if all(("fp32", i, s) in self.score for s in range(2 * S))
                and all((c, i, 0) in self.score for c in configs)
            ]
        )
        self.comparisons = [self.OTHERS[c] for c in configs] + ([self.AA] if aa else [])

    def _sides(self, name: str) -> tuple[str, int, str, int]:
        """(teacher config, first sample, other config, first sample) of a comparison."""
        if name == self.AA:
            return "fp32", 0, "fp32", self.S
        c = {v: k for k, v in self.OTHERS.items()}[name]
        return "fp32", 0, c, 0

    def draw(self, N: int, r: int) -> dict[str, Rows]:
        out = {}
        P, S = len(self.keep), self.S
        if N > S * P:
            raise SystemExit(f"bench_equality_tests: N = {N} exceeds the pools' {S * P} cells")
        for name in self.comparisons:
            # stable per comparison: bf16 0, int8 1, t09 2, A/A 3, whatever is selected
            j = [*self.OTHERS.values(), self.AA].index(name)
            rng = np.random.default_rng([0, N, r, j])
            n = min(N, P)
            prm = self.keep[rng.choice(P, n, replace=False)]
            # the verdict's rows: each chosen prompt once, then more samples of them
            per = np.full(n, N // n)
            per[rng.choice(n, N - per.sum(), replace=False)] += 1
            cells = [(i, s) for i, k in zip(prm, per, strict=True) for s in rng.permutation(S)[:k]]
            tc, t0, oc, o0 = self._sides(name)
            rows = Rows(
                ids=[f"{self.prompts[i]['id']}#{s}" for i, s in cells],
                categories=[self.prompts[i]["category"] for i, _ in cells],
                prompts=[self.prompts[i]["prompt"] for i, _ in cells],
                teacher=[self.text[tc][(i, t0 + s)] for i, s in cells],
                other=[self.text[oc][(i, o0 + s)] for i, s in cells],
            )
            # MET: each model's N rows drawn independently from the n x S cells
            idx, texts = [], []
            for conf, first in ((tc, t0), (oc, o0)):
                pick = rng.choice(n * S, N, replace=False)
                pos, smp = pick // S, pick % S
                idx.append(pos.astype(np.int64))
                texts.append(
                    [self.text[conf][(prm[p], first + s)] for p, s in zip(pos, smp, strict=True)]
                )
            rows.met_index = (idx[0], idx[1])
            rows.met_texts = (texts[0], texts[1])
            if len(self.rut_keep) >= N:
                q_prompts = self.rut_keep[rng.choice(len(self.rut_keep), N, replace=False)]
                qc, qs = (oc, 2 * S - 1) if name == self.AA else (oc, 0)
                q = np.array([self.score[(qc, i, qs)] for i in q_prompts])
                ref = np.array(
                    [[self.score[("fp32", i, s)] for s in range(self.n_ref)] for i in q_prompts]
                )
                rows.rut = (q, ref)
            out[name] = rows
        return out


# ---- the power loop ----------------------------------------------------------------------


def run_setting(
    setting,
    grid: list[int],
    methods: dict,
    reps: dict,
    aa_max: int,
    log: Callable[[str], None],
    res: dict[str, dict[str, dict]],
    save: Callable[[], None],
) -> None:
    """Fills ``res``: {comparison: {method: {"power": {N: rate}, "found": N | None,
    "cpu_s": s, "n": tests}}}; ``save`` runs after each N (a stopped run keeps its rows)."""
    res.update(
        {
            c: {m: {"power": {}, "found": None, "cpu_s": 0.0} for m in methods}
            for c in setting.comparisons
        }
    )
    for N in grid:
        active = [
            (c, m)
            for c in setting.comparisons
            for m in methods
            if (c.startswith("A/A") and aa_max >= N)
            or (not c.startswith("A/A") and res[c][m]["found"] is None)
        ]
        if not active:
            break
        n_rep = max(reps[m] for _, m in active)
        hits: dict[tuple, list[bool]] = {k: [] for k in active}
        t0 = time.perf_counter()
        for r in range(n_rep):
            data = setting.draw(N, r)
            for c, m in active:
                if r >= reps[m]:
                    continue
                rows = data[c]
                if m == "RUT" and rows.rut is None:
                    continue
                c0 = time.process_time()
                hits[(c, m)].append(bool(methods[m](rows, 1000 * r + 7)))
                res[c][m]["cpu_s"] += time.process_time() - c0
        for (c, m), h in hits.items():
            if not h:
                continue
            rate = float(np.mean(h))
            res[c][m]["power"][N] = rate
            res[c][m]["n"] = res[c][m].get("n", 0) + len(h)
            if not c.startswith("A/A") and rate >= POWER:
                res[c][m]["found"] = N
        line = ", ".join(
            f"{c}/{m} {res[c][m]['power'][N]:.2f}" for c, m in active if N in res[c][m]["power"]
        )
        log(f"[{setting.name}] N={N} ({time.perf_counter() - t0:.0f} s): {line}")
        save()


def cell(r: dict, aa: bool) -> str:
    """Responses to power 0.8 (or "> N (power at N)"); A/A: the pooled rejection rate."""
    pw = {int(k): v for k, v in r["power"].items()}
    if not pw:
        return "-"
    if aa:
        # pooled over the grid values tested, weighted by repeats (equal per N)
        rate = float(np.mean(list(pw.values())))
        return f"{rate:.3f} ({r['n']})"
    if r["found"] is not None:
        return str(r["found"])
    last = max(pw)
    return f"> {last} ({pw[last]:.2f})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--settings", default="synthetic,alpaca,audit")
    ap.add_argument("--methods", default=",".join(METHODS))
    ap.add_argument("--designs", default="broad,one-category,length")
    ap.add_argument("--alpaca", type=Path, default=Path("/tmp/alp/data/results"))
    ap.add_argument("--pools", type=Path, default=Path("/tmp/met_pools"))
    ap.add_argument("--configs", default="bf16,int8,t09")
    ap.add_argument("--adversaries", default="surface,tfidf,pairwise")
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--cheap-repeats", type=int, default=20)
    ap.add_argument("--met-b", type=int, default=200, help="MET permutations")
    ap.add_argument("--grid-synthetic", default=None)
    ap.add_argument("--grid-alpaca", default=None)
    ap.add_argument("--grid-audit", default=None)
    ap.add_argument("--no-aa", action="store_true", help="audit: skip the A/A comparison")
    ap.add_argument("--only", default="", help="run the comparisons whose name has one of these")
    ap.add_argument("--aa-max", type=int, default=None, help="largest N of the A/A rows")
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON")
    ap.add_argument("--check-met", action="store_true", help="only compare MET's code and ours")
    ap.add_argument("--table-from", default=None, help="JSON files (comma-separated): reprint")
    args = ap.parse_args()
    if args.table_from:
        merged: dict = {}  # later files win, method by method
        for f in args.table_from.split(","):
            for sname, sres in json.loads(Path(f).read_text())["results"].items():
                comps = merged.setdefault(sname, {**sres, "comparisons": {}})["comparisons"]
                for c, row in sres["comparisons"].items():
                    comps.setdefault(c, {}).update(row)
        print_table(merged, [m for m in args.methods.split(",") if m])
        return
    try:
        import model_equality_testing.algorithm  # noqa: F401
    except ImportError as exc:
        print(f"bench_equality_tests: MET not importable ({exc}); pip install "
              "model-equality-testing==0.0.2 --no-deps and matplotlib")  # fmt: skip
        sys.exit(2)
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    if args.check_met:
        check_met()
        return
    wanted = [m for m in args.methods.split(",") if m]
    t_start = time.perf_counter()

    def log(msg: str) -> None:
        print(f"{time.perf_counter() - t_start:7.0f}s {msg}", file=sys.stderr, flush=True)

    all_methods = {
        "verdict": verdict_test(args.adversaries.split(",")),
        "mmd": mmd_test,
        "MET": met_test(args.met_b),
        "RUT": rut_test,
        "rule": rule_test,
    }
    results: dict[str, dict] = {}

    def save() -> None:
        if args.out:
            wall = time.perf_counter() - t_start
            args.out.write_text(json.dumps({"wall_s": wall, "results": results}, indent=1))

    for name in [s for s in args.settings.split(",") if s]:
        if name == "synthetic":
            setting = Synthetic(args.designs.split(","))
        elif name == "alpaca":
            setting = Alpaca(args.alpaca, ALPACA_PAIRS)
        elif name == "audit":
            setting = Audit(args.pools, [c for c in args.configs.split(",") if c], not args.no_aa)
            log(
                f"[audit] {len(setting.keep)} prompts with every sample, "
                f"{len(setting.rut_keep)} with RUT scores"
            )
        else:
            raise SystemExit(f"unknown setting {name!r}")
        if args.only:
            setting.comparisons = [
                c for c in setting.comparisons if any(o in c for o in args.only.split(","))
            ]
        methods = {m: all_methods[m] for m in wanted if m != "RUT" or name == "audit"}
        reps = {m: args.cheap_repeats for m in methods}
        reps["verdict"] = args.repeats
        if name == "synthetic":
            reps["MET"] = args.repeats
        custom = getattr(args, f"grid_{name}")
        grid = [int(x) for x in custom.split(",")] if custom else GRIDS[name]
        aa_max = args.aa_max or AA_MAX.get(name, 0)
        comps: dict[str, dict] = {}
        results[name] = {"grid": grid, "aa_max": aa_max, "repeats": reps, "comparisons": comps}
        with threadpool_limits(limits=1):
            run_setting(setting, grid, methods, reps, aa_max, log, comps, save)
    save()
    print(f"wall {time.perf_counter() - t_start:.0f} s, under load")
    print_table(results, wanted)


def print_table(results: dict, wanted: list[str]) -> None:
    """The markdown table: a row per comparison, a column per method."""
    print(f"\nresponses per model to power {POWER} (alpha {ALPHA}); A/A rows: false-positive "
          "rate (tests) pooled over N <= the A/A cap")  # fmt: skip
    cols = [m for m in METHODS if m in wanted]
    print("| setting | comparison | " + " | ".join(cols) + " |")
    print("|---|---|" + "---:|" * len(cols))
    for sname, s in results.items():
        for c, row in s["comparisons"].items():
            cells = [cell(row[m], c.startswith("A/A")) if m in row else "n/a" for m in cols]
            print(f"| {sname} | {c} | " + " | ".join(cells) + " |")
    print("\nCPU seconds per method (all comparisons):")
    for sname, s in results.items():
        tot = {m: sum(r[m]["cpu_s"] for r in s["comparisons"].values() if m in r) for m in cols}
        print(f"  {sname}: " + ", ".join(f"{m} {v:.0f}" for m, v in tot.items()))


if __name__ == "__main__":
    main()
