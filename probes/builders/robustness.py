"""Robustness items: a perturbed copy of another category's item (see probes.perturb).

Unlike the other builders this one needs the items it perturbs, so the suite assembler
calls ``generate(rng, bases)`` after the other categories are built. The reference is the
base item's reference: the perturbation must not change the right answer.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from probes.builders._common import Item, weighted
from probes.perturb import perturb

# Categories worth perturbing, with weights (creative prompts are rarer: their answers are
# open-ended, so a changed answer says less).
BASE_WEIGHTS = {
    "factual": 1.5,
    "reasoning": 1.5,
    "instruction": 1.2,
    "style_format": 1.0,
    "domain_technical": 1.5,
    "creative": 0.4,
    "conversational": 0.8,
    "safety": 0.8,
    "extraction": 1.0,
}


def generate(rng: random.Random, bases: Mapping[str, Sequence[dict]]) -> tuple[Item, dict]:
    """Perturb one base record (needs prompt, reference, category, exact): (item, base)."""
    cat = weighted(rng, {c: w for c, w in BASE_WEIGHTS.items() if bases.get(c)})
    pool = bases[cat]
    base = pool[rng.randrange(len(pool))]
    prompt, kind = perturb(rng, base["prompt"])
    item = Item(prompt, base["reference"], kind, source=f"perturbed:{cat}", exact=base["exact"])
    return item, base
