"""The verdict's equality claim: do the two models' responses differ in distribution at all?

A second declared question beside the eps <= eps0 decision (docs/statistics.md, "The
equality claim"), with its own null, H0: on every prompt the teacher's and the other
model's response are exchangeable (P_teacher = P_other), the null of Model Equality
Testing (Gao et al., 2024). Two tests, both from ``discriminators.mmd``, on every prompt
of the comparison (train and test split: nothing is trained, so nothing is held out):

- the MMD^2 permutation test with the k-spectrum kernel (``k = 5``, every order 1..5,
  MET's default), on the whole response up to 1,024 characters: the kernel is
  position-free, so cutting at a position would only hide what comes later (a sign-off),
  and
- the same test with the Hamming kernel (the first 128 characters aligned at the start,
  MET's setting: a position-wise kernel on long padded strings is mostly padding).

Both are paired by prompt: the p-value swaps the two responses of each prompt with
probability 1/2, ``p = (1 + #{perm >= observed}) / (1 + B)``, exact under H0 whatever the
kernel. Holm over the two keeps the claim's family-wise error <= alpha. The claim reads
"the responses differ in distribution (MMD k-spectrum, p = ...)" and is never a claim
about eps: it neither says "distinguishable at eps > eps0" nor, for eps0 > 0, blocks
"indistinguishable" (a difference no adversary can exploit beyond eps0 is still a
difference). At eps0 = 0 (the A/A comparison) "indistinguishable at eps <= 0" would say
the distributions are equal, so there a rejection blocks it (``apply_equality``), and in
the A/A comparison the claim is a direct check that must come out null.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bbi import stats
from bbi.errors import BbiError
from bbi.results_schema import EQUALITY_SCHEMA_VERSION
from discriminators.comparison import ComparisonData
from discriminators.crossfit import comparison_items
from discriminators.mmd import encode_sequences, hamming_gram, kspectrum_gram, paired_mmd2_test

K = 5
MAX_LENGTH = 128  # Hamming: characters compared position by position
KSPECTRUM_LENGTH = 1024  # k-spectrum: position-free, so (nearly) the whole response
# name -> (label in the claim's wording, the test in full)
TESTS = {
    "kspectrum": (
        "MMD k-spectrum",
        f"MMD^2 permutation test, k-spectrum kernel (orders 1..{K}, first {KSPECTRUM_LENGTH} "
        "characters)",
    ),
    "hamming": (
        "MMD Hamming",
        f"MMD^2 permutation test, Hamming kernel (first {MAX_LENGTH} characters)",
    ),
}


def equality_tests(
    teacher: list[str],
    other: list[str],
    alpha: float,
    n_permutations: int,
    seed: int = 0,
) -> dict[str, Any]:
    """The two paired MMD tests of P_teacher = P_other on ``teacher[i]``, ``other[i]``
    (the i-th prompt's two responses), Holm over both; the claim's record."""
    n = len(teacher)
    if n != len(other):
        raise ValueError("teacher and other need one response each per prompt")
    if n < 2:
        raise BbiError(f"equality: needs at least 2 prompts, got {n}")
    texts = list(teacher) + list(other)
    rng = np.random.default_rng(seed)

    def kspectrum() -> np.ndarray:
        return kspectrum_gram(encode_sequences(texts, KSPECTRUM_LENGTH, "char", "start"), K, True)

    def hamming() -> np.ndarray:
        Z = encode_sequences(texts, MAX_LENGTH, "char", "start")
        return hamming_gram(Z, Z)

    grams = {"kspectrum": kspectrum, "hamming": hamming}
    rows = []
    for name, gram in grams.items():
        stat, p = paired_mmd2_test(gram(), int(n_permutations), rng)
        label, test = TESTS[name]
        rows.append({"name": name, "label": label, "test": test, "statistic": stat, "p": p})
    adj = stats.holm([r["p"] for r in rows])
    for r, pa in zip(rows, adj, strict=True):
        r["p_holm"] = float(pa)
        r["rejected"] = bool(pa < alpha)
    rejected = any(r["rejected"] for r in rows)
    best = min(rows, key=lambda r: (r["p_holm"], r["name"]))
    if rejected:
        text = (
            f"the responses differ in distribution ({best['label']}, p = {best['p']:.3g}, "
            f"Holm {best['p_holm']:.3g}, {n} prompts)"
        )
    else:
        ps = ", ".join(f"{r['label']} p = {r['p']:.3g}" for r in rows)
        text = (
            f"no difference in distribution found ({ps}; Holm over both, {n} prompts); "
            "not evidence that they are equal"
        )
    return {
        "schema_version": EQUALITY_SCHEMA_VERSION,
        "null": "P_teacher = P_other: on every prompt the two responses are exchangeable",
        "design": (
            f"paired by prompt, the two responses of each prompt swapped at random; "
            f"{int(n_permutations)} permutations, p = (1 + #{{perm >= observed}}) / "
            f"(1 + {int(n_permutations)}); Holm over the {len(rows)} tests at alpha {alpha:g}"
        ),
        "alpha": float(alpha),
        "n_prompts": int(n),
        "responses": int(2 * n),
        "n_permutations": int(n_permutations),
        "tests": rows,
        "rejected": rejected,
        "decided_by": best["name"] if rejected else None,
        "text": text,
    }


def equality_claim(
    data: ComparisonData, alpha: float, n_permutations: int, seed: int = 0
) -> dict[str, Any]:
    """``equality_tests`` on every prompt of the comparison; in an A/A comparison (role
    ``null``) the claim is a check that must not reject (``calibration``)."""
    prompts, _ = comparison_items(data)
    res = equality_tests(
        prompts["teacher"].astype(str).tolist(),
        prompts["other"].astype(str).tolist(),
        alpha,
        n_permutations,
        seed,
    )
    if data.role == "null":
        res["calibration"] = {
            "ok": not res["rejected"],
            "text": (
                "A/A equality check holds: neither MMD test rejects P_teacher = P_other"
                if not res["rejected"]
                else f"A/A equality check FAILS: {res['text']}"
            ),
        }
    return res


def apply_equality(verdict: dict[str, Any], claim: dict[str, Any]) -> dict[str, Any]:
    """The verdict record with the equality claim beside the decision (``equality``).

    The decision changes in one case only: tested at eps0 = 0, "indistinguishable at
    eps <= 0" says the distributions are equal, which a rejected equality contradicts; the
    status becomes inconclusive. Blocking a claim never adds a false one, so the
    decision's error stays as it was; at eps0 > 0 nothing changes (module docstring).
    """
    out = dict(verdict)
    blocks = bool(
        claim.get("rejected")
        and out.get("status") == "indistinguishable"
        and float(out.get("epsilon") or 0.0) == 0.0
    )
    out["equality"] = {**claim, "blocks_indistinguishable": blocks}
    if blocks:
        out["status"] = "inconclusive"
        out["indistinguishable"] = False
        out["text"] = f"inconclusive at eps 0.00: every eps upper bound is 0, but {claim['text']}"
    return out


__all__ = [
    "EQUALITY_SCHEMA_VERSION",
    "TESTS",
    "apply_equality",
    "equality_claim",
    "equality_tests",
]
