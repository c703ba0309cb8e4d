"""The report's "What gives it away" section: the attack's ``explain`` record, readable.

``bbi attack`` chose the features on the train split and measured them on the test split
(``discriminators.explain``); this module only reads that record
(``bbi.explain_schema``), adds the example pairs' texts from the run directory and marks
the give-away features in them. Model text is always escaped first; a highlight wraps an
escaped span, so a response containing ``<script>`` is shown, never run.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from markupsafe import Markup, escape

from bbi.explain_schema import Explanation, Feature, parse_explanation
from bbi.runstore import RunDir
from reports.model import Comparison, Report, _clip, _Texts

MAX_MARKS = 200  # highlights per response (a pattern such as "!" can match everywhere)


def explanation(comp: Comparison) -> Explanation | None:
    """The comparison's typed record (None for attacks that predate it)."""
    return parse_explanation(comp.explain, f"results.json: attack.comparisons.{comp.alias}.explain")


def _compiled(pattern: str | None) -> re.Pattern[str] | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error:
        return None  # a hand-edited record: show the text unmarked


def highlight(
    text: str, features: list[Feature], visible: Callable[[str], Markup] = escape
) -> Markup:
    """``text`` escaped (by ``visible``), the matches of the features' patterns wrapped in
    ``<mark>`` (first match wins where two overlap)."""
    spans: list[tuple[int, int, str]] = []
    for f in features:
        rx = _compiled(f.pattern)
        if rx is None:
            continue
        for m in rx.finditer(text):
            if m.end() > m.start():
                spans.append((m.start(), m.end(), f.label))
            if len(spans) >= MAX_MARKS * len(features):
                break
    spans.sort(key=lambda s: (s[0], -s[1]))
    out: list[str] = []
    pos = 0
    marks = 0
    for start, end, label in spans:
        if start < pos or marks >= MAX_MARKS:
            continue
        out.append(str(visible(text[pos:start])))
        out.append(
            f'<mark class="giveaway" title="{escape(label)}">{visible(text[start:end])}</mark>'
        )
        pos = end
        marks += 1
    out.append(str(visible(text[pos:])))
    return Markup("".join(out))


def _example_view(
    ex: Any, features: dict[str, Feature], texts: _Texts, reference: str, alias: str, visible
) -> dict[str, Any]:
    shown = [features[f["key"]] for f in ex.features if f.get("key") in features]
    teacher, t_el = _clip(texts.response(reference, ex.prompt_id))
    other, o_el = _clip(texts.response(alias, ex.prompt_id))
    return {
        "ex": ex,
        "prompt": texts.prompt(ex.prompt_id),
        "features": shown,
        "values": {f["key"]: f for f in ex.features},
        "teacher": highlight(teacher, shown, visible) if teacher is not None else None,
        "other": highlight(other, shown, visible) if other is not None else None,
        "teacher_elided": t_el,
        "other_elided": o_el,
    }


def explain_context(r: Report, visible: Callable[[str], Markup] = escape) -> list[dict]:
    """One entry per attacked comparison with a record (students first, then the null)."""
    texts = _Texts(RunDir(r.path))
    out = []
    for comp in r.comparisons:
        rec = explanation(comp)
        if rec is None:
            continue
        by_key = {f.key: f for f in rec.features}
        out.append(
            {
                "c": comp,
                "x": rec,
                "rules": rec.rules,
                "examples": [
                    _example_view(ex, by_key, texts, comp.reference, comp.alias, visible)
                    for ex in rec.examples
                ],
                "categories": [
                    (cat, rec.per_category[cat])
                    for cat in r.category_order()
                    if cat in rec.per_category
                ]
                + [(c, v) for c, v in rec.per_category.items() if c not in r.categories],
            }
        )
    return out


def explain_summary(comp: Comparison) -> dict[str, Any] | None:
    """The JSON report's copy of the record (the same fields as results.json)."""
    rec = explanation(comp)
    return rec.dump() if rec is not None else None


def value_text(f: Feature, value: float | None) -> str:
    """A feature's value on one response or its mean on a split, in its own unit."""
    if value is None:
        return "–"
    if f.binary:
        return f"{100 * value:.0f}%"
    if float(value).is_integer() or abs(value) >= 9.95:
        return f"{value:.0f}"
    return f"{value:.1f}"


def whose(f: Feature, teacher: str, other: str) -> str:
    return teacher if f.direction == "teacher" else other


__all__ = [
    "explain_context",
    "explain_summary",
    "explanation",
    "highlight",
    "value_text",
    "whose",
]
