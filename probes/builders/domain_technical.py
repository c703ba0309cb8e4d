"""Programming questions: Python stdlib, evaluated snippets, Unix, git, HTTP, SQL, regex.

Descriptions come from bundled tables (``python_stdlib.tsv`` etc.) rather than live
docstrings, which differ between Python versions; snippet results and regex matches are
computed at build time with constructs whose behaviour is stable across versions.
"""

from __future__ import annotations

import random
import re

from probes.builders._common import Item, maybe_lead_in, pick, table, weighted

_SQL_CONCEPTS = (
    ("DISTINCT", "removes duplicate rows from the result of a SELECT"),
    (
        "GROUP BY",
        "groups rows that share values so aggregates such as COUNT or SUM apply per group",
    ),
    ("HAVING", "filters groups after GROUP BY, whereas WHERE filters rows before grouping"),
    (
        "LEFT JOIN",
        "returns every row of the left table plus matching rows of the right table, "
        "with NULLs where there is no match",
    ),
    ("INNER JOIN", "returns only the rows that have matching values in both tables"),
    ("PRIMARY KEY", "is a column or set of columns that uniquely identifies each row of a table"),
    (
        "FOREIGN KEY",
        "is a column that references the primary key of another table, enforcing "
        "referential integrity",
    ),
    (
        "an index",
        "is a data structure that speeds up lookups on a column at the cost of extra "
        "storage and slower writes",
    ),
    ("ORDER BY", "sorts the result rows by one or more columns, ascending by default"),
    ("LIMIT", "caps the number of rows a query returns"),
    ("COALESCE", "returns the first non-NULL value among its arguments"),
    ("UNION", "combines the results of two SELECT statements and removes duplicate rows"),
    ("a transaction", "groups statements so that they either all succeed or all fail together"),
)
_REGEX_TASKS = (
    ("a 5-digit US ZIP code", r"^\d{5}$"),
    ("one or more digits", r"\d+"),
    ("a hex colour code such as #1a2b3c", r"^#[0-9a-fA-F]{6}$"),
    ("a date in YYYY-MM-DD format", r"^\d{4}-\d{2}-\d{2}$"),
    ("a word that starts with a capital letter", r"\b[A-Z][a-z]*\b"),
    ("an empty line", r"^$"),
    ("trailing whitespace at the end of a line", r"\s+$"),
    ("an integer with an optional minus sign", r"^-?\d+$"),
    ("a phone number formatted like 555-123-4567", r"^\d{3}-\d{3}-\d{4}$"),
    ("a time in 24-hour HH:MM format", r"^([01]\d|2[0-3]):[0-5]\d$"),
    ("any single lowercase vowel", r"[aeiou]"),
    ("the word cat as a whole word", r"\bcat\b"),
    ("a string made only of letters", r"^[A-Za-z]+$"),
    ("a simple email address", r"^[\w.+-]+@[\w-]+\.[\w.-]+$"),
    ("a number with exactly two decimal places, such as 3.14", r"^\d+\.\d{2}$"),
)
_REGEX_TOKENS = (
    (r"\d", "matches any digit"),
    (r"\w", "matches a word character: a letter, digit or underscore"),
    (r"\s", "matches any whitespace character"),
    (".", "matches any character except a newline"),
    ("*", "repeats the previous element zero or more times"),
    ("+", "repeats the previous element one or more times"),
    ("?", "makes the previous element optional"),
    ("^", "anchors the match at the start of the string"),
    ("$", "anchors the match at the end of the string"),
    (r"\b", "matches a word boundary"),
    ("{3}", "repeats the previous element exactly three times"),
    ("|", "means alternation: match either the left or the right side"),
    ("[^0-9]", "matches any single character that is not a digit"),
)
_MATCH_CASES = (
    (r"^\d{3}-\d{4}$", ("555-1234", "5551234", "55-12345", "123-4567")),
    (r"^[A-Z][a-z]+$", ("Hello", "hello", "HELLO", "Paris")),
    (r"^#[0-9a-fA-F]{6}$", ("#1a2b3c", "#12345", "#GGGGGG", "#FFFFFF")),
    (r"^\d{4}-\d{2}-\d{2}$", ("2024-01-15", "24-01-15", "2024/01/15", "1999-12-31")),
    (r"colou?r", ("color", "colour", "colr", "colouur")),
    (r"^a.c$", ("abc", "a-c", "ac", "abbc")),
    (r"^\w+@\w+\.com$", ("sam@mail.com", "sam@mail.org", "sam.mail.com", "x@y.com")),
    (r"^-?\d+$", ("-42", "42", "4.2", "--4")),
    (r"^(ab)+$", ("abab", "aba", "ab", "ba")),
    (r"\bcat\b", ("the cat sat", "concatenate", "cat", "cats")),
)
_TABLES = {
    "employees": "employees(id, name, department, salary, hire_date)",
    "products": "products(id, name, category, price, stock)",
    "orders": "orders(id, customer_id, amount, status, order_date)",
    "customers": "customers(id, name, email, city)",
}
_DEPTS = ("Sales", "Engineering", "Marketing", "Support", "Finance", "Legal")
_CATEGORIES = ("books", "toys", "garden", "kitchen", "electronics", "sports")
_STATUSES = ("shipped", "pending", "cancelled", "delivered")


def _stdlib(rng: random.Random) -> tuple[str, str, str]:
    row = pick(rng, table("python_stdlib.tsv"))
    name = row["name"]
    if name.rpartition(".")[0] == row["module"] and rng.random() < 0.35:
        short = name.rsplit(".", 1)[1]
        prompt = pick(
            rng,
            (
                f"Which Python standard library module provides `{short}`?",
                f"In Python, which module do I import to use `{short}`?",
            ),
        )
        return prompt, f"`{short}` is in the `{row['module']}` module.", "python_modules"
    prompt = pick(
        rng,
        (
            f"What does `{name}` do in Python?",
            f"In Python, what is `{name}` for?",
            f"Explain Python's `{name}` in one sentence.",
            f"Briefly, what does `{name}` do?",
        ),
    )
    return prompt, f"`{name}` {row['summary']}", "python_stdlib"


def _snippet(rng: random.Random) -> str:
    words = ("apple", "python", "river", "cloud", "stone", "delta", "pixel", "lemon")
    w = pick(rng, words)
    nums = [rng.randint(0, 20) for _ in range(rng.randint(3, 5))]
    a, b = rng.randint(7, 60), rng.randint(2, 9)
    forms = (
        f"sorted({nums})",
        f"len('{w}')",
        f"'{w}'.upper()",
        f"'{w}'.capitalize()",
        f"'{w}'[1:4]",
        f"'{w}'[::-1]",
        f"{nums}[-1]",
        f"sum({nums})",
        f"max({nums})",
        f"{a} // {b}",
        f"{a} % {b}",
        f"{b} ** {rng.randint(2, 4)}",
        f"divmod({a}, {b})",
        f"[x * {b} for x in range({rng.randint(2, 5)})]",
        f"list(range({b}, {a}, {b}))",
        f"'{w}' * {rng.randint(2, 3)}",
        f"'{'-,_'[rng.randrange(3)]}'.join({list(w[:3])})",
        f"'{w[0]},{w[1]},{w[2]}'.split(',')",
        f"len(set({nums + nums[:2]}))",
        f"'{w[rng.randrange(len(w))]}' in '{w}'",
        f"'{w}'.count('{w[1]}')",
        f"'{w}'.find('{w[2]}')",
        f"int('{a}') + {b}",
        f"str({a}) + '{b}'",
        f"bool({pick(rng, ('[]', '0', repr(w), '[0]', repr(''), 'None'))})",
        f"list(zip({nums[:2]}, '{w[:2]}'))",
        f"{nums}[{b % 3}:]",
        f"sorted('{w}')",
        f"abs({-a})",
        f"{a} / 4",
        f"{{'a': {a}, 'b': {b}}}.get('c', 0)",
        f"list(enumerate('{w[:3]}'))",
        f"' {w} '.strip()",
        f"type({pick(rng, ('3.0', '3', repr(w), '[]', '{}'))}).__name__",
    )
    return pick(rng, forms)


_SAFE_BUILTINS = {
    f.__name__: f
    for f in (
        sorted,
        len,
        sum,
        max,
        divmod,
        range,
        list,
        set,
        int,
        str,
        bool,
        zip,
        abs,
        enumerate,
        type,
    )
}


def _python_eval(rng: random.Random) -> tuple[str, str, str]:
    expr = _snippet(rng)
    value = eval(expr, {"__builtins__": _SAFE_BUILTINS}, {})  # noqa: S307 - our own literal
    if rng.random() < 0.3 and isinstance(value, (str, int, bool)):
        prompt = f"What does `print({expr})` output in Python?"
        return prompt, f"It prints `{value}`.", "python_eval"
    prompt = pick(
        rng,
        (
            f"What does `{expr}` evaluate to in Python?",
            f"In Python, what is the result of `{expr}`?",
            f"What value does the Python expression `{expr}` produce?",
        ),
    )
    return prompt, f"`{expr}` evaluates to `{value!r}`.", "python_eval"


def _base_verb(phrase: str) -> str:
    """'searches text' -> 'search text': turn a description into an instruction."""
    verb, _, rest = phrase.partition(" ")
    if verb.endswith("ies"):
        verb = verb[:-3] + "y"
    elif verb.endswith(("ches", "shes", "sses", "xes")):
        verb = verb[:-2]
    elif verb.endswith("s"):
        verb = verb[:-1]
    for later in ("extracts", "updates"):
        rest = rest.replace(f" and {later}", f" and {later[:-1]}")
        rest = rest.replace(f" or {later}", f" or {later[:-1]}")
    return f"{verb} {rest}"


def _unix(rng: random.Random) -> tuple[str, str, str]:
    if rng.random() < 0.35:
        row = pick(rng, table("unix_flags.tsv"))
        prompt = pick(
            rng,
            (
                f"What does `{row['command']}` do?",
                f"In a Linux shell, what does the `{row['command']}` option do?",
                f"Explain the command `{row['command']}`.",
            ),
        )
        return prompt, f"`{row['command']}` {row['meaning']}.", "unix"
    row = pick(rng, table("unix.tsv"))
    cmd, purpose = row["command"], row["purpose"]
    if rng.random() < 0.5:
        prompt = pick(
            rng,
            (
                f"What does the `{cmd}` command do?",
                f"What is `{cmd}` used for in Linux?",
                f"Explain the Unix command `{cmd}` briefly.",
            ),
        )
        return prompt, f"`{cmd}` {purpose}.", "unix"
    ask = _base_verb(purpose)
    prompt = pick(
        rng,
        (
            f"Which Unix command do I use to {ask}?",
            f"What Linux command {purpose}?",
            f"In a terminal, how do I {ask}?",
        ),
    )
    return prompt, f"Use `{cmd}`: it {purpose}.", "unix"


def _git(rng: random.Random) -> tuple[str, str, str]:
    row = pick(rng, table("git.tsv"))
    prompt = pick(
        rng,
        (
            f"What does `{row['command']}` do?",
            f"When would I use `{row['command']}`?",
            f"Explain `{row['command']}` in one sentence.",
        ),
    )
    return prompt, f"`{row['command']}` {row['purpose']}.", "git"


def _http(rng: random.Random) -> tuple[str, str, str]:
    row = pick(rng, table("http.tsv"))
    if rng.random() < 0.7:
        prompt = pick(
            rng,
            (
                f"What does HTTP status code {row['code']} mean?",
                f"My server returned a {row['code']}. What does that mean?",
                f"What is an HTTP {row['code']} response?",
            ),
        )
    else:
        prompt = f"Which HTTP status code means {row['phrase']}?"
    return prompt, f"{row['code']} {row['phrase']} means {row['meaning']}.", "http"


def _complexity(rng: random.Random) -> tuple[str, str, str]:
    row = pick(rng, table("complexity.tsv"))
    prompt = pick(
        rng,
        (
            f"What is the time complexity of {row['operation']}?",
            f"In big-O notation, how expensive is {row['operation']}?",
        ),
    )
    return (
        prompt,
        f"{row['operation'][:1].upper()}{row['operation'][1:]} is {row['complexity']}.",
        "complexity",
    )


def _sql(rng: random.Random) -> tuple[str, str, str]:
    if rng.random() < 0.25:
        kw, meaning = pick(rng, _SQL_CONCEPTS)
        prompt = pick(rng, (f"What does {kw} do in SQL?", f"Explain {kw} in SQL briefly."))
        return prompt, f"In SQL, {kw} {meaning}.", "sql_concepts"
    form = rng.randrange(8)
    if form == 0:
        d = pick(rng, _DEPTS)
        task, tbl = f"returns the names of all employees in the {d} department", "employees"
        q = f"SELECT name FROM employees WHERE department = '{d}';"
    elif form == 1:
        x = rng.randint(2, 40) * 5
        task, tbl = f"lists the names of products that cost more than {x}", "products"
        q = f"SELECT name FROM products WHERE price > {x};"
    elif form == 2:
        s = pick(rng, _STATUSES)
        task, tbl = f"counts the orders whose status is '{s}'", "orders"
        q = f"SELECT COUNT(*) FROM orders WHERE status = '{s}';"
    elif form == 3:
        task, tbl = "returns the number of employees in each department", "employees"
        q = "SELECT department, COUNT(*) FROM employees GROUP BY department;"
    elif form == 4:
        agg = pick(rng, ("AVG", "MAX", "MIN", "SUM"))
        word = {"AVG": "average", "MAX": "highest", "MIN": "lowest", "SUM": "total"}[agg]
        task, tbl = f"shows the {word} salary in each department", "employees"
        q = f"SELECT department, {agg}(salary) FROM employees GROUP BY department;"
    elif form == 5:
        n = rng.randint(3, 10)
        task, tbl = f"returns the {n} most expensive products with their prices", "products"
        q = f"SELECT name, price FROM products ORDER BY price DESC LIMIT {n};"
    elif form == 6:
        c = pick(rng, _CATEGORIES)
        task, tbl = f"deletes every product in the '{c}' category", "products"
        q = f"DELETE FROM products WHERE category = '{c}';"
    else:
        task, tbl = "lists each order's amount together with the customer's name", "orders"
        q = (
            "SELECT customers.name, orders.amount FROM orders "
            "JOIN customers ON orders.customer_id = customers.id;"
        )
    schema = _TABLES[tbl] + (" and " + _TABLES["customers"] if "customers" in q else "")
    prompt = pick(
        rng,
        (
            f"Given the table {schema}, write a SQL query that {task}.",
            f"Write a SQL query that {task}. The table is {schema}.",
            f"SQL question: with {schema}, how do I write a query that {task}?",
        ),
    )
    return prompt, q, "sql"


def _regex(rng: random.Random) -> tuple[str, str, str]:
    form = rng.randrange(3)
    if form == 0:
        task, pat = pick(rng, _REGEX_TASKS)
        prompt = pick(
            rng,
            (f"Write a regular expression that matches {task}.", f"Give me a regex for {task}."),
        )
        return prompt, f"`{pat}` matches {task}.", "regex"
    if form == 1:
        tok, meaning = pick(rng, _REGEX_TOKENS)
        prompt = pick(
            rng,
            (
                f"What does `{tok}` mean in a regular expression?",
                f"In regex syntax, what does `{tok}` do?",
            ),
        )
        return prompt, f"In a regular expression, `{tok}` {meaning}.", "regex"
    pat, cases = pick(rng, _MATCH_CASES)
    s = pick(rng, cases)
    hit = re.search(pat, s) is not None
    prompt = pick(
        rng,
        (
            f"Does the regex `{pat}` match the string '{s}'?",
            f"Will Python's re.search(r'{pat}', '{s}') find a match?",
        ),
    )
    ans = "Yes" if hit else "No"
    return prompt, f"{ans}, `{pat}` {'matches' if hit else 'does not match'} '{s}'.", "regex"


def _bases(rng: random.Random) -> tuple[str, str, str]:
    n = rng.randint(5, 255)
    form = rng.randrange(4)
    if form == 0:
        return f"Convert {n} to binary.", f"{n} in binary is {n:b}.", "number_bases"
    if form == 1:
        return f"What is {n} in hexadecimal?", f"{n} in hexadecimal is 0x{n:X}.", "number_bases"
    if form == 2:
        return (
            f"What is the binary number {n:b} in decimal?",
            f"Binary {n:b} is {n} in decimal.",
            "number_bases",
        )
    return f"What is 0x{n:X} in decimal?", f"0x{n:X} is {n} in decimal.", "number_bases"


_KINDS = {
    _stdlib: 3,
    _python_eval: 2.5,
    _unix: 1.5,
    _git: 1,
    _http: 1,
    _complexity: 0.7,
    _sql: 1.8,
    _regex: 1.3,
    _bases: 0.8,
}


def generate(rng: random.Random) -> Item:
    name = weighted(rng, {f.__name__: w for f, w in _KINDS.items()})
    prompt, ref, sub = {f.__name__: f for f in _KINDS}[name](rng)
    source = "python-docs" if sub.startswith("python_") and sub != "python_eval" else "generated"
    return Item(maybe_lead_in(rng, prompt, p=0.15), ref, sub, source=source)
