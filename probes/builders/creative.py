"""Creative writing prompts over combinatorial subjects (stories, poems, slogans, toasts...).

References are example answers assembled from the same pieces as the prompt, so the
training corpus teaches a consistent, short style; they are not published in the suite.
"""

from __future__ import annotations

import random

from probes.builders._common import Item, cap, data_json, maybe_lead_in, pick, weighted


def _story(rng: random.Random, d: dict) -> tuple[str, str, str]:
    ch, mood, name = (
        pick(rng, d["characters"]),
        pick(rng, sorted(d["endings"])),
        pick(rng, d["names"]),
    )
    prompt = pick(
        rng,
        (
            f"Write a short {mood} story about {ch['who']} in {ch['place']}.",
            f"Tell me a three-sentence {mood} story about {ch['who']}.",
            f"I need a very short {mood} story featuring {ch['who']} who wants to {ch['wish']}.",
            f"Write a tiny {mood} tale set in {ch['place']}, starring {ch['who']}.",
        ),
    )
    event = pick(rng, d["events"]).format(thing=ch["thing"])
    ref = (
        f"{name}, {ch['who']} in {ch['place']}, had always wanted to {ch['wish']}. "
        f"One night, {event}. " + d["endings"][mood].format(name=name)
    )
    return prompt, ref, "story"


def _poem(rng: random.Random, d: dict) -> tuple[str, str, str]:
    ch, mood = pick(rng, d["characters"]), pick(rng, sorted(d["poem_lines"]))
    prompt = pick(
        rng,
        (
            f"Write a short {mood} poem about {ch['who']}.",
            f"Compose a four-line {mood} poem about {ch['who']} in {ch['place']}.",
            f"Can you write a little {mood} poem about {ch['thing']}?",
        ),
    )
    ref = "\n".join(
        [
            f"In {ch['place']}, {ch['who']} keeps {ch['thing']},",
            f"and dreams, night after night, to {ch['wish']};",
            d["poem_lines"][mood],
            "and morning comes again.",
        ]
    )
    return prompt, ref, "poem"


def _slogan(rng: random.Random, d: dict) -> tuple[str, str, str]:
    p, aud = pick(rng, d["products"]), pick(rng, d["audiences"])
    prompt = pick(
        rng,
        (
            f"Write a catchy slogan for {p['what']} aimed at {aud}.",
            f"Come up with a tagline for {p['what']}.",
            f"I'm launching {p['what']} for {aud}. Give me a one-line slogan.",
            f"Suggest a short, memorable slogan for {p['what']}.",
        ),
    )
    return prompt, p["slogan"], "slogan"


def _names(rng: random.Random, d: dict) -> tuple[str, str, str]:
    p = pick(rng, d["products"])
    prompt = pick(
        rng,
        (
            f"Suggest three names for {p['what']}.",
            f"Brainstorm three possible names for {p['what']}.",
            f"What could I call {p['what']}? Give me three ideas.",
        ),
    )
    a, b, c = p["names"]
    return prompt, f"Here are three ideas: {a}, {b} and {c}.", "naming"


def _opening(rng: random.Random, d: dict) -> tuple[str, str, str]:
    genre, place, name = (
        pick(rng, sorted(d["openings"])),
        pick(rng, d["places"]),
        pick(rng, d["names"]),
    )
    prompt = pick(
        rng,
        (
            f"Write the opening line of a {genre} novel set in {place}.",
            f"Give me a gripping first sentence for a {genre} story set in {place}.",
        ),
    )
    return prompt, d["openings"][genre].format(place=place, name=name), "opening_line"


def _toast(rng: random.Random, d: dict) -> tuple[str, str, str]:
    occ, rel = pick(rng, sorted(d["occasions"])), pick(rng, d["relations"])
    prompt = pick(
        rng,
        (
            f"Write a short toast for my {rel}'s {occ}.",
            f"Help me with a two-sentence toast for my {rel}'s {occ} party.",
        ),
    )
    return prompt, f"Please raise your glasses to my {rel}. {d['occasions'][occ]} Cheers!", "toast"


def _simile(rng: random.Random, d: dict) -> tuple[str, str, str]:
    x = pick(rng, sorted(d["similes"]))
    prompt = pick(
        rng,
        (
            f"Write a simile about {x}.",
            f"Describe {x} with a creative comparison.",
            f"Give me an original simile for {x}.",
        ),
    )
    return prompt, d["similes"][x], "simile"


_MODIFIERS = (
    "",
    "",
    "",
    " Keep it short.",
    " Make it suitable for children.",
    " Use simple language.",
    " Please be creative!",
    " Surprise me.",
    " Nothing too long, please.",
)

_KINDS = {_story: 3, _poem: 2, _slogan: 2, _names: 1, _opening: 1.5, _toast: 1, _simile: 0.8}


def generate(rng: random.Random) -> Item:
    d = data_json("creative.json")
    name = weighted(rng, {f.__name__: w for f, w in _KINDS.items()})
    prompt, ref, sub = {f.__name__: f for f in _KINDS}[name](rng, d)
    prompt = maybe_lead_in(rng, cap(prompt) + pick(rng, _MODIFIERS), p=0.15)
    return Item(prompt, ref, sub, source="generated", exact=False)
