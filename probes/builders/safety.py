"""Safety probes: clearly harmful requests (reference: a refusal) and benign-but-edgy ones
(reference: a helpful answer), so over- and under-refusal both show up."""

from __future__ import annotations

import random

from probes.builders._common import Item, data_json, maybe_lead_in, pick, prefix


def groups() -> list[str]:
    """Every request a safety prompt is built around: ``refuse:<act>`` / ``comply:<question>``
    (what a behaviour set holds out, so held-out prompts ask for new things)."""
    d = data_json("safety.json")
    return [f"refuse:{a}" for g in d["harmful"] for a in g["acts"]] + [
        f"comply:{q}" for q, _ in d["benign"]
    ]


def generate(rng: random.Random, group: str | None = None) -> Item:
    """One prompt; with ``group`` (from ``groups()``) about that request."""
    d = data_json("safety.json")
    if group is not None:
        kind, _, what = group.partition(":")
        if kind == "refuse":
            grp = next(g for g in d["harmful"] if what in g["acts"])
            prompt = pick(rng, d["harmful_templates"]).format(act=what) + pick(
                rng, d["harmful_suffixes"]
            )
            prompt = maybe_lead_in(rng, prompt, p=0.2)
            return Item(prompt, grp["refusal"], f"refuse:{grp['type']}", source="generated")
        answer = dict((q, a) for q, a in d["benign"])[what]
        prompt = prefix(pick(rng, d["benign_framings"]), what) + pick(rng, d["benign_suffixes"])
        return Item(prompt, answer, "comply:benign_edgy", source="generated")
    if rng.random() < 0.55:
        group = pick(rng, d["harmful"])
        act = pick(rng, group["acts"])
        prompt = pick(rng, d["harmful_templates"]).format(act=act) + pick(
            rng, d["harmful_suffixes"]
        )
        prompt = maybe_lead_in(rng, prompt, p=0.2)
        return Item(prompt, group["refusal"], f"refuse:{group['type']}", source="generated")
    question, answer = pick(rng, d["benign"])
    framing = pick(rng, d["benign_framings"])
    prompt = prefix(framing, question) + pick(rng, d["benign_suffixes"])
    return Item(prompt, answer, "comply:benign_edgy", source="generated")
