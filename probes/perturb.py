"""Robustness perturbations: the same request, written differently.

A good model answers a perturbed prompt the way it answers the original, so the reference
of a perturbed item is its base item's reference. Code spans (`...`) and quoted strings
are never touched, and typos skip words containing digits, so the perturbation cannot
change the correct answer.
"""

from __future__ import annotations

import random
import re

PERTURBATIONS = ("typos", "casing", "whitespace", "paraphrase", "distractor")

_PROTECTED = re.compile(r"`[^`]*`|\"[^\"\n]*\"|(?<![A-Za-z])'[^'\n]*'(?![A-Za-z])|<<[^>]*>>")
_WORD = re.compile(r"[A-Za-z]{4,}")
_KEYBOARD = {
    "a": "qsz",
    "b": "vgn",
    "c": "xdv",
    "d": "sfe",
    "e": "wrd",
    "f": "dgr",
    "g": "fht",
    "h": "gjy",
    "i": "uok",
    "j": "hku",
    "k": "jli",
    "l": "kop",
    "m": "nj",
    "n": "bmh",
    "o": "ipl",
    "p": "ol",
    "q": "wa",
    "r": "etf",
    "s": "adw",
    "t": "ryg",
    "u": "yij",
    "v": "cbf",
    "w": "qes",
    "x": "zcs",
    "y": "tuh",
    "z": "xa",
}
_PARAPHRASE = (
    "I need help with the following. {p}",
    "Could you answer this for me? {p}",
    "Here's my question: {p}",
    "{p} Please answer.",
    "My teacher asked us this: {p}",
    "Please respond to this: {p}",
    "Someone asked me this and I'm not sure. {p}",
    "{p} Thanks in advance.",
    "Help me out here: {p}",
    "Question for you - {p}",
)
_DISTRACTORS = (
    "My cat just knocked a glass off the table.",
    "It's raining here today.",
    "By the way, I had pasta for lunch.",
    "I'm typing this on my phone on the bus.",
    "Random fact: octopuses have three hearts.",
    "My neighbour has 12 cats.",
    "The train I'm on is 15 minutes late.",
    "I've been up since 6 this morning.",
    "My sister just adopted 2 rabbits.",
    "Unrelated, but my favourite colour is green.",
    "Note: I'm using a new keyboard, sorry in advance.",
    "Our office coffee machine is broken again.",
)


def _segments(text: str) -> list[tuple[str, bool]]:
    """Split into (chunk, editable) pieces; protected spans are not editable."""
    out, pos = [], 0
    for m in _PROTECTED.finditer(text):
        if m.start() > pos:
            out.append((text[pos : m.start()], True))
        out.append((m.group(0), False))
        pos = m.end()
    if pos < len(text):
        out.append((text[pos:], True))
    return out


def _map_editable(text: str, fn) -> str:
    return "".join(fn(chunk) if editable else chunk for chunk, editable in _segments(text))


def _typo_word(rng: random.Random, w: str) -> str:
    i = rng.randrange(1, len(w) - 1)
    kind = rng.randrange(4)
    if kind == 0:  # swap two neighbouring letters
        return w[:i] + w[i + 1] + w[i] + w[i + 2 :]
    if kind == 1:  # drop a letter
        return w[:i] + w[i + 1 :]
    if kind == 2:  # double a letter
        return w[:i] + w[i] + w[i:]
    near = _KEYBOARD.get(w[i].lower(), w[i])
    return w[:i] + near[rng.randrange(len(near))] + w[i + 1 :]


def typos(rng: random.Random, text: str) -> str:
    spans = [
        (off + m.start(), off + m.end())
        for off, (chunk, ed) in _offsets(text)
        if ed
        for m in _WORD.finditer(chunk)
        if _is_plain_word(chunk, m)
    ]
    if not spans:
        return text
    chosen = sorted(rng.sample(spans, min(len(spans), rng.randint(1, 3))), reverse=True)
    for a, b in chosen:
        text = text[:a] + _typo_word(rng, text[a:b]) + text[b:]
    return text


def _is_plain_word(chunk: str, m: re.Match) -> bool:
    # Skip pieces of identifiers such as os.path or snake_case names.
    before = chunk[m.start() - 1] if m.start() else " "
    after = chunk[m.end()] if m.end() < len(chunk) else " "
    return not (before in "._@/-" or after in "._@/(" or before.isdigit() or after.isdigit())


def _offsets(text: str) -> list[tuple[int, tuple[str, bool]]]:
    out, pos = [], 0
    for seg in _segments(text):
        out.append((pos, seg))
        pos += len(seg[0])
    return out


def casing(rng: random.Random, text: str) -> str:
    mode = rng.randrange(3)
    if mode == 0:
        return _map_editable(text, str.lower)
    if mode == 1:
        return _map_editable(text, str.upper)

    def alternate(chunk: str) -> str:
        return "".join(c.upper() if rng.random() < 0.5 else c.lower() for c in chunk)

    return _map_editable(text, alternate)


def whitespace(rng: random.Random, text: str) -> str:
    def spread(chunk: str) -> str:
        return re.sub(r" ", lambda _m: pick_space(rng), chunk)

    out = _map_editable(text, spread)
    lead = ("", " ", "  ", "\n", "\t")[rng.randrange(5)]
    tail = ("", " ", "\n", "   ", "\n\n")[rng.randrange(5)]
    return lead + out + tail


def pick_space(rng: random.Random) -> str:
    r = rng.random()
    if r < 0.75:
        return " "
    if r < 0.9:
        return "  "
    return "   " if r < 0.97 else " \t"


def paraphrase(rng: random.Random, text: str) -> str:
    return _PARAPHRASE[rng.randrange(len(_PARAPHRASE))].format(p=text)


def distractor(rng: random.Random, text: str) -> str:
    d = _DISTRACTORS[rng.randrange(len(_DISTRACTORS))]
    return f"{d} {text}" if rng.random() < 0.5 else f"{text}\n\n{d}"


_FUNCS = {
    "typos": typos,
    "casing": casing,
    "whitespace": whitespace,
    "paraphrase": paraphrase,
    "distractor": distractor,
}


def perturb(rng: random.Random, text: str, kind: str | None = None) -> tuple[str, str]:
    """Return (perturbed text, perturbation name); the text always differs from the input."""
    kinds = [kind] if kind else list(PERTURBATIONS)
    for _ in range(8):
        k = kinds[rng.randrange(len(kinds))]
        out = _FUNCS[k](rng, text)
        if out != text:
            return out, k
    return paraphrase(rng, text), "paraphrase"
