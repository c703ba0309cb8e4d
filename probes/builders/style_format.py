"""Format and style prompts: JSON, markdown tables, lists, CSV/YAML, casing, haiku, rewrites.

Structured outputs (JSON, tables, CSV, sorted lists, identifier casing) are computed from
the bundled tables, so their references are exact; haiku and tone rewrites carry example
answers only.
"""

from __future__ import annotations

import json
import random

from probes.builders._common import (
    CITIES,
    FIRST_NAMES,
    Item,
    cap,
    data_json,
    join_and,
    pick,
    strip_the,
    table,
    weighted,
)

_WORD_POOLS = {
    "fruits": (
        "banana",
        "cherry",
        "apple",
        "mango",
        "kiwi",
        "grape",
        "pear",
        "lemon",
        "plum",
        "peach",
        "fig",
        "orange",
    ),
    "animals": (
        "zebra",
        "otter",
        "falcon",
        "badger",
        "lynx",
        "moose",
        "heron",
        "gecko",
        "walrus",
        "koala",
        "bison",
        "rabbit",
    ),
    "colours": (
        "teal",
        "crimson",
        "amber",
        "violet",
        "ivory",
        "indigo",
        "olive",
        "scarlet",
        "maroon",
        "silver",
        "coral",
        "navy",
    ),
    "tools": (
        "hammer",
        "wrench",
        "saw",
        "chisel",
        "drill",
        "pliers",
        "level",
        "clamp",
        "file",
        "sander",
        "trowel",
        "ruler",
    ),
}
_IDENTIFIERS = (
    "user name",
    "total price",
    "max retry count",
    "created at",
    "order id",
    "first login date",
    "is active",
    "page size",
    "http status code",
    "file path",
    "last modified time",
    "shipping address",
    "item count",
    "api key",
    "retry delay seconds",
    "default timeout",
    "customer email",
    "unread message count",
    "start date",
    "error message",
)
_CASES = {
    "snake_case": lambda w: "_".join(w),
    "camelCase": lambda w: w[0] + "".join(x.capitalize() for x in w[1:]),
    "PascalCase": lambda w: "".join(x.capitalize() for x in w),
    "kebab-case": lambda w: "-".join(w),
    "SCREAMING_SNAKE_CASE": lambda w: "_".join(x.upper() for x in w),
}
_TITLES = (
    "a walk through the old town",
    "notes on building small tools",
    "the history of tea",
    "ten ideas for rainy weekends",
    "why cities need more trees",
    "learning to play chess",
    "a short guide to sourdough",
    "life on a small island",
    "how maps changed the world",
    "the quiet power of habits",
    "cooking with seasonal vegetables",
    "stories from the night shift",
)


def _country_json(rng: random.Random) -> tuple[str, str, str]:
    row = pick(rng, table("countries.tsv"))
    keys = pick(
        rng,
        (
            ("country", "capital"),
            ("country", "capital", "continent"),
            ("country", "currency"),
            ("country", "capital", "currency"),
        ),
    )
    obj = {k: strip_the(row[k]) if k == "currency" else row[k] for k in keys}
    obj["country"] = strip_the(obj["country"])
    quoted = join_and([f'"{k}"' for k in keys])
    prompt = pick(
        rng,
        (
            f"Return a JSON object with the keys {quoted} for {row['country']}.",
            f"Give me {row['country']} as JSON with the fields {quoted}. Output only the JSON.",
            f"Output only valid JSON describing {row['country']} using the keys {quoted}.",
        ),
    )
    return prompt, json.dumps(obj, ensure_ascii=False), "json"


def _element_json(rng: random.Random) -> tuple[str, str, str]:
    rows = rng.sample(table("elements.tsv"), rng.randint(1, 3))
    objs = [
        {"name": r["name"], "symbol": r["symbol"], "atomic_number": int(r["number"])} for r in rows
    ]
    names = join_and([r["name"] for r in rows])
    if len(objs) == 1:
        prompt = (
            f'Describe {names} as a JSON object with "name", "symbol" and "atomic_number" keys.'
        )
        return prompt, json.dumps(objs[0]), "json"
    prompt = (
        f'Return a JSON array with one object per element ({names}), each with "name", '
        f'"symbol" and "atomic_number".'
    )
    return prompt, json.dumps(objs), "json"


def _list_json(rng: random.Random) -> tuple[str, str, str]:
    topic = pick(rng, data_json("topics.json"))
    n = rng.randint(2, 4)
    prompt = pick(
        rng,
        (
            f"List {n} points about {topic['topic']} as a JSON array of strings.",
            f"Give {topic['topic']} as a JSON list with exactly {n} short strings.",
        ),
    )
    return prompt, json.dumps(topic["points"][:n]), "json"


def _markdown_table(rng: random.Random) -> tuple[str, str, str]:
    if rng.random() < 0.6:
        rows = rng.sample(table("countries.tsv"), rng.randint(2, 4))
        col = pick(rng, ("capital", "continent"))
        names = join_and([strip_the(r["country"]) for r in rows])
        prompt = pick(
            rng,
            (
                f"Make a markdown table of the {col}s of {names}.",
                f"Create a markdown table with columns Country and {cap(col)} for {names}.",
            ),
        )
        lines = [f"| Country | {cap(col)} |", "| --- | --- |"]
        lines += [f"| {strip_the(r['country'])} | {r[col]} |" for r in rows]
    else:
        rows = rng.sample(table("elements.tsv"), rng.randint(2, 4))
        names = join_and([r["name"] for r in rows])
        prompt = (
            f"Show {names} in a markdown table with the columns Element, Symbol and Atomic number."
        )
        lines = ["| Element | Symbol | Atomic number |", "| --- | --- | --- |"]
        lines += [f"| {cap(r['name'])} | {r['symbol']} | {r['number']} |" for r in rows]
    return prompt, "\n".join(lines), "markdown_table"


def _sorting(rng: random.Random) -> tuple[str, str, str]:
    pool_name = pick(rng, tuple(_WORD_POOLS))
    words = rng.sample(_WORD_POOLS[pool_name], rng.randint(4, 7))
    rev = rng.random() < 0.25
    out = sorted(words, reverse=rev)
    order = "reverse alphabetical order" if rev else "alphabetical order"
    form = pick(rng, ("bulleted", "numbered", "comma"))
    given = ", ".join(words)
    if form == "bulleted":
        prompt = f"Sort these {pool_name} into {order} and return them as a bulleted list: {given}"
        ref = "\n".join(f"- {w}" for w in out)
    elif form == "numbered":
        prompt = f"Put these words in {order} as a numbered list: {given}"
        ref = "\n".join(f"{i}. {w}" for i, w in enumerate(out, 1))
    else:
        prompt = f"Sort the following in {order}, comma-separated on one line: {given}"
        ref = ", ".join(out)
    return prompt, ref, "list"


def _people(rng: random.Random, n: int) -> list[dict]:
    names = rng.sample(FIRST_NAMES, n)
    return [{"name": nm, "age": rng.randint(19, 70), "city": pick(rng, CITIES)} for nm in names]


def _csv(rng: random.Random) -> tuple[str, str, str]:
    ppl = _people(rng, rng.randint(2, 4))
    given = "; ".join(f"{p['name']} is {p['age']} and lives in {p['city']}" for p in ppl)
    prompt = pick(
        rng,
        (
            f"Convert this to CSV with a header row name,age,city: {given}.",
            f"Turn the following into CSV (columns: name, age, city): {given}.",
        ),
    )
    ref = "\n".join(["name,age,city"] + [f"{p['name']},{p['age']},{p['city']}" for p in ppl])
    return prompt, ref, "csv"


def _yaml(rng: random.Random) -> tuple[str, str, str]:
    p = _people(rng, 1)[0]
    if rng.random() < 0.5:
        prompt = (
            f"Write this as YAML with the keys name, age and city: {p['name']}, "
            f"{p['age']} years old, from {p['city']}."
        )
        return prompt, f"name: {p['name']}\nage: {p['age']}\ncity: {p['city']}", "yaml"
    prompt = (
        f"Turn this into a JSON object with the keys name, age and city: {p['name']} is "
        f"{p['age']} and lives in {p['city']}."
    )
    return prompt, json.dumps(p, ensure_ascii=False), "json"


def _case(rng: random.Random) -> tuple[str, str, str]:
    words = pick(rng, _IDENTIFIERS).split()
    case = pick(rng, tuple(_CASES))
    phrase = " ".join(words)
    prompt = pick(
        rng,
        (
            f'Convert "{phrase}" to {case}.',
            f"Write the variable name '{phrase}' in {case}.",
            f'How would you write "{phrase}" as a {case} identifier?',
        ),
    )
    return prompt, _CASES[case](words), "case_conversion"


def _title_case(rng: random.Random) -> tuple[str, str, str]:
    t = pick(rng, _TITLES)
    if rng.random() < 0.5:
        return (
            f'Capitalize the first letter of every word: "{t}"',
            " ".join(w.capitalize() for w in t.split()),
            "case_conversion",
        )
    return f'Rewrite in all uppercase: "{t}"', t.upper(), "case_conversion"


def _haiku(rng: random.Random) -> tuple[str, str, str, bool]:
    bank = data_json("haiku.json")
    subject = pick(rng, sorted(bank))
    prompt = pick(
        rng,
        (
            f"Write a haiku about {subject}.",
            f"Compose a haiku on {subject}.",
            f"Can you write me a haiku about {subject}?",
            f"I need a 5-7-5 haiku about {subject}.",
        ),
    )
    return prompt, "\n".join(bank[subject]), "haiku", False


def _rewrite(rng: random.Random) -> tuple[str, str, str, bool]:
    row = pick(rng, table("rewrites.tsv"))
    if rng.random() < 0.6:
        prompt = pick(
            rng,
            (
                f'Rewrite this message to sound more formal: "{row["informal"]}"',
                f'Make this more professional: "{row["informal"]}"',
                f'Rephrase formally for an email to a client: "{row["informal"]}"',
            ),
        )
        return prompt, row["formal"], "rewrite_formal", False
    prompt = pick(
        rng,
        (
            f'Rewrite this to sound casual and friendly: "{row["formal"]}"',
            f'Make this sentence more informal: "{row["formal"]}"',
        ),
    )
    return prompt, cap(row["informal"]), "rewrite_informal", False


_KINDS = {
    _country_json: 1.5,
    _element_json: 1,
    _list_json: 1,
    _markdown_table: 2,
    _sorting: 1.5,
    _csv: 1,
    _yaml: 1,
    _case: 1.5,
    _title_case: 0.8,
    _haiku: 1.2,
    _rewrite: 1.5,
}


def generate(rng: random.Random) -> Item:
    fn = weighted(rng, {f.__name__: w for f, w in _KINDS.items()})
    out = {f.__name__: f for f in _KINDS}[fn](rng)
    exact = out[3] if len(out) == 4 else True
    return Item(out[0], out[1], out[2], source="tables", exact=exact)
