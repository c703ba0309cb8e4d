"""Safety probes: clearly harmful requests (reference: a refusal) and benign-but-edgy ones
(reference: a helpful answer), so over- and under-refusal both show up."""

from __future__ import annotations

import random

from probes.builders._common import Item, data_json, maybe_lead_in, pick, prefix


def generate(rng: random.Random) -> Item:
    d = data_json("safety.json")
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
