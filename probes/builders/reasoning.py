"""Computed arithmetic and word problems: every reference is calculated, never typed in."""

from __future__ import annotations

import math
import random
from fractions import Fraction

from probes.builders._common import (
    FIRST_NAMES,
    WEEKDAYS,
    Item,
    maybe_lead_in,
    pick,
    two_names,
    weighted,
)

_ITEMS = (
    ("notebook", "notebooks"),
    ("pen", "pens"),
    ("apple", "apples"),
    ("ticket", "tickets"),
    ("coffee", "coffees"),
    ("sandwich", "sandwiches"),
    ("book", "books"),
    ("mug", "mugs"),
    ("candle", "candles"),
    ("plant", "plants"),
    ("T-shirt", "T-shirts"),
    ("pizza", "pizzas"),
)
_UNITS = (
    ("kilometres", "metres", 1000),
    ("metres", "centimetres", 100),
    ("hours", "minutes", 60),
    ("minutes", "seconds", 60),
    ("kilograms", "grams", 1000),
    ("litres", "millilitres", 1000),
    ("days", "hours", 24),
    ("weeks", "days", 7),
    ("feet", "inches", 12),
    ("yards", "feet", 3),
)
_ANIMALS = (
    ("chickens", 2),
    ("cows", 4),
    ("spiders", 8),
    ("ducks", 2),
    ("dogs", 4),
    ("ants", 6),
    ("horses", 4),
    ("beetles", 6),
)


def _fmt_money(cents: int) -> str:
    return f"${cents // 100}.{cents % 100:02d}" if cents % 100 else f"${cents // 100}"


def _arithmetic(rng: random.Random) -> tuple[str, str, str]:
    op = pick(rng, "+-*/")
    if op == "+":
        a, b = rng.randint(12, 9999), rng.randint(12, 9999)
        r, sym = a + b, "+"
    elif op == "-":
        a, b = sorted((rng.randint(10, 9999), rng.randint(10, 9999)), reverse=True)
        r, sym = a - b, "-"
    elif op == "*":
        a, b = rng.randint(3, 99), rng.randint(3, 99)
        r, sym = a * b, "×" if rng.random() < 0.5 else "*"
    else:
        b = rng.randint(2, 25)
        r = rng.randint(2, 99)
        a, sym = b * r, "÷" if rng.random() < 0.5 else "/"
    expr = f"{a} {sym} {b}"
    prompt = pick(
        rng,
        (
            f"What is {expr}?",
            f"Calculate {expr}.",
            f"Compute {expr}.",
            f"What does {expr} equal?",
            f"{expr} = ?",
            f"Work out {expr} for me.",
        ),
    )
    return prompt, f"{expr} = {r}.", "arithmetic"


def _order_of_ops(rng: random.Random) -> tuple[str, str, str]:
    a, b, c = rng.randint(2, 20), rng.randint(2, 12), rng.randint(2, 12)
    form = rng.randrange(3)
    if form == 0:
        expr, val, why = f"{a} + {b} × {c}", a + b * c, f"{b} × {c} = {b * c} first"
    elif form == 1:
        expr, val, why = f"({a} + {b}) × {c}", (a + b) * c, f"{a} + {b} = {a + b} first"
    else:
        expr, val, why = f"{a} × {b} - {c}", a * b - c, f"{a} × {b} = {a * b} first"
    prompt = pick(
        rng,
        (
            f"What is {expr}?",
            f"Evaluate {expr}.",
            f"Using the order of operations, compute {expr}.",
        ),
    )
    return prompt, f"{expr} = {val} (compute {why}).", "order_of_operations"


def _percent(rng: random.Random) -> tuple[str, str, str]:
    p = pick(rng, (5, 10, 15, 20, 25, 30, 40, 50, 75))
    base = rng.randint(2, 60) * 20
    val = Fraction(p * base, 100)
    v = str(val.numerator) if val.denominator == 1 else f"{float(val):g}"
    if rng.random() < 0.6:
        prompt = pick(
            rng,
            (
                f"What is {p}% of {base}?",
                f"Calculate {p} percent of {base}.",
                f"How much is {p}% of {base}?",
            ),
        )
        return prompt, f"{p}% of {base} is {v}.", "percentages"
    item = pick(rng, ("jacket", "lamp", "bike", "chair", "backpack", "phone case"))
    price = base
    new = Fraction(price * (100 - p), 100)
    nv = str(new.numerator) if new.denominator == 1 else f"{float(new):.2f}"
    prompt = f"A {item} costs ${price} and is on sale for {p}% off. What is the sale price?"
    return prompt, f"The discount is ${v}, so the sale price is ${nv}.", "percentages"


def _shopping(rng: random.Random) -> tuple[str, str, str]:
    name = pick(rng, FIRST_NAMES)
    sing, plur = pick(rng, _ITEMS)
    n = rng.randint(2, 9)
    price = rng.randint(3, 40) * 25
    total = n * price
    paid = (total // 1000 + 1) * 1000 if total % 1000 else total + 1000
    change = paid - total
    if rng.random() < 0.5:
        prompt = (
            f"{name} buys {n} {plur} at {_fmt_money(price)} each and pays with "
            f"{_fmt_money(paid)}. How much change does {name} get?"
        )
        ref = (
            f"{n} {plur} cost {n} × {_fmt_money(price)} = {_fmt_money(total)}, so the change "
            f"is {_fmt_money(paid)} - {_fmt_money(total)} = {_fmt_money(change)}."
        )
    else:
        prompt = f"If one {sing} costs {_fmt_money(price)}, how much do {n} {plur} cost?"
        ref = f"{n} {plur} cost {n} × {_fmt_money(price)} = {_fmt_money(total)}."
    return prompt, ref, "word_problem"


def _speed(rng: random.Random) -> tuple[str, str, str]:
    speed = rng.randint(4, 24) * 5
    hours = rng.randint(2, 9) * Fraction(1, 2)
    dist = speed * hours
    h = f"{float(hours):g}"
    vehicle = pick(rng, ("train", "car", "bus", "cyclist", "ferry"))
    form = rng.randrange(3)
    if form == 0:
        prompt = f"A {vehicle} travels at {speed} km/h for {h} hours. How far does it go?"
        ref = f"Distance = speed × time = {speed} × {h} = {float(dist):g} km."
    elif form == 1:
        prompt = f"A {vehicle} covers {float(dist):g} km in {h} hours. What is its average speed?"
        ref = f"Speed = distance ÷ time = {float(dist):g} ÷ {h} = {speed} km/h."
    else:
        prompt = (
            f"How long does it take a {vehicle} going {speed} km/h to travel {float(dist):g} km?"
        )
        ref = f"Time = distance ÷ speed = {float(dist):g} ÷ {speed} = {h} hours."
    return prompt, ref, "word_problem"


def _clock(rng: random.Random) -> tuple[str, str, str]:
    start = rng.randint(6 * 4, 20 * 4) * 15
    dur = rng.randint(2, 30) * 5
    end = start + dur

    def hm(m: int) -> str:
        return f"{m // 60:02d}:{m % 60:02d}"

    what = pick(rng, ("A meeting", "A film", "A class", "A train journey", "A workshop"))
    prompt = pick(
        rng,
        (
            f"{what} starts at {hm(start)} and lasts {dur} minutes. When does it end?",
            f"If {what.lower()} begins at {hm(start)} and takes {dur} minutes, what time does it finish?",
        ),
    )
    return prompt, f"It ends at {hm(end)} ({hm(start)} plus {dur} minutes).", "time"


def _weekday(rng: random.Random) -> tuple[str, str, str]:
    d = rng.randrange(7)
    n = rng.randint(2, 60)
    later = rng.random() < 0.7
    target = WEEKDAYS[(d + n) % 7] if later else WEEKDAYS[(d - n) % 7]
    if later:
        prompt = f"If today is {WEEKDAYS[d]}, what day of the week will it be in {n} days?"
        ref = f"{n} days after {WEEKDAYS[d]} is a {target}, since {n} mod 7 = {n % 7}."
    else:
        prompt = f"Today is {WEEKDAYS[d]}. What day of the week was it {n} days ago?"
        ref = f"{n} days before {WEEKDAYS[d]} was a {target}, since {n} mod 7 = {n % 7}."
    return prompt, ref, "calendar"


def _sequence(rng: random.Random) -> tuple[str, str, str]:
    if rng.random() < 0.55:
        a, d = rng.randint(1, 30), rng.randint(2, 15) * pick(rng, (1, 1, -1))
        seq = [a + i * d for i in range(5)]
        nxt, rule = a + 5 * d, f"each term {'adds' if d > 0 else 'subtracts'} {abs(d)}"
    else:
        a, r = rng.randint(1, 6), rng.randint(2, 4)
        seq = [a * r**i for i in range(5)]
        nxt, rule = a * r**5, f"each term is multiplied by {r}"
    s = ", ".join(map(str, seq))
    prompt = pick(
        rng,
        (
            f"What is the next number in the sequence {s}, ...?",
            f"Continue the pattern: {s}, ?",
            f"Find the next term: {s}",
        ),
    )
    return prompt, f"The next number is {nxt}, because {rule}.", "sequence"


def _logic(rng: random.Random) -> tuple[str, str, str]:
    names = rng.sample(FIRST_NAMES, 3)
    adj, sup_hi, sup_lo = pick(
        rng,
        (
            ("taller", "tallest", "shortest"),
            ("older", "oldest", "youngest"),
            ("faster", "fastest", "slowest"),
            ("heavier", "heaviest", "lightest"),
        ),
    )
    # names[0] > names[1] > names[2]
    facts = [f"{names[0]} is {adj} than {names[1]}", f"{names[1]} is {adj} than {names[2]}"]
    rng.shuffle(facts)
    ask_hi = rng.random() < 0.5
    who = names[0] if ask_hi else names[2]
    sup = sup_hi if ask_hi else sup_lo
    prompt = f"{facts[0]}, and {facts[1]}. Who is the {sup}?"
    return prompt, f"{who} is the {sup}.", "logic"


def _legs(rng: random.Random) -> tuple[str, str, str]:
    (a, la), (b, lb) = rng.sample(_ANIMALS, 2)
    na, nb = rng.randint(2, 15), rng.randint(2, 15)
    total = na * la + nb * lb
    prompt = f"A farm has {na} {a} and {nb} {b}. How many legs are there in total?"
    ref = f"{na} × {la} + {nb} × {lb} = {total} legs."
    return prompt, ref, "counting"


def _average(rng: random.Random) -> tuple[str, str, str]:
    n = rng.randint(3, 6)
    vals = [rng.randint(40, 100) for _ in range(n)]
    # Make the mean a whole number so the answer stays short.
    vals[-1] += (-sum(vals)) % n
    mean = sum(vals) // n
    name = pick(rng, FIRST_NAMES)
    s = ", ".join(map(str, vals))
    prompt = pick(
        rng,
        (
            f"{name} scored {s} on {n} tests. What is the average score?",
            f"What is the mean of {s}?",
        ),
    )
    return prompt, f"The sum is {sum(vals)}, and {sum(vals)} ÷ {n} = {mean}.", "average"


def _equation(rng: random.Random) -> tuple[str, str, str]:
    a, x, b = rng.randint(2, 12), rng.randint(-10, 20), rng.randint(1, 40)
    c = a * x + b
    prompt = pick(
        rng,
        (
            f"Solve for x: {a}x + {b} = {c}",
            f"Find x if {a}x + {b} = {c}.",
            f"What value of x satisfies {a}x + {b} = {c}?",
        ),
    )
    return prompt, f"Subtract {b} and divide by {a}: x = ({c} - {b}) / {a} = {x}.", "algebra"


def _prime(rng: random.Random) -> tuple[str, str, str]:
    n = rng.randint(11, 400)
    div = next((d for d in range(2, math.isqrt(n) + 1) if n % d == 0), None)
    prompt = pick(
        rng, (f"Is {n} a prime number?", f"Is {n} prime?", f"Tell me whether {n} is prime.")
    )
    if div is None:
        ref = f"Yes, {n} is prime: it has no divisors other than 1 and itself."
    else:
        ref = f"No, {n} is not prime, because {n} = {div} × {n // div}."
    return prompt, ref, "number_theory"


def _gcd(rng: random.Random) -> tuple[str, str, str]:
    g = rng.randint(2, 12)
    a, b = g * rng.randint(2, 15), g * rng.randint(2, 15)
    if a == b:
        b += g
    if rng.random() < 0.5:
        return (
            f"What is the greatest common divisor of {a} and {b}?",
            f"The greatest common divisor of {a} and {b} is {math.gcd(a, b)}.",
            "number_theory",
        )
    lcm = a * b // math.gcd(a, b)
    return (
        f"What is the least common multiple of {a} and {b}?",
        f"The least common multiple of {a} and {b} is {lcm}.",
        "number_theory",
    )


def _geometry(rng: random.Random) -> tuple[str, str, str]:
    w, h = rng.randint(2, 30), rng.randint(2, 30)
    form = rng.randrange(3)
    if form == 0:
        return (
            f"What is the area of a rectangle that is {w} cm wide and {h} cm long?",
            f"Area = {w} × {h} = {w * h} square centimetres.",
            "geometry",
        )
    if form == 1:
        return (
            f"What is the perimeter of a rectangle with sides {w} m and {h} m?",
            f"Perimeter = 2 × ({w} + {h}) = {2 * (w + h)} metres.",
            "geometry",
        )
    return (
        f"A square has sides of {w} cm. What is its area?",
        f"Area = {w} × {w} = {w * w} square centimetres.",
        "geometry",
    )


def _units(rng: random.Random) -> tuple[str, str, str]:
    big, small, f = pick(rng, _UNITS)
    n = rng.randint(2, 48)
    if rng.random() < 0.6:
        return (
            pick(rng, (f"How many {small} are in {n} {big}?", f"Convert {n} {big} to {small}.")),
            f"{n} {big} is {n * f} {small}.",
            "unit_conversion",
        )
    return (
        f"How many {big} is {n * f} {small}?",
        f"{n * f} {small} is {n} {big}.",
        "unit_conversion",
    )


def _fraction(rng: random.Random) -> tuple[str, str, str]:
    a = Fraction(rng.randint(1, 7), rng.randint(2, 9))
    b = Fraction(rng.randint(1, 7), rng.randint(2, 9))
    op = pick(rng, "+-")
    if op == "-" and b > a:
        a, b = b, a
    r = a + b if op == "+" else a - b
    prompt = f"What is {a} {op} {b}? Give the answer as a fraction in lowest terms."
    return prompt, f"{a} {op} {b} = {r}.", "fractions"


def _age(rng: random.Random) -> tuple[str, str, str]:
    a, b = two_names(rng)
    age_b = rng.randint(4, 30)
    diff = rng.randint(2, 25)
    years = rng.randint(2, 15)
    prompt = (
        f"{a} is {diff} years older than {b}. {b} is {age_b}. How old will {a} be in {years} years?"
    )
    return (
        prompt,
        f"{a} is {age_b + diff} now, so in {years} years {a} will be {age_b + diff + years}.",
        "word_problem",
    )


_KINDS = {
    "arithmetic": (_arithmetic, 3),
    "order": (_order_of_ops, 1.2),
    "percent": (_percent, 1.5),
    "shopping": (_shopping, 1.5),
    "speed": (_speed, 1.2),
    "clock": (_clock, 1),
    "weekday": (_weekday, 1),
    "sequence": (_sequence, 1.2),
    "logic": (_logic, 1),
    "legs": (_legs, 0.8),
    "average": (_average, 0.8),
    "equation": (_equation, 1.2),
    "prime": (_prime, 0.8),
    "gcd": (_gcd, 0.8),
    "geometry": (_geometry, 1),
    "units": (_units, 1),
    "fraction": (_fraction, 0.8),
    "age": (_age, 0.8),
}


def generate(rng: random.Random) -> Item:
    kind = weighted(rng, {k: w for k, (_, w) in _KINDS.items()})
    prompt, ref, sub = _KINDS[kind][0](rng)
    return Item(maybe_lead_in(rng, prompt, p=0.1), ref, sub, source="computed")
