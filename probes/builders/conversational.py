"""Everyday chat: greetings, introductions, small talk, personal news, thanks, advice."""

from __future__ import annotations

import random

from probes.builders._common import FIRST_NAMES, Item, cap, data_json, pick, prefix, weighted

_OPENERS = ("", "", "", "Hey, ", "Hi! ", "So, ", "Okay, ", "Hmm, ")


def _punct(rng: random.Random, s: str) -> str:
    """Real chat messages vary in trailing punctuation."""
    r = rng.random()
    if r < 0.15 and s.endswith(("!", ".")):
        return s[:-1]
    if r < 0.25 and s.endswith("!"):
        return s[:-1] + "!!"
    return s


def generate(rng: random.Random) -> Item:
    d = data_json("conversation.json")
    kind = weighted(
        rng,
        {
            "greeting": 1.2,
            "introduction": 0.8,
            "favorite": 1.3,
            "news": 1.8,
            "thanks": 0.9,
            "advice": 4,
        },
    )
    if kind == "greeting":
        prompt, ref = pick(rng, d["greetings"])
        prompt = _punct(rng, prompt)
        sub = "greeting"
    elif kind == "introduction":
        name = pick(rng, FIRST_NAMES)
        prompt = pick(rng, d["introductions"]).format(name=name)
        extra = pick(rng, ("", "", " I'm new here.", " First time using this."))
        prompt += extra
        ref = f"Nice to meet you, {name}! How can I help you today?"
        if extra:
            ref = f"Welcome, {name}! Nice to meet you. Let me know what I can help you with."
        sub = "greeting"
    elif kind == "favorite":
        x, fav, why = pick(rng, d["favorites"])
        prompt = prefix(pick(rng, _OPENERS), pick(rng, d["favorite_templates"]).format(x=x))
        ref = (
            f"I don't have personal favourites, but many people love {fav} because {why}. "
            f"What's yours?"
        )
        sub = "small_talk"
    elif kind == "news":
        prompt, ref = pick(rng, d["news"])
        prompt = _punct(rng, prefix(pick(rng, _OPENERS), prompt)) + pick(rng, d["news_suffixes"])
        sub = "personal_news"
    elif kind == "thanks":
        prompt, ref = pick(rng, d["thanks"])
        prompt = _punct(rng, prompt)
        sub = "closing"
    else:
        problem, ref = pick(rng, d["advice"])
        prompt = pick(rng, d["advice_templates"]).format(p=problem)
        prompt += pick(rng, d["advice_contexts"])
        if rng.random() < 0.3:
            prompt = prefix(pick(rng, ("Hey, ", "Hi, ", "So ")), prompt)
        sub = "advice"
    return Item(cap(prompt), ref, sub, source="generated", exact=False)
