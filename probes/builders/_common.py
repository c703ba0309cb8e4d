"""Shared pieces for the category builders: the item type, bundled tables, phrasing helpers.

Builders draw one random item at a time from a ``random.Random``; the suite assembler keeps
drawing until it has enough unique prompts. Everything a builder needs comes from the
bundled tables in ``probes/data`` (read as text, so results never depend on the Python
version or on the network).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any


@dataclass(frozen=True)
class Item:
    """One generated prompt with its reference answer.

    ``exact`` marks references that are computed or known facts; open-ended answers
    (stories, advice, rewrites) are example answers: they are kept for the training corpus
    but not published as the suite's reference.
    """

    prompt: str
    reference: str
    subcategory: str
    source: str = "generated"
    exact: bool = True


def _data_text(name: str) -> str:
    return resources.files("probes").joinpath("data", name).read_text(encoding="utf-8")


@cache
def table(name: str) -> tuple[dict[str, str], ...]:
    """A bundled TSV table as a tuple of row dicts (header row gives the keys)."""
    rows = csv.DictReader(_data_text(name).splitlines(), delimiter="\t")
    return tuple({k: (v or "").strip() for k, v in row.items()} for row in rows)


@cache
def data_json(name: str) -> Any:
    """A bundled JSON file (nested tables such as topics)."""
    return json.loads(_data_text(name))


def pick(rng: random.Random, seq):
    return seq[rng.randrange(len(seq))]


def weighted(rng: random.Random, options: dict[str, float]) -> str:
    """Choose a key with probability proportional to its weight (dict order is fixed)."""
    total = sum(options.values())
    x = rng.random() * total
    for key, w in options.items():
        x -= w
        if x < 0:
            return key
    return key


def cap(s: str) -> str:
    """Capitalise the first letter only (keeps proper nouns and acronyms intact)."""
    return s[:1].upper() + s[1:] if s else s


def strip_the(s: str) -> str:
    return s[4:] if s.startswith("the ") else s


def join_and(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f" and {items[-1]}"


def number_words(n: int) -> str:
    words = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
    ]
    return words[n] if 0 <= n < len(words) else str(n)


LEAD_INS = (
    "Quick question: ",
    "I have a question. ",
    "Can you help me? ",
    "Hi! ",
    "Hello, ",
    "Hey, ",
    "Please help: ",
    "I was wondering: ",
    "Sorry if this is basic, but ",
    "For a project I'm working on: ",
)


def maybe_lead_in(rng: random.Random, prompt: str, p: float = 0.2) -> str:
    """Sometimes open with a conversational lead-in, as real users often do."""
    if rng.random() >= p:
        return prompt
    return prefix(pick(rng, LEAD_INS), prompt)


def prefix(lead: str, text: str) -> str:
    """Prepend ``lead``; when it continues the sentence ("Hey, ...") lower-case the next
    word unless it is "I", a proper noun we know of, or code."""
    if lead.endswith((", ", "So ", "but ")) and text:
        first = text.split(" ", 1)[0]
        if (
            first not in _KEEP_CAPS
            and not first.startswith(("I'", "`"))
            and first[1:] == first[1:].lower()
        ):
            text = text[0].lower() + text[1:]
    return lead + text


_KEEP_CAPS = {"I", "I'm", "I've", "Python", "SQL", "Git", "Linux", "Unix", "HTTP"}


FIRST_NAMES = (
    "Alice",
    "Ben",
    "Carla",
    "David",
    "Elena",
    "Farid",
    "Grace",
    "Hiro",
    "Ines",
    "James",
    "Kavya",
    "Liam",
    "Maya",
    "Noah",
    "Olga",
    "Pedro",
    "Quinn",
    "Rosa",
    "Sam",
    "Tara",
    "Umar",
    "Vera",
    "Wei",
    "Ximena",
    "Yusuf",
    "Zoe",
    "Amara",
    "Bruno",
    "Chloe",
    "Dmitri",
    "Emma",
    "Felix",
    "Hannah",
    "Ivan",
    "Julia",
    "Kenji",
    "Lena",
    "Marco",
    "Nadia",
    "Oscar",
)
LAST_NAMES = (
    "Anderson",
    "Baker",
    "Costa",
    "Dubois",
    "Evans",
    "Fischer",
    "Garcia",
    "Hughes",
    "Ito",
    "Jensen",
    "Kowalski",
    "Lopez",
    "Moreau",
    "Nguyen",
    "Okafor",
    "Patel",
    "Rossi",
    "Schmidt",
    "Tanaka",
    "Varga",
    "Walsh",
    "Yilmaz",
    "Zhang",
    "Novak",
    "Silva",
    "Khan",
    "Müller",
    "Larsen",
    "Murphy",
    "Ortiz",
)
CITIES = (
    "Lisbon",
    "Toronto",
    "Nairobi",
    "Osaka",
    "Melbourne",
    "Denver",
    "Lyon",
    "Krakow",
    "Seville",
    "Bristol",
    "Porto",
    "Austin",
    "Hamburg",
    "Valencia",
    "Dublin",
    "Oslo",
    "Montreal",
    "Auckland",
    "Glasgow",
    "Rotterdam",
    "Turin",
    "Singapore",
    "Cape Town",
    "Vancouver",
    "Edinburgh",
    "Boston",
    "Munich",
    "Seattle",
)
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)
WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def person(rng: random.Random) -> str:
    return f"{pick(rng, FIRST_NAMES)} {pick(rng, LAST_NAMES)}"


def two_names(rng: random.Random) -> tuple[str, str]:
    a, b = rng.sample(FIRST_NAMES, 2)
    return a, b
