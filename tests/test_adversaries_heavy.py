"""The heavier adversaries: mmd (two-sample test), encoder, likelihood, judge.

Everything runs on real (tiny) models and data made here; the micro zoo fixture supplies
real teacher/student backends for the likelihood and judge end-to-end checks.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from bbi.errors import BbiError
from discriminators import get_adversary, known_adversaries
from discriminators.mmd import (
    MMDTest,
    encode_sequences,
    gaussian_gram,
    hamming_gram,
    paired_mmd2_test,
)

# ---- shared data ------------------------------------------------------------------------

_TOPICS = [
    "the river",
    "a small cat",
    "prime numbers",
    "the old library",
    "green tea",
    "a red car",
    "the moon",
    "winter rain",
    "a brass band",
    "the desert",
]
_ADJ = ["nice", "plain", "quiet", "busy", "odd", "vast", "calm", "bright", "dark", "warm"]


def planted_items(
    n_prompts: int, seed: int, artifact: str = " Certainly!"
) -> tuple[pd.DataFrame, np.ndarray]:
    """Pointwise items: per prompt a teacher response (label 1) ending in ``artifact`` and
    an otherwise identically distributed other response (label 0) ending in " Sure."."""
    r = np.random.default_rng(seed)
    rows, y = [], []
    for i in range(n_prompts):
        topic = _TOPICS[r.integers(len(_TOPICS))]
        for label in (1, 0):
            body = (
                f"Here is a short note about {topic}. It is {r.choice(_ADJ)} and "
                f"{r.choice(_ADJ)}, mostly {r.choice(_ADJ)}."
            )
            rows.append(
                {
                    "prompt_id": f"p{seed}-{i}",
                    "category": "c",
                    "prompt": f"Tell me about {topic}.",
                    "response": body + (artifact if label else " Sure."),
                }
            )
            y.append(label)
    return pd.DataFrame(rows), np.array(y)


def to_pairwise(items: pd.DataFrame, y: np.ndarray, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """One row per prompt, the teacher's response placed as A with probability 1/2."""
    t, o = items[y == 1].reset_index(drop=True), items[y == 0].reset_index(drop=True)
    a_is_t = np.random.default_rng(seed).random(len(t)) < 0.5
    X = t[["prompt_id", "category", "prompt"]].copy()
    X["response_a"] = np.where(a_is_t, t["response"], o["response"])
    X["response_b"] = np.where(a_is_t, o["response"], t["response"])
    return X, a_is_t.astype(int)


def emb_frame(vecs: np.ndarray, prefix: str = "p") -> pd.DataFrame:
    return pd.DataFrame(
        {
            "prompt_id": [f"{prefix}{i}" for i in range(len(vecs))],
            "category": "c",
            "prompt": "q",
            "response": "r",
            "embedding": list(vecs),
        }
    )


def test_registered():
    for name in ("encoder", "mmd", "likelihood", "judge"):
        assert name in known_adversaries()
    assert get_adversary("mmd").kind == "test"
    assert get_adversary("judge").kind == "pairwise"


# ---- mmd --------------------------------------------------------------------------------


def test_hamming_kernel_on_strings():
    S = encode_sequences(["abc", "abd", "xyz", "", "abcdef"], length=4)
    K = hamming_gram(S, S)
    assert np.allclose(np.diag(K), 1.0)
    assert K[0, 1] == pytest.approx(3 / 4)  # a, b and the pad agree; c != d
    assert K[0, 2] == pytest.approx(1 / 4)  # only the pad agrees
    assert K[0, 3] == pytest.approx(1 / 4)  # empty string: all pads
    assert K[0, 4] == pytest.approx(3 / 4)  # cut at 4: "abcd" vs "abc<pad>"
    assert np.allclose(K, K.T)
    W = encode_sequences(["the cat sat", "the dog sat", "a cat"], length=3, unit="word")
    KW = hamming_gram(W, W)
    assert KW[0, 1] == pytest.approx(2 / 3)
    assert KW[0, 2] == pytest.approx(1 / 3)  # "cat" in position 2 of both
    E = encode_sequences(["xxabc", "ab", "yyabd"], length=3, align="end")
    KE = hamming_gram(E, E)
    assert KE[0, 2] == pytest.approx(2 / 3)  # "abc" vs "abd" compared from the end
    assert KE[0, 1] == pytest.approx(0.0)  # "abc" vs "<pad>ab": no position agrees
    with pytest.raises(BbiError):
        encode_sequences(["x"], length=4, unit="byte")
    with pytest.raises(BbiError):
        encode_sequences(["x"], length=4, align="middle")


def test_paired_statistic_matches_brute_force():
    rng = np.random.default_rng(0)
    X, Y = rng.normal(size=(7, 3)), rng.normal(size=(7, 3)) + 0.3
    K = gaussian_gram(np.concatenate([X, Y]), 1.3)
    stat, _ = paired_mmd2_test(K, 10, rng)

    def k(a, b):
        return np.exp(-np.sum((a - b) ** 2) / (2 * 1.3**2))

    n = len(X)
    h = [
        k(X[i], X[j]) + k(Y[i], Y[j]) - k(X[i], Y[j]) - k(X[j], Y[i])
        for i in range(n)
        for j in range(n)
        if i != j
    ]
    assert stat == pytest.approx(np.mean(h), rel=1e-4)


@pytest.mark.parametrize("paired", [True, False])
def test_mmd_null_false_positive_rate(paired):
    """Identical distributions: p roughly uniform, FPR <= alpha + slack over repeats."""
    rng = np.random.default_rng(1)
    adv = MMDTest(kernel="embedding", n_permutations=199)
    ps = []
    for r in range(120):
        A = emb_frame(rng.normal(size=(16, 8)))
        B = emb_frame(rng.normal(size=(16, 8)), prefix="p" if paired else "q")
        ps.append(adv.two_sample(A, B, np.random.default_rng(r))["p"])
    ps = np.array(ps)
    assert np.mean(ps < 0.05) <= 0.05 + 0.06
    assert 0.38 <= ps.mean() <= 0.62  # a uniform p has mean 1/2
    assert np.mean(ps < 0.5) == pytest.approx(0.5, abs=0.15)


def test_mmd_detects_shift_and_is_seeded():
    rng = np.random.default_rng(2)
    A = emb_frame(rng.normal(size=(40, 8)))
    B = emb_frame(rng.normal(size=(40, 8)) + 0.7)
    adv = get_adversary("mmd", n_permutations=499)
    res = adv.two_sample(A, B, np.random.default_rng(0))
    assert set(res) == {"statistic", "p", "n"} and res["n"] == 40
    assert res["p"] < 0.01 and res["statistic"] > 0
    again = adv.two_sample(A, B, np.random.default_rng(0))
    assert again == res


def test_mmd_hamming_on_synthetic_runs(tmp_path):
    """Teacher vs an independent resample: no signal; vs an all-caps student: p tiny."""
    from discriminators.synthetic import CATEGORIES, make_run

    run = make_run(
        tmp_path / "r",
        n_per_category=6,
        students={"student": {"categories": list(CATEGORIES), "rate": 1.0, "artifact": "caps"}},
    )

    def frames(other):
        pr = run.paired(other)
        base = pr[["id", "category", "prompt"]].rename(columns={"id": "prompt_id"})
        return base.assign(response=pr["teacher"]), base.assign(response=pr["other"])

    adv = get_adversary("mmd", kernel="hamming", max_length=64, n_permutations=499)
    t, s = frames("student")
    assert adv.two_sample(t, s, np.random.default_rng(0))["p"] < 0.01
    t, n = frames("teacher_null")
    assert adv.two_sample(t, n, np.random.default_rng(0))["p"] > 0.01
    # Identical samples: every h_ij is 0 (word ids are shared across the two samples).
    words = get_adversary("mmd", kernel="hamming", unit="word", n_permutations=99)
    same = words.two_sample(t, t.copy(), np.random.default_rng(0))
    assert same["statistic"] == pytest.approx(0.0) and same["p"] == 1.0
    ends = get_adversary("mmd", kernel="hamming", align="end", max_length=32, n_permutations=199)
    assert ends.two_sample(*frames("student"), np.random.default_rng(0))["p"] < 0.01
    with pytest.raises(BbiError):
        get_adversary("mmd", kernel="rbf").two_sample(t, n, np.random.default_rng(0))


def test_mmd_embedding_kernel_on_texts():
    """The default kernel embeds texts with MiniLM when no embedding column is given."""
    X, y = planted_items(12, seed=3, artifact=" Hope this helps! Let me know if you need more.")
    t, o = X[y == 1].reset_index(drop=True), X[y == 0].reset_index(drop=True)
    res = get_adversary("mmd", n_permutations=299).two_sample(t, o, np.random.default_rng(0))
    assert res["p"] < 0.05 and res["n"] == 12


# ---- encoder ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """A real (randomly initialised, 2-layer, 64-wide) BERT with MiniLM's tokenizer, saved
    locally: the same code path as any local or hub encoder, in seconds."""
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    from discriminators.encoder import default_model_path

    path = tmp_path_factory.mktemp("tiny-bert")
    tok = AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True)
    cfg = BertConfig(
        vocab_size=tok.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=256,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=2,
    )
    import torch

    torch.manual_seed(0)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def test_encoder_learns_planted_artifact(tiny_bert):
    X, y = planted_items(100, seed=1)
    Xt, yt = planted_items(100, seed=2)
    params = dict(
        model=tiny_bert,
        epochs=1,
        lr=1e-3,
        min_steps=80,
        batch_size=16,
        random_state=0,
        progress=False,
    )
    adv = get_adversary("encoder", **params).fit(X, y)
    p = adv.predict_proba(Xt)
    assert p.shape == (len(Xt),) and np.all((p >= 0) & (p <= 1))
    acc = np.mean((p > 0.5) == yt)
    assert acc > 0.8, acc
    # Seeded: the same random_state gives the same classifier.
    p2 = get_adversary("encoder", **params).fit(X, y).predict_proba(Xt)
    assert np.allclose(p, p2, atol=1e-5)


def test_encoder_errors(tiny_bert, tmp_path):
    X, y = planted_items(4, seed=1)
    with pytest.raises(BbiError):
        get_adversary("encoder", model=str(tmp_path / "missing"), progress=False).fit(X, y)
    with pytest.raises(BbiError):
        get_adversary("encoder", model=tiny_bert, progress=False).fit(X, np.ones(len(X)))
    with pytest.raises(BbiError):
        get_adversary("encoder", model=tiny_bert).predict_proba(X)


@pytest.mark.slow
def test_encoder_default_minilm_learns_artifact():
    """The default (MiniLM) encoder, ~200 items, 1 epoch (min_steps applies)."""
    X, y = planted_items(100, seed=1)
    Xt, yt = planted_items(60, seed=2)
    adv = get_adversary("encoder", epochs=1, progress=False).fit(X, y)
    assert np.mean((adv.predict_proba(Xt) > 0.5) == yt) > 0.8


# ---- likelihood -------------------------------------------------------------------------


def test_token_features_from_synthetic_scores():
    from discriminators.likelihood import FEATURE_NAMES, token_features

    lp = [-0.1, -2.0, -0.5, -4.0, -1.0]
    ent = [0.5, 1.0, 1.5, 2.0, 0.0]
    rk = [1, 3, 1, 10, 2]
    f = dict(zip(FEATURE_NAMES, token_features(lp, ent, rk), strict=True))
    assert f["n_tokens_log1p"] == pytest.approx(np.log(6))
    assert f["logprob_mean"] == pytest.approx(-1.52)
    assert f["logprob_std"] == pytest.approx(np.std(lp))
    assert f["logprob_min"] == pytest.approx(-4.0)
    assert f["logprob_q50"] == pytest.approx(-1.0)
    assert f["logprob_q25"] == pytest.approx(-2.0)
    assert f["logprob_q90"] == pytest.approx(np.quantile(lp, 0.9))
    assert f["entropy_mean"] == pytest.approx(1.0)
    assert f["surprise_minus_entropy"] == pytest.approx(1.52 - 1.0)
    assert f["rank1_fraction"] == pytest.approx(0.4)
    assert f["log_rank_mean"] == pytest.approx(np.mean(np.log(rk)))
    empty = token_features([], [], [])
    assert empty.shape == (len(FEATURE_NAMES),) and not empty.any()
    with pytest.raises(BbiError):
        token_features([-1.0], [0.1, 0.2], [1])


class FakeScorer:
    """A deterministic stand-in reference LM: the teacher's texts (with the artifact) get
    higher token log-probabilities. Counts how many responses it was asked to score."""

    fingerprint = "0123456789abcdef"

    def __init__(self):
        self.scored = 0

    def score(self, prompts, texts):
        from bbi.backends.base import TokenScores

        out = []
        for p, t in zip(prompts, texts, strict=True):
            rng = np.random.default_rng(abs(hash((p, t))) % 2**32)
            n = len(t.split())
            centre = -0.8 if "Certainly" in t else -1.6
            lp = rng.normal(centre, 0.6, size=n).clip(max=0).tolist()
            out.append(
                TokenScores(
                    lp, rng.uniform(0.5, 2, size=n).tolist(), rng.integers(1, 4, size=n).tolist()
                )
            )
        self.scored += len(texts)
        return out


def test_likelihood_learns_and_caches_scores(tmp_path):
    from bbi.runstore import RunDir

    run = RunDir(tmp_path / "run", create=True)
    X, y = planted_items(40, seed=1)
    Xt, yt = planted_items(40, seed=2)
    scorer = FakeScorer()
    ctx = {"run": run, "teacher": "teacher", "other": "student", "backend_options": {}, "seed": 0}
    adv = get_adversary("likelihood", reference=scorer, context=ctx, progress=False)
    adv.prepare(pd.concat([X, Xt], ignore_index=True))
    assert scorer.scored == len(X) + len(Xt)
    p = adv.fit(X, y).predict_proba(Xt)
    assert scorer.scored == len(X) + len(Xt)  # fit/predict reuse the prepared scores
    assert np.mean((p > 0.5) == yt) > 0.8
    assert adv.notes is None  # the reference is not the teacher's spec
    cache = run.attack_dir / "cache" / "likelihood-0123456789ab.jsonl"
    assert cache.exists()
    # A new sweep with the same reference reads the cache and scores nothing.
    fresh = FakeScorer()
    again = get_adversary("likelihood", reference=fresh, context=ctx, progress=False)
    p2 = again.fit(X, y).predict_proba(Xt)
    assert fresh.scored == 0 and np.allclose(p, p2, atol=1e-6)


def test_likelihood_needs_a_reference():
    X, y = planted_items(4, seed=1)
    with pytest.raises(BbiError, match="reference"):
        get_adversary("likelihood", progress=False).fit(X, y)


def _zoo_items(make_corpus, n_prompts: int, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Real responses of the micro zoo teacher (label 1) and student (label 0)."""
    from bbi.backends import GenerationConfig, load_backend

    corpus = make_corpus(seed + 7, per_category=max(1, n_prompts // 4 + 1))[:n_prompts]
    prompts = [c["prompt"] for c in corpus]
    cfg = GenerationConfig(max_new_tokens=24, temperature=0.7, top_p=0.95)
    seeds = list(range(len(prompts)))
    teacher = load_backend("zoo:teacher", device="cpu")
    student = load_backend("zoo:student", device="cpu")
    t = [g.text for g in teacher.generate(prompts, cfg, seeds)]
    s = [g.text for g in student.generate(prompts, cfg, seeds)]
    rows, y = [], []
    for i, (c, a, b) in enumerate(zip(corpus, t, s, strict=True)):
        for resp, lab in ((a, 1), (b, 0)):
            rows.append(
                {
                    "prompt_id": f"z{i}",
                    "category": c["category"],
                    "prompt": c["prompt"],
                    "response": resp,
                }
            )
            y.append(lab)
    return pd.DataFrame(rows), np.array(y)


def test_likelihood_end_to_end_micro_zoo(micro_zoo, synthetic_corpus, tmp_path):
    from bbi.runstore import RunDir
    from discriminators.likelihood import FEATURE_NAMES, GRAY_BOX_NOTE

    run = RunDir(tmp_path / "run", create=True)
    run.write_config(
        {
            "models": {
                "teacher": {"spec": "zoo:teacher", "role": "teacher"},
                "student": {"spec": "zoo:student", "role": "student"},
            }
        }
    )
    items, y = _zoo_items(synthetic_corpus, 24)
    ctx = {
        "run": run,
        "teacher": "teacher",
        "other": "student",
        "backend_options": {"device": "cpu"},
        "seed": 0,
    }
    adv = get_adversary("likelihood", context=ctx, progress=False)  # reference = run's teacher
    assert adv.notes == GRAY_BOX_NOTE
    tr = items["prompt_id"].isin([f"z{i}" for i in range(16)]).to_numpy()
    adv.fit(items[tr], y[tr])
    p = adv.predict_proba(items[~tr])
    assert p.shape == ((~tr).sum(),) and np.all((p >= 0) & (p <= 1))
    cached = list((run.attack_dir / "cache").glob("likelihood-*.jsonl"))
    assert len(cached) == 1
    # The teacher's own samples are more likely under the teacher than the student's.
    feats = adv._features(items)
    lp = feats[:, FEATURE_NAMES.index("logprob_mean")]
    assert lp[y == 1].mean() > lp[y == 0].mean()


# ---- judge ------------------------------------------------------------------------------


def test_ab_swap_consistency_rules():
    from discriminators.judge import combine_margins, combine_orders, parse_verdict

    assert combine_orders("A", "B") == 1.0  # a chosen in both orders
    assert combine_orders("B", "A") == 0.0  # b chosen in both orders
    assert combine_orders("A", "A") is None and combine_orders("B", "B") is None
    assert combine_orders(None, "A") is None
    assert combine_margins(2.0, -1.0) > 0.5 and combine_margins(-2.0, 3.0) < 0.5
    assert combine_margins(1.0, 0.5) is None and combine_margins(0.0, -1.0) is None
    assert parse_verdict(" B.") == "B" and parse_verdict("Answer: A") == "A"
    assert parse_verdict("Both are fine") is None


def _artifact_judge(biased_topics: tuple[str, ...] = ()):
    """A deterministic judge: picks the response with the teacher's artifact, except on
    prompts about ``biased_topics`` where it always answers "A" (pure position bias)."""
    seen: list[str] = []

    def judge(prompts: list[str]) -> list[str]:
        out = []
        for p in prompts:
            seen.append(p)
            task = p.rsplit("Prompt: ", 1)[1]
            if any(t in task.split("\n", 1)[0] for t in biased_topics):
                out.append("A")
                continue
            a = task.split("Response A: ", 1)[1].split("Response B: ", 1)[0]
            out.append("Answer: A" if "Certainly" in a else "B")
        return out

    judge.seen = seen
    return judge


def test_judge_consistency_on_fake_judge():
    X, y = planted_items(40, seed=1)
    Xp, yp = to_pairwise(X, y, seed=0)
    Xt, yt = to_pairwise(*planted_items(40, seed=2), seed=1)
    fake = _artifact_judge()
    adv = get_adversary("judge", judge=fake, k=2, random_state=0, progress=False).fit(Xp, yp)
    assert len(adv.examples_) == 2 and all("Certainly" in r for _, r in adv.examples_)
    p = adv.predict_proba(Xt)
    assert adv.method_ == "text" and adv.kept_fraction == 1.0
    assert np.all((p > 0.5) == (yt == 1))
    # Both orders were asked, and the few-shot teacher examples were shown.
    assert len(fake.seen) == 2 * len(Xt)
    assert all("Examples of model X's responses" in s for s in fake.seen)

    always_a = get_adversary("judge", judge=lambda ps: ["A"] * len(ps), progress=False)
    p = always_a.fit(Xp, yp).predict_proba(Xt)
    assert always_a.kept_fraction == 0.0 and np.all(p == 0.5) and not always_a.kept_.any()

    keep_all = get_adversary(
        "judge", judge=lambda ps: ["A"] * len(ps), drop_inconsistent=False, progress=False
    )
    p = keep_all.fit(Xp, yp).predict_proba(Xt)
    assert keep_all.kept_fraction == 1.0 and np.all(p == 0.5)  # text path: ties

    biased = ("the moon", "green tea", "a red car")
    half = get_adversary("judge", judge=_artifact_judge(biased), progress=False).fit(Xp, yp)
    p = half.predict_proba(Xt)
    expect = ~Xt["prompt"].str.contains("|".join(biased)).to_numpy()
    assert np.array_equal(half.kept_, expect)
    assert half.kept_fraction == pytest.approx(expect.mean())
    assert np.all((p[expect] > 0.5) == (yt[expect] == 1)) and np.all(p[~expect] == 0.5)


def test_judge_micro_zoo_teacher(micro_teacher):
    """A real (tiny) LLM as judge: near chance is fine; it must run, keep a fraction in
    [0, 1] and be reproducible."""
    X, y = planted_items(6, seed=1)
    Xp, yp = to_pairwise(X, y, seed=0)
    Xt, _ = to_pairwise(*planted_items(5, seed=2), seed=1)
    outs = []
    for method in ("auto", "auto", "text"):
        adv = get_adversary(
            "judge",
            judge=micro_teacher,
            k=2,
            method=method,
            max_chars=120,
            random_state=3,
            progress=False,
        ).fit(Xp, yp)
        p = adv.predict_proba(Xt)
        assert p.shape == (len(Xt),) and np.all((p >= 0) & (p <= 1))
        assert 0.0 <= adv.kept_fraction <= 1.0
        assert np.all(p[~adv.kept_] == 0.5)
        outs.append((adv.method_, p, adv.kept_fraction))
    assert outs[0][0] == "logprob" and outs[2][0] == "text"
    # Keeping inconsistent items: every item gets a position-debiased verdict.
    adv = get_adversary(
        "judge",
        judge=micro_teacher,
        k=2,
        max_chars=120,
        random_state=3,
        drop_inconsistent=False,
        progress=False,
    ).fit(Xp, yp)
    p = adv.predict_proba(Xt)
    assert adv.kept_fraction == 1.0 and np.all((p >= 0) & (p <= 1))
    assert np.allclose(p[outs[0][1] != 0.5], outs[0][1][outs[0][1] != 0.5])
    assert np.array_equal(outs[0][1], outs[1][1]) and outs[0][2] == outs[1][2]


def test_judge_from_run_context(micro_zoo, tmp_path):
    """Without judge=, the run's teacher spec is the judge (loaded via load_backend)."""
    from bbi.runstore import RunDir

    run = RunDir(tmp_path / "run", create=True)
    run.write_config({"models": {"teacher": {"spec": "zoo:teacher", "role": "teacher"}}})
    ctx = {
        "run": run,
        "teacher": "teacher",
        "other": "student",
        "backend_options": {"device": "cpu"},
        "seed": 0,
    }
    X, y = planted_items(3, seed=1)
    Xp, yp = to_pairwise(X, y, seed=0)
    adv = get_adversary("judge", context=ctx, k=1, max_chars=80, progress=False).fit(Xp, yp)
    adv.predict_proba(Xp)
    assert 0.0 <= adv.kept_fraction <= 1.0
    with pytest.raises(BbiError, match="judge"):
        get_adversary("judge", progress=False).fit(Xp, yp).predict_proba(Xp)
