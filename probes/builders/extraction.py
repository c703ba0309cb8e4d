"""Extraction from short generated passages (emails, news, invoices, bios, listings).

Every fact in a passage is drawn first and the passage is written from it, so the
reference answer is known exactly (totals and ages are computed).
"""

from __future__ import annotations

import datetime as dt
import random

from probes.builders._common import (
    CITIES,
    FIRST_NAMES,
    LAST_NAMES,
    MONTHS,
    WEEKDAYS,
    Item,
    join_and,
    person,
    pick,
    weighted,
)

_CO_PREFIX = (
    "Blue",
    "North",
    "Bright",
    "Silver",
    "Green",
    "Quantum",
    "Harbor",
    "Summit",
    "Pioneer",
    "Cedar",
    "Lumen",
    "Atlas",
    "Nimbus",
    "Orchid",
    "Granite",
)
_CO_SUFFIX = {
    "Labs": "biotech",
    "Systems": "software",
    "Foods": "food",
    "Logistics": "logistics",
    "Energy": "renewable energy",
    "Robotics": "robotics",
    "Analytics": "data",
    "Textiles": "clothing",
}
_PROJECTS = (
    "budget",
    "website redesign",
    "quarterly sales",
    "product launch",
    "hiring plan",
    "security audit",
    "marketing campaign",
    "office move",
)
_BRING = (
    "your laptop",
    "the latest figures",
    "printed agendas",
    "your ideas for next quarter",
    "the signed contracts",
    "questions for the panel",
)
_GOODS = (
    ("desk lamp", 35),
    ("office chair", 120),
    ("monitor", 180),
    ("keyboard", 45),
    ("notebook", 4),
    ("printer cartridge", 28),
    ("USB cable", 9),
    ("webcam", 60),
)
_SUBJECTS = (
    "physics",
    "economics",
    "architecture",
    "biology",
    "computer science",
    "history",
    "mathematics",
    "chemistry",
    "law",
    "music",
)
_JOBS = (
    "software engineer",
    "teacher",
    "journalist",
    "nurse",
    "accountant",
    "chef",
    "data analyst",
    "architect",
)
_GADGETS = (
    "wireless speaker",
    "e-reader",
    "smartwatch",
    "drone",
    "electric toothbrush",
    "portable projector",
    "noise-cancelling headset",
)
_ASK = (
    "Read the text below and answer: {q}\n\n{p}",
    "{p}\n\n{q}",
    "From the following passage, {ql}\n\n{p}",
    "Text: {p}\nQuestion: {q}",
)


def _company(rng: random.Random) -> tuple[str, str]:
    suffix = pick(rng, tuple(_CO_SUFFIX))
    return f"{pick(rng, _CO_PREFIX)} {suffix}", _CO_SUFFIX[suffix]


def _date(rng: random.Random, year: int | None = None) -> dt.date:
    return dt.date(year or rng.randint(2015, 2025), rng.randint(1, 12), rng.randint(1, 28))


def _fmt_date(d: dt.date, weekday: bool = False) -> str:
    s = f"{d.day} {MONTHS[d.month - 1]} {d.year}"
    return f"{WEEKDAYS[d.weekday()]}, {s}" if weekday else s


def _ask(rng: random.Random, passage: str, question: str) -> str:
    ql = question[:1].lower() + question[1:]
    return pick(rng, _ASK).format(p=passage, q=question, ql=ql)


def _email(rng: random.Random) -> tuple[str, str, str]:
    sender, proj = pick(rng, FIRST_NAMES), pick(rng, _PROJECTS)
    day = _date(rng)
    time = f"{rng.randint(8, 17)}:{pick(rng, ('00', '15', '30', '45'))}"
    room, bring = (
        f"{pick(rng, 'ABCDE')}{rng.randint(1, 4)}{rng.randint(0, 2)}{rng.randint(1, 9)}",
        pick(rng, _BRING),
    )
    passage = (
        f"Hi team, the {proj} review has moved to {_fmt_date(day, True)} at {time} in "
        f"room {room}. Please bring {bring}. Thanks, {sender}"
    )
    field = pick(rng, ("date", "time", "room", "sender", "bring"))
    q, ref = {
        "date": ("On what date is the review?", f"The review is on {_fmt_date(day, True)}."),
        "time": ("What time does the review start?", f"The review starts at {time}."),
        "room": ("Which room is the review in?", f"The review is in room {room}."),
        "sender": ("Who sent this message?", f"The message was sent by {sender}."),
        "bring": ("What should attendees bring?", f"Attendees should bring {bring}."),
    }[field]
    return _ask(rng, passage, q), ref, f"email:{field}"


def _news(rng: random.Random) -> tuple[str, str, str]:
    (co, industry), city, ceo = _company(rng), pick(rng, CITIES), person(rng)
    day, hires, money = _date(rng), rng.randint(2, 60) * 10, rng.randint(2, 95)
    passage = (
        f"{co}, a {industry} company based in {city}, announced on {_fmt_date(day)} that "
        f"it will hire {hires} new employees. Chief executive {ceo} said the expansion "
        f"would cost about {money} million dollars."
    )
    field = pick(rng, ("company", "city", "date", "hires", "ceo", "cost"))
    q, ref = {
        "company": ("Which company made the announcement?", f"The company is {co}."),
        "city": ("Where is the company based?", f"{co} is based in {city}."),
        "date": ("When was the announcement made?", f"It was announced on {_fmt_date(day)}."),
        "hires": (
            "How many new employees will be hired?",
            f"{co} will hire {hires} new employees.",
        ),
        "ceo": ("Who is the chief executive?", f"The chief executive is {ceo}."),
        "cost": (
            "How much will the expansion cost?",
            f"The expansion will cost about {money} million dollars.",
        ),
    }[field]
    return _ask(rng, passage, q), ref, f"news:{field}"


def _invoice(rng: random.Random) -> tuple[str, str, str]:
    (co, _), customer = _company(rng), person(rng)
    num = rng.randint(1000, 99999)
    (g1, p1), (g2, p2) = rng.sample(_GOODS, 2)
    n1, n2 = rng.randint(1, 6), rng.randint(1, 6)
    due = _date(rng)
    total = n1 * p1 + n2 * p2
    passage = (
        f"Invoice #{num} from {co} to {customer}. Items: {n1} x {g1} at ${p1} each, "
        f"{n2} x {g2} at ${p2} each. Payment due by {_fmt_date(due)}."
    )
    field = pick(rng, ("total", "total", "number", "due", "customer"))
    q, ref = {
        "total": (
            "What is the total amount of the invoice?",
            f"The total is ${total} ({n1} x ${p1} + {n2} x ${p2}).",
        ),
        "number": ("What is the invoice number?", f"The invoice number is {num}."),
        "due": ("When is payment due?", f"Payment is due by {_fmt_date(due)}."),
        "customer": (
            "Who is the invoice addressed to?",
            f"The invoice is addressed to {customer}.",
        ),
    }[field]
    return _ask(rng, passage, q), ref, f"invoice:{field}"


def _bio(rng: random.Random) -> tuple[str, str, str]:
    first, last = pick(rng, FIRST_NAMES), pick(rng, LAST_NAMES)
    born, city, uni = rng.randint(1950, 1995), pick(rng, CITIES), pick(rng, CITIES)
    subject, job, years = pick(rng, _SUBJECTS), pick(rng, _JOBS), rng.randint(2, 15)
    co, _ = _company(rng)
    founded = born + rng.randint(24, 45)
    passage = (
        f"{first} {last} was born in {city} in {born}. After studying {subject} in {uni}, "
        f"{first} worked as a {job} for {years} years before founding {co} in {founded}."
    )
    field = pick(rng, ("born", "city", "subject", "company", "age"))
    q, ref = {
        "born": (f"In what year was {first} {last} born?", f"{first} {last} was born in {born}."),
        "city": (f"Where was {first} born?", f"{first} was born in {city}."),
        "subject": (f"What did {first} study?", f"{first} studied {subject}."),
        "company": (f"Which company did {first} found?", f"{first} founded {co}."),
        "age": (
            f"How old was {first} when founding {co}?",
            f"{first} was about {founded - born} years old ({founded} - {born}).",
        ),
    }[field]
    return _ask(rng, passage, q), ref, f"bio:{field}"


def _listing(rng: random.Random) -> tuple[str, str, str]:
    gadget = pick(rng, _GADGETS)
    weight, hours, price = rng.randint(12, 95) * 10, rng.randint(4, 40), rng.randint(20, 400)
    color = pick(rng, ("black", "white", "silver", "navy blue", "forest green"))
    passage = (
        f"This {color} {gadget} weighs {weight} grams, offers up to {hours} hours of "
        f"battery life and costs ${price}. Free delivery within five working days."
    )
    field = pick(rng, ("weight", "battery", "price", "color"))
    q, ref = {
        "weight": ("How much does it weigh?", f"It weighs {weight} grams."),
        "battery": ("What is the battery life?", f"The battery lasts up to {hours} hours."),
        "price": ("How much does it cost?", f"It costs ${price}."),
        "color": ("What colour is the product?", f"It is {color}."),
    }[field]
    return _ask(rng, passage, q), ref, f"listing:{field}"


def _emails_list(rng: random.Random) -> tuple[str, str, str]:
    names = rng.sample(FIRST_NAMES, rng.randint(2, 3))
    domains = ("example.com", "mail.org", "company.net", "uni.edu")
    addrs = [f"{n.lower()}.{pick(rng, LAST_NAMES).lower()}@{pick(rng, domains)}" for n in names]
    addrs = [a.replace("ü", "u") for a in addrs]
    parts = [f"{n} ({a})" for n, a in zip(names, addrs, strict=True)]
    passage = (
        f"Thanks for organising the workshop. Please add {join_and(parts)} to the "
        f"mailing list before Friday."
    )
    q = pick(rng, ("Extract all the email addresses.", "List every email address in the text."))
    return _ask(rng, passage, q), ", ".join(addrs), "list:emails"


def _cities_list(rng: random.Random) -> tuple[str, str, str]:
    cities = rng.sample(CITIES, rng.randint(2, 4))
    who = pick(rng, FIRST_NAMES)
    passage = (
        f"This summer {who} is touring with a small band. The tour starts in "
        f"{cities[0]}"
        + "".join(f", then goes to {c}" for c in cities[1:-1])
        + (f", and ends in {cities[-1]}." if len(cities) > 1 else ".")
    )
    q = pick(rng, ("List all the cities mentioned, in order.", "Which cities does the tour visit?"))
    return _ask(rng, passage, q), ", ".join(cities), "list:cities"


def _contact(rng: random.Random) -> tuple[str, str, str]:
    name = person(rng)
    phone = f"+1 {rng.randint(200, 989)}-{rng.randint(200, 989)}-{rng.randint(1000, 9999)}"
    passage = (
        f"For questions about your booking, contact {name} on {phone} between 9am and "
        f"5pm, Monday to Friday."
    )
    field = pick(rng, ("phone", "name"))
    if field == "phone":
        return (
            _ask(rng, passage, "What is the phone number?"),
            f"The phone number is {phone}.",
            "contact:phone",
        )
    return (
        _ask(rng, passage, "Who should I contact?"),
        f"You should contact {name}.",
        "contact:name",
    )


_KINDS = {
    _email: 2,
    _news: 2,
    _invoice: 1.8,
    _bio: 1.8,
    _listing: 1.2,
    _emails_list: 0.8,
    _cities_list: 0.7,
    _contact: 0.8,
}


def generate(rng: random.Random) -> Item:
    name = weighted(rng, {f.__name__: w for f, w in _KINDS.items()})
    prompt, ref, sub = {f.__name__: f for f in _KINDS}[name](rng)
    return Item(prompt, ref, sub, source="generated")
