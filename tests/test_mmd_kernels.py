"""The mmd adversary's k-spectrum kernel (MET's ``mmd_kspectrum``): Gram, power, validation."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bbi.errors import BbiError
from bbi.runstore import RunDir, append_jsonl
from discriminators import get_adversary, synthetic
from discriminators.base import check_params
from discriminators.mmd import MMDTest, encode_sequences, kspectrum_gram

_TEXTS = [
    "the cat sat on the mat",
    "the cat sat",
    "a dog ran on the mat",
    "abcabcabc",
    "",
    "xy",
    "the mat the mat the mat",
]


def _grams(units: list, k: int, cumulative: bool) -> Counter:
    out: Counter = Counter()
    for order in range(1, k + 1) if cumulative else [k]:
        out.update(tuple(units[i : i + order]) for i in range(len(units) - order + 1))
    return out


def _brute_gram(texts: list[str], k: int, cumulative: bool, unit: str) -> np.ndarray:
    """The definition, one pair at a time: dot product of n-gram Counters, normalised."""
    seqs = [list(t) if unit == "char" else t.split() for t in texts]
    counts = [_grams(s, k, cumulative) for s in seqs]
    n = len(texts)
    K = np.zeros((n, n))
    for i in range(n):
        for j in range(n):
            K[i, j] = sum(c * counts[j][g] for g, c in counts[i].items())
    d = np.sqrt(np.diag(K))
    d[d == 0] = 1.0
    return K / np.outer(d, d)


@pytest.mark.parametrize("unit", ["char", "word"])
@pytest.mark.parametrize("cumulative", [True, False])
@pytest.mark.parametrize("k", [1, 3, 5])
@pytest.mark.parametrize("block", [3, 512])
def test_kspectrum_gram_matches_brute_force(unit, cumulative, k, block, monkeypatch):
    # block 3: the Gram is filled in several row blocks, the last one partial
    monkeypatch.setattr("discriminators.mmd.GRAM_BLOCK", block)
    Z = encode_sequences(_TEXTS, 64, unit)
    K = kspectrum_gram(Z, k, cumulative)
    np.testing.assert_allclose(K, _brute_gram(_TEXTS, k, cumulative, unit), atol=1e-6)
    shortest = 1 if cumulative else k
    has_grams = np.array([len(t if unit == "char" else t.split()) >= shortest for t in _TEXTS])
    assert np.diag(K)[has_grams] == pytest.approx(1.0)
    assert not np.diag(K)[~has_grams].any()  # no n-gram: the zero feature vector, as MET


def test_kspectrum_ignores_padding_side():
    """Start- or end-aligned padding gives the same Gram (padding never forms n-grams)."""
    start = kspectrum_gram(encode_sequences(_TEXTS, 40, "char", "start"), 4)
    end = kspectrum_gram(encode_sequences(_TEXTS, 40, "char", "end"), 4)
    np.testing.assert_allclose(start, end)


def _frames(run, other: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    pr = run.paired(other)
    base = pr[["id", "category", "prompt"]].rename(columns={"id": "prompt_id"})
    return base.assign(response=pr["teacher"]), base.assign(response=pr["other"])


def test_mmd_kspectrum_detects_signoff_and_not_shuffles(tmp_path):
    run = synthetic.make_run(
        tmp_path / "r",
        n_per_category=20,
        students={
            "student": {
                "categories": list(synthetic.CATEGORIES),
                "rate": 1.0,
                "artifact": "signoff",
            }
        },
    )
    teacher, student = _frames(run, "student")
    adv = get_adversary("mmd", kernel="kspectrum", n_permutations=499)
    assert adv.requires() == frozenset()  # no MiniLM embeddings
    res = adv.two_sample(teacher, student, np.random.default_rng(0))
    assert res["p"] < 0.05 and res["statistic"] > 0 and res["n"] == len(teacher)
    # The same texts in another order (unpaired: permuted prompt ids): no difference.
    words = get_adversary("mmd", kernel="kspectrum", unit="word", k=2, n_permutations=499)
    for a in (adv, words):
        shuffled = teacher.sample(frac=1.0, random_state=1).reset_index(drop=True)
        shuffled["prompt_id"] = [f"s{i}" for i in range(len(shuffled))]
        assert a.two_sample(teacher, shuffled, np.random.default_rng(0))["p"] > 0.05


def test_mmd_kspectrum_params():
    check_params("mmd", {"kernel": "kspectrum", "k": 3, "cumulative": False})
    for bad in ({"k": 0}, {"k": 1.5}, {"cumulative": "yes"}, {"kernel": "spectrum"}):
        with pytest.raises(BbiError):
            check_params("mmd", {"kernel": "kspectrum", **bad})
    t = pd.DataFrame({"prompt_id": ["a", "b"], "response": ["x y", "y z"]})
    with pytest.raises(BbiError, match="max_length"):
        get_adversary("mmd", kernel="kspectrum", k=9, max_length=8).two_sample(
            t, t.copy(), np.random.default_rng(0)
        )
    with pytest.raises(BbiError):
        kspectrum_gram(np.zeros((2, 3), dtype=np.int64), 0)


# ---- several samples per prompt (MET's design) ---------------------------------------------


def _multi_sample_run(path: Path, n_prompts: int = 48, samples: int = 4, seed: int = 0) -> RunDir:
    """A run written by hand: ``samples`` responses per prompt from a teacher, an independent
    resample of it (``teacher_null``) and a student whose every sample gets the sign-off
    with probability 0.4."""
    rng = np.random.default_rng(seed)
    suite = []
    for i in range(n_prompts):
        cat = synthetic.CATEGORIES[i % len(synthetic.CATEGORIES)]
        topic = " ".join(rng.choice(synthetic._WORDS, size=3))
        split = "test" if i % 4 == 0 else "train"
        suite.append(
            {
                "id": f"p{i:03d}",
                "category": cat,
                "prompt": f"Tell me about {topic}?",
                "split": split,
            }
        )
    append_jsonl(path / "suite.jsonl", suite)
    for alias, sub, rate in (("teacher", 1, 0.0), ("teacher_null", 2, 0.0), ("student", 3, 0.4)):
        gen = np.random.default_rng([seed, sub])
        recs = []
        for item in suite:
            for s in range(samples):
                text = synthetic.response(item["prompt"], gen)
                if gen.random() < rate:
                    text = synthetic.ARTIFACTS["signoff"](text, gen)
                recs.append({"prompt_id": item["id"], "sample": s, "text": text})
        append_jsonl(path / "responses" / f"{alias}.jsonl", recs)
    return RunDir(path)


def _bought(run: RunDir, other: str, ids: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """What the attack hands a test: sample 0 of each bought prompt, in buying order."""
    pr = run.paired(other).set_index("id").loc[ids].reset_index()
    base = pr[["id", "category", "prompt"]].rename(columns={"id": "prompt_id"})
    return base.assign(response=pr["teacher"]), base.assign(response=pr["other"])


def _mmd(run: RunDir, other: str, **params: Any) -> MMDTest:
    ctx = {"run": run, "teacher": "teacher", "other": other}
    params = {"kernel": "kspectrum", "unit": "word", "max_length": 64, **params}
    return get_adversary("mmd", context=ctx, n_permutations=199, **params)


@pytest.fixture(scope="module")
def multi_run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    return _multi_sample_run(tmp_path_factory.mktemp("multi") / "r")


def test_stratified_test_with_one_sample_is_the_paired_test():
    """S = 1, cross pairs: the paired statistic (Lemma 6), with rows in prompt-major order."""
    from discriminators.mmd import paired_mmd2_test, stratified_mmd2_test

    Z = np.random.default_rng(0).normal(size=(20, 3))
    K = np.exp(-((Z[:, None] - Z[None]) ** 2).sum(-1) / 4)
    order = np.ravel(np.c_[np.arange(10), np.arange(10, 20)])  # x_0, y_0, x_1, y_1, ...
    paired = paired_mmd2_test(K, 50, np.random.default_rng(1))[0]
    strat = stratified_mmd2_test(K[np.ix_(order, order)], 1, 50, np.random.default_rng(1))[0]
    assert strat == pytest.approx(paired)


@pytest.mark.parametrize(("samples", "pairs"), [(2, "cross"), (4, "cross"), (4, "within")])
def test_stratified_test_is_calibrated_with_prompt_effects(samples, pairs):
    """H0 with strong prompt effects (responses cluster by prompt): within-prompt label
    permutation keeps p uniform, whichever entries count."""
    from discriminators.mmd import stratified_mmd2_test

    ps = []
    for r in range(150):
        rng = np.random.default_rng(r)
        mu = 2.0 * rng.normal(size=(8, 1, 3))
        Z = (mu + rng.normal(size=(8, 2 * samples, 3))).reshape(-1, 3)
        K = np.exp(-((Z[:, None] - Z[None]) ** 2).sum(-1) / 6)
        ps.append(stratified_mmd2_test(K, samples, 99, rng, pairs)[1])
    ps = np.array(ps)
    assert np.mean(ps <= 0.05) <= 0.05 + 0.05
    assert 0.4 <= ps.mean() <= 0.6


def test_mmd_samples_detects_artifact_within_budget(multi_run):
    """40 bought prompts (80 responses): S = 4 reads 10 prompts x 4 samples per model, the
    same 80 responses, and rejects; so it does on most smaller draws (24 prompts, 48
    responses). Not claimed: more power than S = 1 at equal responses. For an artifact
    that ignores the prompt, S = 1 on 4x the prompts does as well (see bench_met.py)."""
    ids = multi_run.paired("student")["id"].tolist()
    adv = _mmd(multi_run, "student", samples=4)
    res = adv.two_sample(*_bought(multi_run, "student", ids[:40]), np.random.default_rng(0))
    assert res["p"] < 0.05 and res["statistic"] > 0 and res["n"] == 10
    assert adv.design_ == {"prompts": 10, "samples": 4, "responses": 80}
    assert set(res) == {"statistic", "p", "n", "samples"} and res["samples"] == 4
    rejected = 0
    for r in range(8):
        draw = list(np.random.default_rng(r).choice(ids, size=24, replace=False))
        rejected += adv.two_sample(*_bought(multi_run, "student", draw), r)["p"] < 0.05
    assert rejected >= 5


def test_mmd_samples_null_is_not_rejected(multi_run):
    """Student = the teacher's generator (other draws): no evidence, for a fixed seed."""
    ids = multi_run.paired("teacher_null")["id"].tolist()
    for pairs in ("cross", "within"):
        adv = _mmd(multi_run, "teacher_null", samples=4, pairs=pairs)
        res = adv.two_sample(*_bought(multi_run, "teacher_null", ids[:40]), 0)
        assert res["p"] > 0.05 and res["n"] == 10


def test_mmd_samples_stays_within_budget(tmp_path):
    """Never more than 2 * len(X_teacher) responses: the first floor(n / S) prompts, and a
    prompt lacking samples is skipped, not replaced by a later one."""
    run = _multi_sample_run(tmp_path / "r", n_prompts=24)
    ids = run.paired("student")["id"].tolist()
    for S in (2, 3, 4):
        adv = _mmd(run, "student", samples=S)
        for n in (8, 9, 11, 17, 24):
            t, o = _bought(run, "student", ids[:n])
            res = adv.two_sample(t, o, np.random.default_rng(0))
            used = adv.design_["responses"]
            assert used == 2 * S * (n // S) == 2 * S * res["n"] <= 2 * len(t)
    # Drop sample 3 of the student's first prompt: that prompt is skipped (one fewer used).
    path = run.responses_path("student")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(ln for ln in lines if '"p000"' not in ln or '"sample": 3' not in ln))
    adv = _mmd(run, "student", samples=4)
    res = adv.two_sample(*_bought(run, "student", ids[:16]), np.random.default_rng(0))
    assert res["n"] == 3 and adv.design_["responses"] == 24


def test_mmd_samples_needs_a_run_with_samples(tmp_path):
    run = synthetic.make_run(tmp_path / "one", n_per_category=4, null=False)  # sample 0 only
    adv = _mmd(run, "student", samples=2)
    with pytest.raises(BbiError, match="--samples 2"):
        adv.preflight()
    t, o = _bought(run, "student", run.paired("student")["id"].tolist()[:10])
    with pytest.raises(BbiError, match="--samples 2"):
        adv.two_sample(t, o, np.random.default_rng(0))
    with pytest.raises(BbiError, match="context"):
        get_adversary("mmd", kernel="hamming", samples=2).two_sample(t, o, 0)
    with pytest.raises(BbiError, match="at least 4 bought prompts"):
        _mmd(run, "student", samples=2).two_sample(t.iloc[:3], o.iloc[:3], 0)
    with pytest.raises(BbiError, match="samples >= 2"):
        get_adversary("mmd", kernel="hamming", pairs="within").two_sample(t, o, 0)
    check_params("mmd", {"samples": 4, "pairs": "within"})
    for bad in ({"samples": 0}, {"samples": 1.5}, {"pairs": "all"}):
        with pytest.raises(BbiError):
            check_params("mmd", bad)


def test_mmd_samples_embedding_kernel_reads_each_sample(multi_run, monkeypatch):
    """The embedding kernel takes every sample's vectors from embeddings_for (run cache)."""
    import bbi.similarity

    calls = []

    def fake_embeddings(run, alias, sample=0, progress=False):
        calls.append((alias, sample))
        df = run.responses(alias)
        df = df[df["sample"] == sample]
        vec = [np.array([t.endswith("helps!"), len(t) / 100.0]) for t in df["text"]]
        return dict(zip(df["prompt_id"], vec, strict=True))

    monkeypatch.setattr(bbi.similarity, "embeddings_for", fake_embeddings)
    adv = _mmd(multi_run, "student", kernel="embedding", samples=2)
    assert adv.requires() == frozenset({"embeddings"})
    ids = multi_run.paired("student")["id"].tolist()
    res = adv.two_sample(*_bought(multi_run, "student", ids[:40]), np.random.default_rng(0))
    assert res["p"] < 0.05 and res["n"] == 20
    assert sorted(calls) == [("student", 0), ("student", 1), ("teacher", 0), ("teacher", 1)]


def test_attack_with_mmd_samples_end_to_end(tmp_path):
    """bbi attack --adversary mmd --param mmd.samples=2 --param mmd.kernel=kspectrum."""
    from bbi.config import AttackSettings
    from discriminators.attack import revealed_ok, run_attack

    run = _multi_sample_run(tmp_path / "r")
    cfg = AttackSettings(
        adversaries=["mmd"],
        params={"mmd": {"samples": 2, "kernel": "kspectrum", "unit": "word"}},
        budgets=[16, 72],
        test_queries=[1],
        strategies=["random"],
        seeds=1,
        n_bootstrap=50,
        n_permutations=50,
    )
    att = run_attack(run, cfg, compare=["student"])
    mmd = att["comparisons"]["student"]["adversaries"]["mmd"]
    assert mmd["two_sample"]["n"] == 72 // 2 // 2 and mmd["two_sample"]["p"] < 0.05
    assert [pt["n"] for pt in mmd["curves"]["random"]] == [4, 18]
    for f in (run.attack_dir / "student").glob("mmd__*.json"):
        assert revealed_ok(json.loads(f.read_text()))
