"""Assembling the default suite and the training corpus from the category builders.

Each category draws from its own random stream (seeded from the suite seed and the
category name), so categories never influence each other and a build is reproducible
byte for byte. The suite keeps only one prompt per normalised form (no "Hi! What is X?"
in test while "What is X?" is in train); robustness items perturb items of the same split.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from functools import lru_cache

from bbi.errors import BbiError
from probes.builders import (
    conversational,
    creative,
    domain_technical,
    extraction,
    factual,
    instruction,
    reasoning,
    robustness,
    safety,
    style_format,
)
from probes.builders._common import LEAD_INS, Item
from probes.schema import canonical_record

CATEGORIES = (
    "factual",
    "reasoning",
    "instruction",
    "style_format",
    "robustness",
    "domain_technical",
    "creative",
    "conversational",
    "safety",
    "extraction",
)
PER_CATEGORY = 500
# suite_hash(build_suite(0)), identical on Python 3.10-3.13. Changing a builder or a data
# table changes the default suite, so runs made with the old one stop being comparable:
# update this on purpose, never to make a test pass.
DEFAULT_SUITE_HASH = "sha256:c24fe5885d5142f8f395c76c8ccab9f43901efe3958842ec7772d50a6eb7f3f4"
TEST_PER_CATEGORY = 100

_BUILDERS: dict[str, Callable[[random.Random], Item]] = {
    "factual": factual.generate,
    "reasoning": reasoning.generate,
    "instruction": instruction.generate,
    "style_format": style_format.generate,
    "domain_technical": domain_technical.generate,
    "creative": creative.generate,
    "conversational": conversational.generate,
    "safety": safety.generate,
    "extraction": extraction.generate,
}
_MAX_TRIES_PER_ITEM = 60


def _rng(seed: int, category: str, purpose: str) -> random.Random:
    digest = hashlib.sha256(f"bbi-probes/{purpose}/{seed}/{category}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


_LEAD_RE = re.compile(
    "^(?:" + "|".join(re.escape(x.strip()) for x in LEAD_INS) + r")\s*", re.IGNORECASE
)


def normalise(prompt: str) -> str:
    """Dedup key: case, whitespace, a conversational lead-in and end punctuation ignored."""
    p = _LEAD_RE.sub("", prompt.strip())
    return re.sub(r"\s+", " ", p).strip().rstrip("?.!").lower()


def _draw(
    category: str,
    rng: random.Random,
    n: int,
    seen: set[str],
    seen_keys: set[str] | None,
    make: Callable[[], tuple[Item, dict | None]],
) -> list[tuple[Item, dict | None]]:
    out: list[tuple[Item, dict | None]] = []
    tries = 0
    while len(out) < n:
        tries += 1
        if tries > _MAX_TRIES_PER_ITEM * n + 1000:
            raise BbiError(
                f"category {category!r} ran out of distinct prompts after {len(out)} of {n}; "
                "ask for fewer items per category"
            )
        item, base = make()
        if item.prompt in seen:
            continue
        if seen_keys is not None and base is None:
            key = normalise(item.prompt)
            if key in seen_keys:
                continue
            seen_keys.add(key)
        seen.add(item.prompt)
        out.append((item, base))
    return out


def _record(
    rid: str, category: str, item: Item, split: str, keep_open: bool, base: dict | None
) -> dict:
    return {
        "id": rid,
        "category": category,
        "subcategory": item.subcategory,
        "prompt": item.prompt,
        "split": split,
        "reference": item.reference if (item.exact or keep_open) else None,
        "source": item.source,
        "perturbation": item.subcategory if base is not None else None,
        "base_id": base["id"] if base is not None else None,
    }


def _split_positions(items: list[Item], n_test: int, rng: random.Random) -> list[str]:
    """Stratified by subcategory: random order within subcategory, then every k-th to test."""
    n = len(items)
    order = list(range(n))
    rng.shuffle(order)
    order.sort(key=lambda i: items[i].subcategory)
    step = n / n_test
    offset = rng.random() * step
    test_ranks = {int(offset + j * step) for j in range(n_test)}
    splits = ["train"] * n
    for rank, i in enumerate(order):
        if rank in test_ranks:
            splits[i] = "test"
    return splits


def build_suite(seed: int = 0) -> list[dict]:
    """The deterministic default suite: 10 categories x 500 prompts, 400 train / 100 test each.

    Records follow docs/run-directory.md (all nine fields, null where not applicable).
    """
    seen: set[str] = set()
    keys: set[str] = set()
    by_cat: dict[str, list[dict]] = {}
    exact: dict[str, bool] = {}
    for cat in CATEGORIES:
        if cat == "robustness":
            continue
        rng = _rng(seed, cat, "suite")
        gen = _BUILDERS[cat]
        drawn = _draw(cat, rng, PER_CATEGORY, seen, keys, lambda g=gen, r=rng: (g(r), None))
        items = [it for it, _ in drawn]
        splits = _split_positions(items, TEST_PER_CATEGORY, rng)
        recs = []
        for i, (it, split) in enumerate(zip(items, splits, strict=True)):
            rec = _record(f"{cat}-{i:05d}", cat, it, split, False, None)
            exact[rec["id"]] = it.exact
            recs.append(rec)
        by_cat[cat] = recs

    # Robustness: perturb train items into train and test items into test, so a model
    # tuned on the train split has never seen any variant of a test prompt.
    rng = _rng(seed, "robustness", "suite")
    rob: list[tuple[Item, dict | None]] = []
    for split, n in (("train", PER_CATEGORY - TEST_PER_CATEGORY), ("test", TEST_PER_CATEGORY)):
        bases = {
            c: [dict(r, exact=exact[r["id"]]) for r in recs if r["split"] == split]
            for c, recs in by_cat.items()
        }
        rob += _draw("robustness", rng, n, seen, None, lambda b=bases: robustness.generate(rng, b))
    order = list(range(len(rob)))
    rng.shuffle(order)
    by_cat["robustness"] = [
        _record(
            f"robustness-{j:05d}", "robustness", rob[i][0], rob[i][1]["split"], False, rob[i][1]
        )
        for j, i in enumerate(order)
    ]
    return [canonical_record(r) for cat in CATEGORIES for r in by_cat[cat]]


@lru_cache(maxsize=1)
def _default_suite() -> tuple[dict, ...]:
    return tuple(build_suite(0))


def default_suite() -> list[dict]:
    """build_suite(0), built once per process (callers get their own copies)."""
    return [dict(r) for r in _default_suite()]


def training_corpus(seed: int = 1, per_category: int = 2000) -> list[dict]:
    """(prompt, reference) pairs for training the zoo models, disjoint from the suite.

    Uses separate random streams from the suite and drops any prompt that the default
    suite contains, so models trained on it have never seen a probe verbatim. Every
    record has a non-empty reference (open-ended categories get their example answers).
    """
    if per_category < 1:
        raise BbiError(f"per_category must be at least 1, got {per_category}")
    seen = {r["prompt"] for r in _default_suite()}
    out: list[dict] = []
    base_pool: dict[str, list[dict]] = {}
    for cat in CATEGORIES:
        if cat == "robustness":
            continue
        rng = _rng(seed, cat, "corpus")
        gen = _BUILDERS[cat]
        drawn = _draw(cat, rng, per_category, seen, None, lambda g=gen, r=rng: (g(r), None))
        recs = [
            _record(f"corpus{seed}-{cat}-{i:05d}", cat, it, "train", True, None)
            for i, (it, _) in enumerate(drawn)
        ]
        base_pool[cat] = [dict(r, exact=True) for r in recs]
        out.extend(recs)
    rng = _rng(seed, "robustness", "corpus")
    drawn = _draw(
        "robustness", rng, per_category, seen, None, lambda: robustness.generate(rng, base_pool)
    )
    out.extend(
        _record(f"corpus{seed}-robustness-{i:05d}", "robustness", it, "train", True, base)
        for i, (it, base) in enumerate(drawn)
    )
    order = {c: i for i, c in enumerate(CATEGORIES)}
    out.sort(key=lambda r: order[r["category"]])
    return [canonical_record(r) for r in out]


def safety_groups() -> list[str]:
    """The requests safety prompts are built around (``refuse:<act>``, ``comply:<question>``)."""
    from probes.builders import safety

    return safety.groups()


def safety_behaviour(
    groups: list[str], n: int, seed: int | str, exclude: set[str] | frozenset = frozenset()
) -> list[dict]:
    """``n`` distinct safety prompts about ``groups`` (round robin), with the behaviour
    wanted: ``{prompt, target, label: refuse|comply, group, family}`` (``family``: the harm
    type of a harmful request, e.g. ``refuse:weapons``; ``comply:benign_edgy`` otherwise).

    For behaviour sets (``bbi distill bird``): the stream is separate from the suite's and
    the corpus's, and no prompt of the default suite or of ``exclude`` is returned, so a
    held-out split never repeats a training prompt.
    """
    from probes.builders import safety

    if n < 1 or not groups:
        raise BbiError("a safety behaviour set needs n >= 1 and at least one group")
    seen = {r["prompt"] for r in _default_suite()} | set(exclude)
    rng = _rng(0, "safety", f"behaviour/{seed}")
    out: list[dict] = []
    tries = 0
    while len(out) < n:
        group = groups[len(out) % len(groups)]
        item = safety.generate(rng, group)
        tries += 1
        if tries > _MAX_TRIES_PER_ITEM * n + 1000:
            raise BbiError(f"safety behaviour set ran out of distinct prompts after {len(out)}")
        if item.prompt in seen:
            continue
        seen.add(item.prompt)
        out.append(
            {
                "prompt": item.prompt,
                "target": item.reference,
                "label": group.split(":", 1)[0],
                "group": group,
                "family": item.subcategory,
            }
        )
    return out
