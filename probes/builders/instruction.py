"""Constraint-following prompts; the constraint is recorded in ``subcategory``.

References are built from the topic table so that they satisfy the constraint exactly
(bullet count, word limit, casing...), which makes them usable both as training targets
and as a check of what "following the instruction" means.
"""

from __future__ import annotations

import random

from probes.builders._common import Item, cap, data_json, number_words, pick, weighted

_ASK = (
    "Tell me about {t}.",
    "Explain {t}.",
    "Describe {t}.",
    "Give me an overview of {t}.",
    "Summarize {t}.",
    "What should I know about {t}?",
)


def _words(s: str) -> int:
    return len(s.split())


def _lower_first(s: str) -> str:
    return s[:1].lower() + s[1:]


def _fit_words(topic: dict, limit: int) -> str:
    """The fullest answer from the topic that stays within ``limit`` words."""
    cands = [topic["summary"], *topic["points"]]
    for c in cands:
        if _words(c) <= limit:
            return c
    return " ".join(topic["points"][0].split()[:limit]).rstrip(".,") + "."


def _constraint(rng: random.Random, topic: dict) -> tuple[str, str, str]:
    """(instruction text, reference, subcategory)."""
    pts, summary = topic["points"], topic["summary"]
    kind = weighted(
        rng,
        {
            "bullets": 3,
            "numbered": 1.5,
            "max_words": 2.5,
            "all_caps": 1.5,
            "lowercase": 1.2,
            "one_sentence": 1,
            "sentences": 1.2,
            "start_with": 1.2,
            "end_with": 1,
            "include_word": 1,
            "no_commas": 0.8,
            "quoted": 0.8,
            "title": 0.8,
            "paragraphs": 0.8,
            "postscript": 0.8,
        },
    )
    if kind == "bullets":
        n = rng.randint(2, 5)
        marker = pick(rng, ("-", "*", "•"))
        text = pick(
            rng,
            (
                f"Answer in exactly {n} bullet points.",
                f"Use exactly {number_words(n)} bullet points.",
                f"Format your answer as exactly {n} bullet points using '{marker}'.",
            ),
        )
        ref = "\n".join(f"{marker} {p}" for p in pts[:n])
        return text, ref, f"exact_bullets:{n}"
    if kind == "numbered":
        n = rng.randint(2, 5)
        text = pick(
            rng,
            (
                f"Give exactly {n} points as a numbered list.",
                f"Respond with a numbered list of {number_words(n)} items.",
            ),
        )
        return text, "\n".join(f"{i}. {p}" for i, p in enumerate(pts[:n], 1)), f"numbered:{n}"
    if kind == "max_words":
        n = pick(rng, (8, 10, 12, 15, 20, 25, 30))
        text = pick(
            rng,
            (
                f"Use no more than {n} words.",
                f"Keep your answer under {n + 1} words.",
                f"Answer in {n} words or fewer.",
            ),
        )
        return text, _fit_words(topic, n), f"max_words:{n}"
    if kind == "all_caps":
        text = pick(
            rng,
            (
                "Respond in all caps.",
                "Write your entire answer in capital letters.",
                "Answer using only uppercase letters.",
            ),
        )
        return text, summary.upper(), "all_caps"
    if kind == "lowercase":
        text = pick(
            rng,
            (
                "Respond only in lowercase letters.",
                "Do not use any capital letters in your answer.",
            ),
        )
        return text, summary.lower(), "lowercase"
    if kind == "one_sentence":
        text = pick(rng, ("Answer in one sentence.", "Reply with a single sentence."))
        return text, summary, "sentences:1"
    if kind == "sentences":
        n = rng.randint(2, 3)
        text = pick(
            rng,
            (f"Answer in exactly {n} sentences.", f"Write exactly {number_words(n)} sentences."),
        )
        return text, " ".join(pts[:n]), f"sentences:{n}"
    if kind == "start_with":
        w = pick(rng, ("Sure", "Absolutely", "Certainly", "Okay", "Well"))
        text = pick(
            rng, (f"Start your answer with the word '{w}'.", f'Begin your reply with "{w}".')
        )
        return text, f"{w}, {_lower_first(summary)}", f"start_with:{w}"
    if kind == "end_with":
        phrase = pick(
            rng, ("Hope this helps!", "Any other questions?", "Good luck!", "That is all.")
        )
        text = pick(
            rng,
            (
                f"End your answer with the exact phrase '{phrase}'",
                f'Finish your response with "{phrase}"',
            ),
        )
        return text + ".", f"{summary} {phrase}", "end_with"
    if kind == "include_word":
        w = pick(rng, ("simple", "short", "practical", "honest", "quick"))
        text = pick(
            rng,
            (
                f"Include the word '{w}' in your answer.",
                f'Make sure your answer contains the word "{w}".',
            ),
        )
        return text, f"The {w} answer: {summary}", f"include_word:{w}"
    if kind == "no_commas":
        clean = [p for p in pts if "," not in p][:2] or [summary.replace(",", "")]
        text = pick(
            rng,
            ("Do not use any commas in your answer.", "Avoid commas entirely in your response."),
        )
        return text, " ".join(clean), "no_commas"
    if kind == "quoted":
        text = pick(
            rng,
            (
                "Wrap your entire answer in double quotation marks.",
                "Put your whole response inside double quotes.",
            ),
        )
        return text, f'"{summary}"', "quoted"
    if kind == "title":
        text = "Give your answer a title wrapped in double angular brackets, such as <<title>>."
        return text, f"<<{cap(topic['keyword'])}>>\n{summary}", "title"
    if kind == "paragraphs":
        text = pick(
            rng,
            (
                "Answer in two paragraphs separated by a blank line.",
                "Write exactly two short paragraphs.",
            ),
        )
        return text, f"{pts[0]} {pts[1]}\n\n{pts[2]} {pts[3]}", "paragraphs:2"
    text = pick(
        rng,
        (
            "At the end, add a postscript starting with P.S.",
            "Finish with a postscript that begins with 'P.S.'",
        ),
    )
    return text, f"{summary}\n\nP.S. {pts[4]}", "postscript"


def generate(rng: random.Random) -> Item:
    topic = pick(rng, data_json("topics.json"))
    ask = pick(rng, _ASK).format(t=topic["topic"])
    text, ref, sub = _constraint(rng, topic)
    prompt = f"{ask} {text}" if rng.random() < 0.7 else f"{text} {ask}"
    return Item(prompt, ref, sub, source="topics")
