"""What gives the other model away: interpretable features, chosen on train, scored on test.

For one comparison (teacher vs other, paired by prompt) every candidate feature of a
response, namely surface statistics in plain units (words, lines, list items, code
blocks...), the opening words, refusal phrases and word 1-3-grams, becomes a one-feature
*pairwise rule*: of the two answers to a prompt, the one with more of the feature is the
teacher's (or the other's). Its advantage is the mean over prompts of
``d_i = s * sign(x_teacher_i - x_other_i)``, the pairwise eps of bbi.stats (ties count 0).

Everything is chosen on the train split only: the candidate n-grams and openers (a
vocabulary built from train responses), each feature's direction ``s``, the ranking, the
removal of near-duplicates and the best rule's threshold. The test split only measures
the chosen features: their rates on each side, their eps with a paired-bootstrap CI
(simultaneous over the features shown: Bonferroni) and a sign-flip p, Holm-adjusted over
the features shown. A feature "stands out" when its Holm p is below alpha.

The best feature also gets a threshold rule (pointwise, like the adversaries: "a response
with >= 212 words is the teacher's", threshold at the train split's best TPR - FPR), and
the example pairs the best adversary was most sure of list the give-away features they
show. ``SurfaceAdversary.coefficients()`` adds the multivariate view: the largest
standardised weights of the surface adversary fit on the whole train split.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import CountVectorizer

from bbi import stats
from bbi.config import AttackSettings
from bbi.explain_schema import validated_explanation
from discriminators import sweep
from discriminators.comparison import ComparisonData

N_FEATURES = 8  # features shown per comparison
N_CATEGORY_FEATURES = 3  # per category
N_CANDIDATES = 300  # best train candidates considered for de-duplication
MAX_CORRELATION = 0.8  # a candidate this correlated with a kept one (train d) is a duplicate
MIN_CATEGORY_PROMPTS = 5  # per split, for a category's own features
N_WEIGHTS = 6
MAX_VOCAB_PROMPTS = 1000  # train prompts whose answers define the n-gram candidates

TOKEN = r"(?u)\w+|[^\w\s]"
_TOKEN_RE = re.compile(TOKEN)

STATS_NOTE = (
    "features chosen on the train split (vocabulary, direction, ranking, de-duplication, "
    "threshold); test split: eps of the pairwise rule 'the answer with more of the "
    "feature is <direction>'s' = mean of s*sign(x_teacher - x_other) over prompts, "
    "paired-bootstrap CI over prompts (Bonferroni-simultaneous over the features shown), "
    "one-sided sign-flip p, Holm over the features shown; stands out = p_holm < alpha"
)


@dataclass(frozen=True)
class _Count:
    """A surface count in plain units, with a regex that finds it (for highlighting)."""

    noun: str
    count: Callable[[str], float]
    pattern: str | None = None


def _regex_count(pattern: str, flags: int = 0) -> Callable[[str], float]:
    rx = re.compile(pattern, flags)
    return lambda t: float(len(rx.findall(t)))


_LIST = r"(?m)^[ \t]*(?:[-*+\u2022]|\d+[.)])[ \t]"
SURFACE: dict[str, _Count] = {
    "words": _Count("words", lambda t: float(len(t.split()))),
    "chars": _Count("characters", lambda t: float(len(t))),
    "lines": _Count("non-empty lines", lambda t: float(sum(1 for ln in t.split("\n") if ln.strip()))),
    "paragraphs": _Count(
        "paragraphs", lambda t: float(len([p for p in re.split(r"\n\s*\n", t) if p.strip()]))
    ),
    "sentences": _Count("sentences", _regex_count(r"[.!?]+(?:\s|$)")),
    "list_items": _Count("list items", _regex_count(_LIST), _LIST),
    "headers": _Count("markdown headers", _regex_count(r"(?m)^[ \t]*#{1,6}[ \t]"), r"(?m)^[ \t]*#{1,6}[ \t].*$"),
    "bold": _Count("bold spans", _regex_count(r"\*\*[^*\n]+\*\*|__[^_\n]+__"), r"\*\*[^*\n]+\*\*|__[^_\n]+__"),
    "code_blocks": _Count("code blocks", lambda t: float(t.count("```") // 2), r"```"),
    "numbers": _Count("numbers", _regex_count(r"\d+(?:[.,]\d+)*"), r"\d+(?:[.,]\d+)*"),
    "exclamations": _Count("exclamation marks", _regex_count(r"!"), r"!"),
    "questions": _Count("question marks", _regex_count(r"\?"), r"\?"),
    "colons": _Count("colons", _regex_count(r":"), r":"),
    "non_ascii": _Count("non-ASCII characters (emoji, symbols)", _regex_count(r"[^\x00-\x7f]"), r"[^\x00-\x7f]+"),
}  # fmt: skip

# Refusals and apologies, the classic safety-tuning give-away.
REFUSAL = (
    r"(?i)\b(?:I(?:'m| am) sorry|I apologi[sz]e|I(?: cannot|can't|can not| am unable| "
    r"won't| will not)(?: help| assist| provide| fulfil| comply| do that)|as an AI\b|"
    r"as a language model|I'm not able to|I am not able to)"
)
_REFUSAL_RE = re.compile(REFUSAL)


def _tokens(text: str) -> list[str]:
    return _TOKEN_RE.findall(text.lower())


def _token_regex(tokens: Sequence[str]) -> str:
    """A case-insensitive regex for a token sequence as it appears in running text."""
    parts = []
    for tok in tokens:
        esc = re.escape(tok)
        parts.append(rf"\b{esc}\b" if re.fullmatch(r"\w+", tok) else esc)
    return "(?i)" + r"\s*".join(parts)


def _opener_keys(text: str) -> tuple[str, str]:
    toks = [t.lower() for t in _TOKEN_RE.findall(text[:200])[:2]]
    return (" ".join(toks[:1]), " ".join(toks[:2]))


# ---- the feature matrix -----------------------------------------------------------------


@dataclass
class _Space:
    """The candidate features, built from train responses only."""

    keys: list[str]
    labels: list[str]
    kinds: list[str]
    binary: list[bool]
    patterns: list[str | None]
    openers: list[str]  # opener keys (1 or 2 tokens)
    vectorizer: CountVectorizer | None
    train_ngrams: sp.csr_matrix | None = None  # the vocabulary's fit, rows = train texts

    def matrix(self, texts: Sequence[str], ngrams: sp.csr_matrix | None = None) -> sp.csr_matrix:
        """(n, features): surface counts, opener and phrase indicators, n-gram presence
        (``ngrams``: these texts' n-gram rows when already counted)."""
        texts = [str(t) for t in texts]
        dense = np.zeros((len(texts), len(SURFACE) + len(self.openers) + 1))
        col = {k: j for j, k in enumerate(self.openers)}
        for i, t in enumerate(texts):
            dense[i, : len(SURFACE)] = [f.count(t) for f in SURFACE.values()]
            for k in _opener_keys(t):
                if k in col:
                    dense[i, len(SURFACE) + col[k]] = 1.0
            dense[i, -1] = float(bool(_REFUSAL_RE.search(t)))
        blocks = [sp.csr_matrix(dense)]
        if self.vectorizer is not None:
            blocks.append(ngrams if ngrams is not None else self.vectorizer.transform(texts))
        return sp.hstack(blocks, format="csr")


def _opener_forms(texts: Sequence[str]) -> dict[str, Counter[str]]:
    """Opener key -> how it looks in the texts (original case), with counts."""
    forms: dict[str, Counter[str]] = {}
    for t in texts:
        matches = list(_TOKEN_RE.finditer(t[:200]))[:2]
        for n in range(1, len(matches) + 1):
            key = " ".join(m.group().lower() for m in matches[:n])
            forms.setdefault(key, Counter())[t[matches[0].start() : matches[n - 1].end()]] += 1
    return forms


def build_space(train_texts: Sequence[str], n_prompts: int) -> _Space:
    """Candidates from the train responses of both sides (never the test split):
    ``train_texts`` is every teacher answer, then every other answer, prompt by prompt."""
    texts = [str(t) for t in train_texts]
    min_count = max(3, int(np.ceil(0.03 * n_prompts)))
    keys = [f"surface:{k}" for k in SURFACE]
    labels = [f.noun for f in SURFACE.values()]
    kinds = ["surface"] * len(SURFACE)
    binary = [False] * len(SURFACE)
    patterns: list[str | None] = [f.pattern for f in SURFACE.values()]
    forms = _opener_forms(texts)
    openers = sorted(k for k, c in forms.items() if c.total() >= min_count)
    for k in openers:
        keys.append(f"opener:{k}")
        labels.append(f"opens with “{forms[k].most_common(1)[0][0]}”")
        kinds.append("opener")
        binary.append(True)
        patterns.append("(?i)\\A\\s*" + _token_regex(k.split()).removeprefix("(?i)"))
    keys.append("phrase:refusal")
    labels.append("has a refusal or apology phrase")
    kinds.append("phrase")
    binary.append(True)
    patterns.append(REFUSAL)
    # The n-gram vocabulary of a large suite comes from a seeded sample of its train
    # prompts (both answers of each): every n-gram in 3% of the answers is all but
    # certain to be in the sample, and counting every 1-3-gram of thousands of long
    # answers would hold millions of rare ones in memory.
    n_side = len(texts) // 2
    sample = np.arange(n_side)
    if n_side > MAX_VOCAB_PROMPTS:
        rng = np.random.default_rng([n_side, 31])
        sample = np.sort(rng.choice(n_side, MAX_VOCAB_PROMPTS, replace=False))
    fit_texts = [texts[i] for i in sample] + [texts[n_side + i] for i in sample]
    fit_min = max(3, int(np.ceil(0.03 * len(sample))))
    vec: CountVectorizer | None = CountVectorizer(
        binary=True,
        lowercase=True,
        token_pattern=TOKEN,
        ngram_range=(1, 3),
        min_df=min(fit_min, max(1, len(fit_texts))),
        dtype=np.float64,
    )
    try:
        if len(sample) < n_side:
            counted = vec.fit(fit_texts).transform(texts).tocsr()
        else:
            counted = vec.fit_transform(fit_texts).tocsr()
        vocab = vec.get_feature_names_out()
    except ValueError:  # no n-gram frequent enough (tiny or empty texts)
        vec, vocab, counted = None, [], None
    for ng in vocab:
        keys.append(f"ngram:{ng}")
        labels.append(f"uses “{ng}”")
        kinds.append("ngram")
        binary.append(True)
        patterns.append(_token_regex(str(ng).split()))
    return _Space(keys, labels, kinds, binary, patterns, openers, vec, counted)


# ---- selection (train) and measurement (test) ---------------------------------------------


def _sign_diff(xt: sp.csr_matrix, xo: sp.csr_matrix, cols: np.ndarray | None = None) -> Any:
    d = (xt - xo) if cols is None else (xt[:, cols] - xo[:, cols])
    return d.sign()


_KIND_RANK = {"opener": 0, "phrase": 1, "surface": 2, "ngram": 3}


def _select(
    space: _Space, d_train: sp.csr_matrix, xt: sp.csr_matrix, xo: sp.csr_matrix, k: int
) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Top-k features by train advantage, near-duplicates dropped; (indices, means, signs).

    A yes/no feature is a candidate only when the side that uses it less does so at most
    half as often as the other (on train): "the" in 99% vs 95% of answers merely tracks
    length, "Sure!" in 64% vs 3% is a habit. Ties go to openers, then phrases, surface
    statistics and n-grams, and to the longer n-gram ("hope this helps" over "hope").
    """
    keys = space.keys
    mean = np.asarray(d_train.mean(axis=0)).ravel()
    score = np.abs(mean)
    rt = np.asarray(xt.mean(axis=0)).ravel()
    ro = np.asarray(xo.mean(axis=0)).ravel()
    lopsided = np.minimum(rt, ro) <= 0.5 * np.maximum(rt, ro)
    score = np.where(~np.asarray(space.binary) | lopsided, score, 0.0)
    order = sorted(
        range(len(keys)),
        key=lambda j: (
            -round(float(score[j]), 9),
            _KIND_RANK[space.kinds[j]],
            -len(keys[j].split()),
            keys[j],
        ),
    )
    cand = [j for j in order[:N_CANDIDATES] if score[j] > 0]
    if not cand:
        return [], mean, np.sign(mean)
    # Near-duplicates by the per-prompt differences x_teacher - x_other (characters and
    # words move together even where the signs are all +1).
    dense = (xt[:, cand] - xo[:, cand]).toarray()
    kept: list[int] = []
    kept_cols: list[np.ndarray] = []
    for c, j in enumerate(cand):
        v = dense[:, c]
        if not np.any(v):
            continue
        if any(_similarity(v, w) > MAX_CORRELATION for w in kept_cols):
            continue
        kept.append(j)
        kept_cols.append(v)
        if len(kept) == k:
            break
    return kept, mean, np.sign(mean)


def _similarity(v: np.ndarray, w: np.ndarray) -> float:
    """|correlation| of two per-prompt difference vectors; where one is constant (every
    answer opens with "Sure!") correlation is undefined, so the cosine is used instead."""
    if v.std() > 0 and w.std() > 0:
        return float(abs(np.corrcoef(v, w)[0, 1]))
    return float(abs(v @ w) / (np.linalg.norm(v) * np.linalg.norm(w)))


class _Tester:
    """Test-split estimates sharing one bootstrap draw (seeded by the number of prompts)."""

    def __init__(self, n_bootstrap: int, n_permutations: int, seed: int):
        self.n_bootstrap = n_bootstrap
        self.n_permutations = n_permutations
        self.seed = seed
        self._counts: dict[int, np.ndarray] = {}

    def estimate(self, d: np.ndarray, confidence: float = 0.95, tag: int = 0) -> dict[str, Any]:
        d = np.asarray(d, dtype=float)
        n = len(d)
        if n not in self._counts:
            rng = np.random.default_rng([self.seed, n, 23])
            self._counts[n] = stats.bootstrap_counts(n, self.n_bootstrap, rng)
        lo, hi, _ = stats.paired_bootstrap_ci(
            d, self.n_bootstrap, confidence=confidence, counts=self._counts[n]
        )
        return {
            "value": float(d.mean()),
            "ci": [lo, hi],
            "n": int(n),
            "p": stats.permutation_p(d, self.n_permutations, seed=[self.seed, n, 29, tag]),
        }


def _mean(x: np.ndarray) -> float | None:
    return float(np.mean(x)) if len(x) else None


def _features(
    space: _Space,
    idx: list[int],
    signs: np.ndarray,
    means: np.ndarray,
    X: dict[str, sp.csr_matrix],
    rows: dict[str, np.ndarray],
    tester: _Tester,
    alpha: float,
    tag: int,
) -> list[dict[str, Any]]:
    """Records of the chosen features: train stats, test rates and eps (family: these)."""
    out = []
    confidence = 1 - alpha / max(1, len(idx))
    for r, j in enumerate(idx):
        s = float(signs[j])
        col = {name: np.asarray(m[rows[name[:-2]], j].toarray()).ravel() for name, m in X.items()}
        tr_t, tr_o, te_t, te_o = col["tr_t"], col["tr_o"], col["te_t"], col["te_o"]
        d_test = s * np.sign(te_t - te_o)
        est = tester.estimate(d_test, confidence, tag=tag * 1000 + r)
        mt, mo = _mean(te_t), _mean(te_o)
        out.append(
            {
                "key": space.keys[j],
                "kind": space.kinds[j],
                "label": space.labels[j],
                "binary": space.binary[j],
                "direction": "teacher" if s > 0 else "other",
                "pattern": space.patterns[j],
                "train": {
                    "teacher": _mean(tr_t),
                    "other": _mean(tr_o),
                    "eps": float(abs(means[j])),
                    "n": int(len(tr_t)),
                },
                "test": {"teacher": mt, "other": mo, "n": int(len(te_t))},
                "ratio": (mo / mt) if (not space.binary[j] and mt and mo is not None) else None,
                "eps": est,
            }
        )
    if out:
        adj = stats.holm([f["eps"]["p"] for f in out])
        for f, pa in zip(out, adj, strict=True):
            f["eps"]["p_holm"] = float(pa)
            f["eps"]["significant"] = bool(pa < alpha)
    return out


# ---- plain language -------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{100 * x:.0f}%"


def _num(x: float | None) -> str:
    if x is None:
        return "–"
    return f"{x:.0f}" if abs(x) >= 9.95 else f"{x:.1f}"


def phrase(f: dict[str, Any], other: str, teacher: str) -> str:
    """One feature in words, with its test-split rates (other's first)."""
    te = f["test"]
    if f["binary"]:
        return f"{f['label']} in {_pct(te['other'])} of answers vs {_pct(te['teacher'])}"
    ratio = f.get("ratio")
    noun = f["label"]
    rates = f"{_num(te['other'])} vs {_num(te['teacher'])} per answer"
    if ratio is None:
        more = f["direction"] == "other"
        return f"{'more' if more else 'fewer'} {noun} ({rates})"
    if f["key"] in ("surface:words", "surface:chars"):
        word = "longer" if ratio > 1 else "shorter"
        change = (ratio - 1) if ratio > 1 else (1 - ratio)
        return f"answers are {100 * change:.0f}% {word} ({rates.replace('per answer', noun)})"
    if ratio >= 1.5:
        return f"{ratio:.1f}× as many {noun} ({rates})"
    if ratio > 1:
        return f"{100 * (ratio - 1):.0f}% more {noun} ({rates})"
    return f"{100 * (1 - ratio):.0f}% fewer {noun} ({rates})"


def summary_sentence(features: list[dict[str, Any]], other: str, teacher: str, alpha: float) -> str:
    """One plain-language sentence from the significant features (at most three)."""
    shown = [f for f in features if f["eps"].get("significant")][:3]
    if not shown:
        if not features:
            return f"Nothing stands out: no feature was found on the train split for {other}."
        f = features[0]
        e = f["eps"]
        lo, hi = e["ci"]
        return (
            f"Nothing stands out: no feature tells {other} from {teacher} on the test split "
            f"(Holm, α = {alpha:g}); the strongest on train, {f['label']}, has test "
            f"ε = {e['value']:.2f} [{lo:.2f}, {hi:.2f}]."
        )
    parts = []
    for f in shown:
        text = phrase(f, other, teacher)
        if f["binary"]:
            parts.append(f"it {text}")
        elif text.startswith("answers"):
            parts.append(f"its {text}")
        else:
            parts.append(f"it has {text}")
    first = parts[0]
    first = f"{other}'s" + first[3:] if first.startswith("its ") else f"{other}" + first[2:]
    return "; ".join([first, *parts[1:]]) + f" (test-split means, {other}'s first)."


def rule_text(f: dict[str, Any], teacher: str, other: str, threshold: float | None = None) -> str:
    who = teacher if f["direction"] == "teacher" else other
    if threshold is not None:
        op = "≥" if f["direction"] == "teacher" else "≤"
        return f"a response with {op} {_num(abs(threshold))} {f['label']} is {teacher}'s"
    if f["binary"]:
        label = f["label"]
        verb = label.replace("opens with", "that opens with").replace("uses", "that uses")
        verb = verb.replace("has a", "that has a")
        return f"of two answers to a prompt, the one {verb} is {who}'s"
    if f["key"] in ("surface:words", "surface:chars"):
        longer = "longer" if f["direction"] == "teacher" else "shorter"
        return f"the {longer} of two answers ({f['label']}) is {teacher}'s"
    more = "more" if f["direction"] == "teacher" else "fewer"
    return f"of two answers to a prompt, the one with {more} {f['label']} is {teacher}'s"


# ---- the whole record ---------------------------------------------------------------------


def explain_comparison(
    data: ComparisonData,
    teacher: str,
    alpha: float = 0.05,
    n_bootstrap: int = 1000,
    n_permutations: int = 1000,
    margins: dict[str, float] | None = None,
    adversary: str | None = None,
    n_examples: int = 3,
    seed: int = 0,
) -> dict[str, Any]:
    """The ``explain`` record of one comparison (bbi.explain_schema.Explanation).

    ``margins``: prompt id -> the best adversary's margin on that test prompt (its
    full-budget scores); the examples are the prompts with the largest margins.
    """
    other = data.other
    tr, te = data.train, data.test
    tr_t, tr_o = tr["teacher"].astype(str).tolist(), tr["other"].astype(str).tolist()
    te_t, te_o = te["teacher"].astype(str).tolist(), te["other"].astype(str).tolist()
    space = build_space(tr_t + tr_o, len(tr))
    ng = space.train_ngrams
    X = {
        "tr_t": space.matrix(tr_t, ng[: len(tr_t)] if ng is not None else None),
        "tr_o": space.matrix(tr_o, ng[len(tr_t) :] if ng is not None else None),
        "te_t": space.matrix(te_t),
        "te_o": space.matrix(te_o),
    }
    all_rows = {"tr": np.arange(len(tr)), "te": np.arange(len(te))}
    d_train = _sign_diff(X["tr_t"], X["tr_o"])
    tester = _Tester(n_bootstrap, n_permutations, seed)
    idx, means, signs = _select(space, d_train, X["tr_t"], X["tr_o"], N_FEATURES)
    features = _features(space, idx, signs, means, X, all_rows, tester, alpha, tag=0)

    rules = _rules(features, X, space, idx, signs, tester, teacher, other)

    per_category: dict[str, dict[str, Any]] = {}
    tr_cat = tr["category"].astype(str).to_numpy()
    te_cat = te["category"].astype(str).to_numpy()
    for c_i, cat in enumerate(sorted(set(tr_cat.tolist()) | set(te_cat.tolist()))):
        rows = {"tr": np.flatnonzero(tr_cat == cat), "te": np.flatnonzero(te_cat == cat)}
        if min(len(rows["tr"]), len(rows["te"])) < MIN_CATEGORY_PROMPTS:
            continue
        c_idx, c_means, c_signs = _select(
            space,
            d_train[rows["tr"]],
            X["tr_t"][rows["tr"]],
            X["tr_o"][rows["tr"]],
            N_CATEGORY_FEATURES,
        )
        feats = _features(space, c_idx, c_signs, c_means, X, rows, tester, alpha, tag=c_i + 1)
        per_category[cat] = {
            "n_train": int(len(rows["tr"])),
            "n_test": int(len(rows["te"])),
            "features": feats,
            "summary": summary_sentence(feats, other, teacher, alpha),
        }

    examples = _examples(data, features, margins or {}, adversary, n_examples)
    record = {
        "teacher": teacher,
        "other": other,
        "n_train": int(len(tr)),
        "n_test": int(len(te)),
        "alpha": float(alpha),
        "features": features,
        "rules": rules,
        "summary": summary_sentence(features, other, teacher, alpha),
        "stands_out": any(f["eps"].get("significant") for f in features),
        "per_category": per_category,
        "examples": examples,
        "surface_weights": surface_weights(data),
        "statistics": STATS_NOTE,
    }
    return validated_explanation(record)


def _rules(features, X, space, idx, signs, tester, teacher, other) -> list[dict[str, Any]]:
    """The best feature's pairwise rule (as in its row, CI at 95%: it is one pre-chosen
    test) and, for a count, its threshold rule fit on train."""
    if not features:
        return []
    f, j = features[0], idx[0]
    s = float(signs[j])
    col = {k: np.asarray(m[:, j].toarray()).ravel() for k, m in X.items()}
    d = s * np.sign(col["te_t"] - col["te_o"])
    out = [
        {
            "feature": f["key"],
            "kind": "pairwise",
            "text": rule_text(f, teacher, other),
            "eps": tester.estimate(d, 0.95, tag=900),
        }
    ]
    if not f["binary"]:
        y = np.concatenate([np.ones(len(col["tr_t"])), np.zeros(len(col["tr_o"]))])
        scores = s * np.concatenate([col["tr_t"], col["tr_o"]])
        thr = _threshold(scores, y)
        d_pt = stats.pointwise_contrib(s * col["te_t"], s * col["te_o"], thr)
        out.append(
            {
                "feature": f["key"],
                "kind": "threshold",
                "text": rule_text(f, teacher, other, threshold=s * thr),
                "threshold": float(s * thr),
                "eps": tester.estimate(d_pt, 0.95, tag=901),
            }
        )
    return out


def _threshold(scores: np.ndarray, y: np.ndarray) -> float:
    """The cut maximising TPR - FPR of ``score >= t`` on train (a raw-unit feature, so not
    ``stats.choose_threshold``'s probability scale); midpoints between observed values."""
    vals = np.unique(scores)
    if len(vals) < 2:
        return float(vals[0]) if len(vals) else 0.0
    cuts = (vals[:-1] + vals[1:]) / 2
    pos, neg = scores[y == 1], scores[y == 0]
    j = [(pos >= c).mean() - (neg >= c).mean() for c in cuts]
    return float(cuts[int(np.argmax(j))])


def _examples(data, features, margins, adversary, n) -> list[dict[str, Any]]:
    if not margins or not adversary or n <= 0:
        return []
    te = data.test
    pos = {str(pid): i for i, pid in enumerate(te["id"])}
    ranked = sorted((p for p in margins if p in pos), key=lambda p: (-margins[p], p))[:n]
    out = []
    for pid in ranked:
        i = pos[pid]
        shown = []
        for f in features:
            t = _value(f, data.test["teacher"].iloc[i])
            o = _value(f, data.test["other"].iloc[i])
            s = 1 if f["direction"] == "teacher" else -1
            if s * np.sign(t - o) > 0:
                shown.append({"key": f["key"], "teacher": t, "other": o})
        out.append(
            {
                "prompt_id": pid,
                "category": str(te["category"].iloc[i]),
                "adversary": adversary,
                "margin": float(margins[pid]),
                "features": shown,
            }
        )
    return out


def _value(f: dict[str, Any], text: str) -> float:
    """A chosen feature's value on one response (recomputed from its definition)."""
    text = str(text)
    kind, _, name = f["key"].partition(":")
    if kind == "surface":
        return SURFACE[name].count(text)
    if kind == "opener":
        return float(name in _opener_keys(text))
    if kind == "phrase":
        return float(bool(_REFUSAL_RE.search(text)))
    return float(name in _ngrams(text, len(name.split())))


def _ngrams(text: str, n: int) -> set[str]:
    toks = _tokens(text)
    return {" ".join(toks[i : i + n]) for i in range(len(toks) - n + 1)}


def surface_weights(data: ComparisonData, k: int = N_WEIGHTS) -> dict[str, float]:
    """The surface adversary fit on the whole train split: its largest standardised weights
    (positive = more teacher-like), the multivariate counterpart of the feature table."""
    from discriminators.surface import SurfaceAdversary

    items = data.train_items
    y = items["label"].to_numpy()
    if len(np.unique(y)) < 2:
        return {}
    w = SurfaceAdversary().fit(items, y).coefficients()
    top = sorted(w, key=lambda name: (-abs(w[name]), name))[:k]
    return {name: float(w[name]) for name in top}


def best_adversary(adversaries: dict[str, dict[str, Any]], margins: dict[str, dict[str, float]]):
    """The adversary with the highest eps that scored the test prompts (None without one)."""
    scored = {a for m in margins.values() for a in m}
    best, best_v = None, -np.inf
    for name, rec in adversaries.items():
        v = ((rec or {}).get("eps") or {}).get("value")
        if name in scored and v is not None and v > best_v:
            best, best_v = name, v
    return best


def explain_for_attack(
    data: ComparisonData,
    teacher: str,
    settings: AttackSettings,
    adversaries: dict[str, dict[str, Any]],
    margins: dict[str, dict[str, float]],
) -> dict[str, Any]:
    """The attack's call: the best adversary's margins, the sweep's alpha and resamples."""
    best = best_adversary(adversaries, margins)
    own = {pid: m[best] for pid, m in margins.items() if best in m} if best else {}
    return explain_comparison(
        data,
        teacher,
        alpha=settings.alpha,
        n_bootstrap=settings.n_bootstrap,
        n_permutations=settings.n_permutations,
        margins=own,
        adversary=best,
        n_examples=sweep.N_EXAMPLES,
        seed=sweep.full_seed(settings),
    )


def train_selection(record: dict[str, Any]) -> list[tuple]:
    """What the train split decided (for checks that the test split never changes it)."""
    rows = [
        (f["key"], f["direction"], f["train"]["teacher"], f["train"]["other"], f["train"]["eps"])
        for f in record["features"]
    ]
    for cat, c in sorted(record["per_category"].items()):
        rows += [(cat, f["key"], f["direction"], f["train"]["eps"]) for f in c["features"]]
    rows += [(r["feature"], r["kind"], r.get("threshold")) for r in record["rules"]]
    return rows
