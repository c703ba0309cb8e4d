"""Factual Q&A over bundled tables (capitals, currencies, elements, dates, authors...)."""

from __future__ import annotations

import random

from probes.builders._common import (
    Item,
    cap,
    maybe_lead_in,
    pick,
    table,
    weighted,
)

_CAPITAL_Q = (
    "What is the capital of {c}?",
    "What's the capital city of {c}?",
    "Which city is the capital of {c}?",
    "Name the capital of {c}.",
    "Tell me the capital of {c}.",
    "What city is the capital of {c}?",
    "I always forget: what is the capital of {c}?",
)
_CAPITAL_R = (
    "{Cap} is the capital of which country?",
    "Which country has {cap} as its capital?",
    "{Cap} is the capital city of what country?",
)
_CURRENCY_Q = (
    "What is the currency of {c}?",
    "Which currency is used in {c}?",
    "What money do people use in {c}?",
    "If I travel to {c}, what currency will I need?",
    "Name the official currency of {c}.",
)
_CONTINENT_Q = (
    "On which continent is {c}?",
    "Which continent is {c} located in?",
    "{C} is on what continent?",
    "What continent is {c} part of?",
)
_LANGUAGE_Q = (
    "What is the main language spoken in {c}?",
    "Which language do most people speak in {c}?",
    "What is the official language of {c}?",
)
_SYMBOL_Q = (
    "What is the chemical symbol for {e}?",
    "Which symbol represents {e} on the periodic table?",
    "What's the element symbol of {e}?",
)
_FROM_SYMBOL_Q = (
    "Which element has the chemical symbol {s}?",
    "What element does the symbol {s} stand for?",
    "On the periodic table, which element is {s}?",
)
_NUMBER_Q = (
    "What is the atomic number of {e}?",
    "How many protons does an atom of {e} have?",
    "Which atomic number does {e} have?",
)
_FROM_NUMBER_Q = (
    "Which element has atomic number {n}?",
    "What is element number {n} on the periodic table?",
)
_EVENT_Q = (
    "In what year {q}?",
    "When {q}? Give the year.",
    "What year {q}?",
    "Do you know in which year {q}?",
)
_WORK_Q = {
    "novel": (
        "Who wrote {t}?",
        "Who is the author of {t}?",
        "{T} was written by whom?",
        "Which author wrote the novel {t}?",
    ),
    "play": (
        "Who wrote the play {t}?",
        "Who is the playwright behind {t}?",
        "Which writer wrote {t}?",
    ),
    "poem": (
        "Who wrote {t}?",
        "Who is the author of the epic poem {t}?",
        "{T} is attributed to which poet?",
    ),
    "painting": (
        "Who painted {t}?",
        "Which artist painted {t}?",
        "{T} is a painting by whom?",
        "Who is the artist behind {t}?",
    ),
}
_WORK_VERB = {"novel": "wrote", "play": "wrote", "poem": "wrote", "painting": "painted"}
_DISCOVERY_Q = (
    "Who is credited with {t}?",
    "Which person is known for {t}?",
    "Who gave us {t}?",
)
_SCIENCE_PREFIX = ("", "", "", "Science question: ", "Trivia time! ", "For my quiz: ")


def _country(rng: random.Random, need: str = "") -> dict[str, str]:
    rows = [r for r in table("countries.tsv") if not need or r[need]]
    return pick(rng, rows)


def generate(rng: random.Random) -> Item:
    kind = weighted(
        rng,
        {
            "capital": 3,
            "capital_reverse": 1.5,
            "currency": 2,
            "continent": 1.5,
            "language": 1.5,
            "element_symbol": 1.5,
            "element_number": 1.5,
            "event_year": 2.5,
            "author": 2.5,
            "discovery": 1.2,
            "science": 2.5,
        },
    )
    if kind in ("capital", "capital_reverse", "currency", "continent", "language"):
        row = _country(rng, "language" if kind == "language" else "")
        c = row["country"]
        fmt = {"c": c, "C": cap(c), "cap": row["capital"], "Cap": row["capital"]}
        if kind == "capital":
            prompt = pick(rng, _CAPITAL_Q).format(**fmt)
            ref = f"The capital of {c} is {row['capital']}."
        elif kind == "capital_reverse":
            prompt = pick(rng, _CAPITAL_R).format(**fmt)
            ref = f"{row['capital']} is the capital of {c}."
        elif kind == "currency":
            prompt = pick(rng, _CURRENCY_Q).format(**fmt)
            ref = f"The currency of {c} is {row['currency']}."
        elif kind == "continent":
            prompt = pick(rng, _CONTINENT_Q).format(**fmt)
            ref = f"{cap(c)} is in {row['continent']}."
        else:
            prompt = pick(rng, _LANGUAGE_Q).format(**fmt)
            ref = f"The main language of {c} is {row['language']}."
        sub = "geography"
    elif kind == "element_symbol":
        row = pick(rng, table("elements.tsv"))
        if rng.random() < 0.5:
            prompt = pick(rng, _SYMBOL_Q).format(e=row["name"])
        else:
            prompt = pick(rng, _FROM_SYMBOL_Q).format(s=row["symbol"])
        ref = f"The chemical symbol for {row['name']} is {row['symbol']}."
        sub = "chemistry"
    elif kind == "element_number":
        row = pick(rng, table("elements.tsv"))
        if rng.random() < 0.6:
            prompt = pick(rng, _NUMBER_Q).format(e=row["name"])
        else:
            prompt = pick(rng, _FROM_NUMBER_Q).format(n=row["number"])
        ref = f"{cap(row['name'])} has atomic number {row['number']}."
        sub = "chemistry"
    elif kind == "event_year":
        row = pick(rng, table("events.tsv"))
        prompt = pick(rng, _EVENT_Q).format(q=row["question"])
        ref = f"{cap(row['event'])} in {row['year']}."
        sub = "history"
    elif kind == "author":
        row = pick(rng, table("works.tsv"))
        t = row["title"]
        prompt = pick(rng, _WORK_Q[row["kind"]]).format(t=t, T=cap(t))
        ref = f"{row['creator']} {_WORK_VERB[row['kind']]} {t}."
        sub = "arts" if row["kind"] == "painting" else "literature"
    elif kind == "discovery":
        row = pick(rng, table("discoveries.tsv"))
        prompt = pick(rng, _DISCOVERY_Q).format(t=row["thing"])
        ref = f"{row['person']} is credited with {row['thing']}."
        sub = "science_history"
    else:
        row = pick(rng, table("science.tsv"))
        prompt = pick(rng, _SCIENCE_PREFIX) + row["question"]
        ref = row["answer"]
        sub = "science"
    return Item(maybe_lead_in(rng, prompt), ref, sub, source="tables")


__all__ = ["generate"]
