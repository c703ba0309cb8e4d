"""Render a run's results as one self-contained HTML file, a markdown or a JSON summary.

The HTML is built for a colleague opening it from disk: no network (a Content Security
Policy with ``default-src 'none'`` makes the browser refuse any fetch, and the only
script and style blocks are allowed by their hashes), plots as inline SVG drawn on the
server, every chart backed by a table, and all run-provided text escaped by jinja's
autoescape so a response containing ``<script>`` is shown, never executed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sys
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

import jinja2
import yaml
from markupsafe import Markup, escape

from bbi.errors import BbiError
from bbi.results_schema import REPORT_SCHEMA_VERSION, validated_summary
from reports import charts
from reports.explain import explain_context, explain_summary, value_text, whose
from reports.model import Comparison, Est, Report, load_report
from reports.sections import SECTIONS, ReportSection, ordered

FORMATS = ("html", "md", "json")
DEFAULT_NAMES = {"html": "report.html", "md": "report.md", "json": "report.json"}

STRATEGY_TEXT = {
    "random": "uniformly random train prompts, each bought from both models.",
    "stratified": "equal allocation of the budget across categories (remainder spread "
    "deterministically), then random within each category.",
    "disagreement": "rounds of acquisition; a committee of bootstrap-resampled cheap "
    "classifiers, fit on what was bought so far, ranks unbought prompts by predicted "
    "distinguishability from prompt-only features, and the next round buys the top ones.",
    "bandit": "Thompson sampling over categories; the reward is whether the current "
    "classifier (cross-validated on bought data) tells the new pair apart.",
}


def _resource(name: str) -> str:
    return (files("reports") / "templates" / name).read_text(encoding="utf-8")


def _csp_hash(text: str) -> str:
    return (
        "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode() + "'"
    )


def _yaml(obj: Any) -> str:
    return yaml.safe_dump(
        obj, sort_keys=False, allow_unicode=True, default_flow_style=False
    ).rstrip()


# Characters that would hide or reorder text (bidi overrides, zero-width, C0 controls):
# shown as visible code points so a response cannot disguise what it says.
_INVISIBLE = re.compile(
    "[\u0000-\u0008\u000b-\u001f\u007f\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]"
)


def visible(text: str) -> Markup:
    """Escape model text and make invisible/direction-changing characters visible."""
    escaped = str(escape(text))
    return Markup(
        _INVISIBLE.sub(
            lambda m: (
                f'<span class="ctrl" title="invisible character">U+{ord(m.group()):04X}</span>'
            ),
            escaped,
        )
    )


# ---- context shared by the three formats -----------------------------------------------
def _null_status(r: Report) -> dict | None:
    """Does the A/A comparison behave like a null? The verdict's family-wise test at eps = 0
    (``verdict.calibration``) decides; older results fall back to "every CI covers 0"."""
    null = r.null
    if null is None:
        return None
    rows = [(a.name, a.eps) for a in null.adversaries if a.eps is not None and a.eps.ci]
    worst = max(rows, key=lambda x: x[1].value if x[1].value is not None else -9) if rows else None
    cal = null.verdict.calibration
    if cal is not None and cal.get("ok") is not None:
        failing = sorted(
            {
                str(t).split("/")[-1] if "/" in str(t) else "the primary test"
                for t in cal.get("rejected") or []
            }
        )
        return {
            "alias": null.alias,
            "ok": bool(cal["ok"]),
            "worst": worst,
            "failing": failing,
            "family": cal.get("family_size"),
            "min_p": cal.get("min_p_holm"),
        }
    if not rows:
        return {"alias": null.alias, "ok": None, "worst": None, "failing": []}
    failing = [name for name, e in rows if e.lo is not None and e.lo > 0]
    return {"alias": null.alias, "ok": not failing, "worst": worst, "failing": failing}


def _giveaways(comp: Comparison, limit: int = 4) -> list[dict]:
    """Significant categories, most distinguishable first: where the student gives itself away."""
    best = comp.best_per_category()
    sig = comp.significant_categories()
    rows = [
        {"category": c, "est": best[c][0], "adversary": best[c][1], "adversaries": sig[c]}
        for c in sig
        if c in best
    ]
    rows.sort(key=lambda x: -(x["est"].value or 0))
    return rows[:limit]


def _base_student(r: Report) -> Comparison | None:
    """The undistilled student: the first one not produced by `bbi distill`."""
    studs = r.students
    if len(studs) < 2:
        return None
    distilled = set(_safe_dict(r.results.get("distill")))
    return next((c for c in studs if c.alias not in distilled), studs[0])


def _safe_dict(x: Any) -> dict:
    return x if isinstance(x, dict) else {}


def _deltas(r: Report) -> dict | None:
    base = _base_student(r)
    if base is None:
        return None
    others = [c for c in r.students if c is not base]
    rows = []

    def sim_test(c: Comparison) -> Est | None:
        return (c.similarity or {}).get("test") or (c.similarity or {}).get("overall")

    rows.append(
        {
            "label": "semantic similarity (test)",
            "kind": "sim",
            "base": sim_test(base),
            "others": [sim_test(o) for o in others],
        }
    )
    for name in r.adversary_names:
        ba = base.adversary(name)
        if not any(c.adversary(name) and c.adversary(name).eps for c in [base, *others]):
            continue  # two-sample tests have no eps to compare
        rows.append(
            {
                "label": f"ε {name}",
                "kind": "eps",
                "base": ba.eps if ba else None,
                "others": [(o.adversary(name).eps if o.adversary(name) else None) for o in others],
            }
        )
    cat_rows = []
    bb = base.best_per_category()
    obs = [o.best_per_category() for o in others]
    for c in r.category_order():
        cat_rows.append(
            {
                "label": c,
                "base": bb.get(c, (None, None))[0],
                "others": [ob.get(c, (None, None))[0] for ob in obs],
            }
        )
    for row in rows + cat_rows:
        digits = 3 if row.get("kind") == "sim" else 2
        good = 1 if row.get("kind") == "sim" else -1  # similarity should rise, eps fall
        row["digits"] = digits
        row["deltas"] = []
        for o in row["others"]:
            base_v = row["base"].value if row["base"] else None
            d = o.value - base_v if (o and o.value is not None and base_v is not None) else None
            shown = round(d, digits) if d is not None else None
            cls = "" if not shown else ("delta-down" if shown * good > 0 else "delta-up")
            text = "–" if d is None else ("+" if shown > 0 else "") + charts.fmt(d, digits)
            row["deltas"].append({"value": d, "text": text, "cls": cls})
    chart = None
    if bb:
        series = {base.alias: {c: bb[c][0].as_dict() for c in bb}}
        for o, ob in zip(others, obs, strict=True):
            series[o.alias] = {c: ob[c][0].as_dict() for c in ob}
        chart = charts.dot_plot(r.category_order(), series, set(), "best-adversary ε per category")
    return {"base": base, "others": others, "rows": rows, "cat_rows": cat_rows, "chart": chart}


def signed(value: float | None, digits: int = 2) -> str:
    """A difference with its sign spelled out (+0.12, −0.31); '–' when missing."""
    text = charts.fmt(value, digits)
    if text == "–" or text.startswith("\u2212") or float(text) == 0:
        return text
    return "+" + text


def delta_class(est: Est | None, good: int = -1, alpha: float | None = None) -> str:
    """CSS class of a Delta cell: green when it shows a change for the better (``good =
    -1``: eps should fall; ``+1``: similarity should rise), red for the worse. A change
    needs the CI wholly on one side of 0 and, where recorded, p < alpha (the reading's
    rule, ``bbi.stats.delta_decided``)."""
    if est is None or est.ci is None:
        return ""
    if est.p is not None and est.p >= (0.05 if alpha is None else alpha):
        return ""
    lo, hi = est.ci
    if (good < 0 and hi < 0) or (good > 0 and lo > 0):
        return "delta-down"
    if (good < 0 and lo > 0) or (good > 0 and hi < 0):
        return "delta-up"
    return ""


def _percent(x: float | None) -> str | None:
    return None if x is None else f"{100 * x:.4g}%"


def _duration(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    if seconds < 120:
        return f"{charts.fmt(seconds, 1)} s"
    if seconds < 7200:
        return f"{charts.fmt(seconds / 60, 1)} min"
    return f"{charts.fmt(seconds / 3600, 1)} h"


def _attack_of(comp: Comparison | None) -> dict:
    """The attack's view of one model: best adversary's eps at its full budget, verdict."""
    if comp is None:
        return {"attacked": False}
    best = comp.best_adversary()
    return {
        "attacked": True,
        "best": best,
        "status": comp.verdict.status,
        "epsilon": comp.verdict.epsilon,
        "confirmed": comp.verdict.primary,
        "confirmed_by": comp.verdict.primary_adversary,
    }


def _task_distill(r: Report) -> list[dict]:
    """Students from ``bbi distill bird|circuit``: the behaviour table (arms x metrics,
    then the paired method - control rows) and, beside it, the attack on the student."""
    comps = {c.alias: c for c in r.comparisons}
    sims = {c.alias: c.similarity for c in r.comparisons + r.similarity_only if c.similarity}
    out = []
    for d in r.task_distill:
        b = d.behaviour
        alpha = 1 - b.confidence if b.confidence is not None else None
        directions = {
            m: {
                "arrow": "↑" if up else "↓",
                "text": "higher is better" if up else "lower is better",
            }
            for m, up in b.higher_is_better.items()
        }
        delta_cls = {
            (row.label, m): delta_class(row.cells.get(m), 1 if b.higher_is_better[m] else -1, alpha)
            for row in b.deltas
            for m in b.metrics
            if m in b.higher_is_better
        }
        base_alias = next(
            (
                a
                for a, m in r.models.items()
                if a != d.alias
                and d.base
                and m.get("spec") == d.base
                and m.get("role") == "student"
            ),
            None,
        )
        sim = sims.get(d.alias) or {}
        facts: list[tuple[str, str]] = []
        if d.layers:
            facts.append(
                (
                    "layers",
                    f"teacher {d.layers.get('teacher', '–')} → student {d.layers.get('student', '–')}",
                )
            )
        for k, v in d.diagnostics.items():
            facts.append((k.replace("_", " "), charts.fmt(v, 3)))
        if d.teacher_accuracy is not None:
            facts.append(("teacher accuracy", charts.fmt(d.teacher_accuracy, 3)))
        if d.student_accuracy is not None:
            facts.append(("student accuracy (before)", charts.fmt(d.student_accuracy, 3)))
        if d.circuit_k is not None:
            size = f"k = {d.circuit_k}" + (
                f" of {d.circuit_of} heads" if d.circuit_of is not None else " heads"
            )
            if d.circuit_heads:
                shown = ", ".join(f"L{layer}H{head}" for layer, head in d.circuit_heads[:12])
                more = len(d.circuit_heads) - 12
                size += f" ({shown}{f', … {more} more' if more > 0 else ''})"
            facts.append(("circuit", size))
        if d.time_s is not None:
            facts.append(("time", _duration(d.time_s)))
        out.append(
            {
                "d": d,
                "b": b,
                "directions": directions,
                "delta_cls": delta_cls,
                "confidence": _percent(b.confidence),
                "n_seeds": len(b.seeds),
                "facts": facts,
                "attack": _attack_of(comps.get(d.alias)),
                "similarity": sim.get("test") or sim.get("overall"),
                "base_alias": base_alias,
                "base_attack": _attack_of(comps.get(base_alias)) if base_alias else None,
            }
        )
    return out


def _heatmaps(r: Report) -> tuple[list[dict], float]:
    cats = r.category_order()
    values = [
        e.value for c in r.comparisons for a in c.adversaries for e in a.per_category.values()
    ]
    domain = charts.diverging_domain(values)
    out = []
    for i, comp in enumerate(r.comparisons):
        advs = [a for a in comp.adversaries if a.per_category]
        if not advs:
            continue
        cells = {
            (cat, a.name): a.per_category[cat].as_dict() for a in advs for cat in a.per_category
        }
        hm = charts.heatmap(cats, [a.name for a in advs], cells, domain, uid=f"hm{i}")
        out.append({"comp": comp, "chart": hm, "advs": advs})
    return out, domain


def _similarity_chart(r: Report) -> dict | None:
    comps = [
        c
        for c in r.comparisons + r.similarity_only
        if c.similarity and c.similarity["per_category"]
    ]
    if not comps:
        return None
    series = {
        c.alias: {k: e.as_dict() for k, e in c.similarity["per_category"].items()} for c in comps
    }
    marked: dict[str, list[str]] = {}
    for s in r.students:
        for cat in s.significant_categories():
            marked.setdefault(cat, []).append(s.alias)
    cats = r.category_order()
    chart = charts.dot_plot(
        cats, series, set(marked), "cosine similarity to the teacher (mean, 95% CI)"
    )
    return {"chart": chart, "comps": comps, "marked": marked, "cats": cats}


def _curves(r: Report) -> list[dict]:
    """Small multiples per comparison: eps(q) by strategy (k = 1) and eps(q, k)."""
    out = []
    eps = r.epsilon
    strategies: list[str] = list((r.attack_config or {}).get("strategies") or [])
    for c in r.comparisons:
        for a in c.adversaries:
            strategies += [s for s in a.curves if s not in strategies]
    k_names = [f"k = {k}" for k in r.k_values]
    for comp in r.comparisons:
        panels = []
        for adv in comp.adversaries:
            if not any(p.value is not None for pts in adv.curves.values() for p in pts):
                continue  # two-sample tests have p-values per budget, no eps curve
            k1 = {
                s: [{"q": p.q, "value": p.value, "ci": p.ci} for p in pts if p.k == 1]
                for s, pts in adv.curves.items()
            }
            k1 = {s: pts for s, pts in k1.items() if pts}
            first = next(
                s for s, pts in adv.curves.items() if any(p.value is not None for p in pts)
            )
            ks = sorted({p.k for p in adv.curves[first]})
            by_k = {
                f"k = {k}": [
                    {"q": p.q, "value": p.value, "ci": p.ci} for p in adv.curves[first] if p.k == k
                ]
                for k in ks
            }
            panels.append(
                {
                    "adv": adv,
                    "strategy_chart": charts.line_chart(adv.name, k1, eps, order=strategies)
                    if k1
                    else None,
                    "k_chart": charts.line_chart(
                        adv.name, by_k, eps, dashes=("", "6 3", "2 3", "9 3 2 3"), order=k_names
                    )
                    if len(ks) > 1
                    else None,
                    "first_strategy": first,
                    "table": sorted(
                        ((s, p) for s, pts in adv.curves.items() for p in pts),
                        key=lambda sp: (strategies.index(sp[0]), sp[1].k, sp[1].q),
                    ),
                }
            )
        if panels:
            legend_s = charts.line_chart(
                "", {s: [{"q": 1, "value": 0}] for s in strategies}, None, order=strategies
            )
            legend_k = charts.line_chart(
                "",
                {k: [{"q": 1, "value": 0}] for k in k_names},
                None,
                dashes=("", "6 3", "2 3", "9 3 2 3"),
                order=k_names,
            )
            out.append(
                {
                    "comp": comp,
                    "panels": panels,
                    "legend_strategy": legend_s,
                    "legend_k": legend_k,
                    "has_k": any(p["k_chart"] for p in panels),
                    "k_strategies": sorted({p["first_strategy"] for p in panels if p["k_chart"]}),
                }
            )
    return out


def _token_curves(r: Report) -> dict | None:
    """eps against distillation tokens: per distilled student a chart (log x, CI error
    bars, the A/A band shaded) and its table; None (section hidden) without a curve."""
    if not r.token_curves:
        return None
    out = []
    for alias, tc in r.token_curves.items():
        band = tc.band.eps.ci if tc.band and tc.band.eps and tc.band.eps.ci else None
        base = next((p for p in tc.points if p.kind == "base"), None)
        chart = charts.token_curve_chart(
            f"{alias}: ε against distillation tokens",
            [
                {
                    "tokens": p.tokens_seen,
                    "value": p.eps.value if p.eps else None,
                    "ci": p.eps.ci if p.eps else None,
                    "label": p.alias,
                }
                for p in tc.points
                if p.kind != "base"
            ],
            band,
            r.epsilon,
            base={"value": base.eps.value, "ci": base.eps.ci} if base and base.eps else None,
        )
        # ``key``: the alias as an attribute value (file-name characters only)
        key = re.sub(r"[^A-Za-z0-9_.-]", "_", alias)
        out.append({"alias": alias, "key": key, "curve": tc, "chart": chart})
    return {"token_curves": out}


def _forest_domain(r: Report) -> tuple[float, float]:
    vals = [0.0, r.epsilon or 0.0]
    for c in r.comparisons:
        for a in c.adversaries:
            if a.eps is not None:
                vals += [v for v in (a.eps.value, a.eps.lo, a.eps.hi) if v is not None]
    lo, hi = min(vals), max(vals)
    return (min(-0.1, lo - 0.02), max(0.2, hi + 0.02))


def _shared_context(r: Report) -> dict:
    """What every section's template may use: the report and the formatting helpers."""
    seeds = {
        "run.yaml": (r.config or {}).get("seeds"),
        "attack": (r.attack_config or {}).get("seeds"),
    }
    return {
        "r": r,
        "fmt": charts.fmt,
        "fmt_ci": charts.fmt_ci,
        "fmt_p": charts.fmt_p,
        "p_is": charts.p_is,
        "explain": (explain := explain_context(r, visible)),
        "explain_of": {e["c"].alias: e["x"] for e in explain},
        "value_text": value_text,
        "whose": whose,
        "eps_state": charts.eps_state,
        "fmt_seq": lambda values, digits=3: ", ".join(charts.fmt(v, digits) for v in values),
        "signed": signed,
        "delta_class": lambda est, good=-1: delta_class(est, good, r.alpha),
        "seeds": {k: v for k, v in seeds.items() if v is not None},
        "yaml": _yaml,
        "json_dumps": lambda x: json.dumps(x, ensure_ascii=False),
        "visible": visible,
        "suite_hash": str(r.suite.get("hash") or ""),
        "bbi_version": _bbi_version(),
    }


# ---- the built-in sections (registered in reports.sections) ------------------------------
def _verdict_context(r: Report) -> dict:
    return {
        "null_status": _null_status(r),
        "giveaways": {c.alias: _giveaways(c) for c in r.students},
    }


def _summary_context(r: Report) -> dict:
    fdom = _forest_domain(r)
    forests = {
        (c.alias, a.name): charts.forest(a.eps.value, a.eps.ci, r.epsilon, fdom)
        for c in r.comparisons
        for a in c.adversaries
        if a.eps is not None
    }
    return {"forests": forests}


def _categories_context(r: Report) -> dict:
    return {"heatmaps": _heatmaps(r)[0], "similarity_chart": _similarity_chart(r)}


def _methods_context(r: Report) -> dict:
    return {
        "strategy_text": STRATEGY_TEXT,
        "config_yaml": _yaml(r.config) if r.config else "",
    }


def _section(name: str, order: int, title: str, md: bool = False, **kw: Any) -> ReportSection:
    return ReportSection(
        name=name,
        order=order,
        title=title,
        html=f"sections/{name}.html.j2",
        markdown=f"sections/{name}.md.j2" if md else None,
        nav=False,  # the header lays out the built-in sections' links itself
        **kw,
    )


VERDICT = _section("verdict", 10, "Verdict", md=True, context=_verdict_context)
SUMMARY = _section("summary", 20, "Summary", md=True, context=_summary_context)
DISTILLATION = _section("distillation", 30, "Distillation", md=True)
TASK_DISTILLATION = _section(
    "task-distillation",
    40,
    "Representation and circuit distillation",
    md=True,
    context=lambda r: {"task_distill": _task_distill(r)},
)
TOKEN_CURVE = _section("token-curve", 35, "Distillation tokens", md=True, context=_token_curves)
CATEGORIES = _section("categories", 50, "Categories", md=True, context=_categories_context)
BUDGET = _section("budget", 60, "Budget curves", context=lambda r: {"curves": _curves(r)})
COMPARISON = _section(
    "comparison", 70, "Students compared", context=lambda r: {"deltas": _deltas(r)}
)
GIVEAWAY = _section(
    "giveaway",
    75,
    "What gives it away",
    md=True,
    context=lambda r: {} if any(c.explain for c in r.comparisons) else None,
)
EXAMPLES = _section("examples", 80, "Examples")
METHODS = _section("methods", 90, "Methods", context=_methods_context)


@dataclass(frozen=True)
class _Part:
    """A section as one render sees it: its context and its template names."""

    section: ReportSection
    context: dict
    html: str | None
    markdown: str | None


def _template_name(section: ReportSection, kind: str, text: str | None) -> str | None:
    if text is None:
        return None
    if "\n" not in text and text.endswith(".j2") and "{" not in text:
        return text  # a template shipped in reports/templates
    return f"section:{section.name}.{kind}"


def build_context(r: Report) -> dict:
    """The shared helpers, every built-in section's context, and ``sections``: the
    registered sections that have something to show, in order."""
    ctx = _shared_context(r)
    parts = []
    for section in ordered():
        own = section.build(r)
        if own is None:
            continue
        if SECTIONS.origin(section.name) == "builtin":
            ctx.update(own)  # the built-in templates read their context at top level
        parts.append(
            _Part(
                section,
                own,
                _template_name(section, "html", section.html),
                _template_name(section, "md", section.markdown),
            )
        )
    ctx["sections"] = parts
    return ctx


def _environment(autoescape: bool) -> jinja2.Environment:
    """Templates from reports/templates, plus each registered section's own source."""

    def section_source(name: str) -> str | None:
        if not name.startswith("section:"):
            return None
        sec_name, _, kind = name[len("section:") :].rpartition(".")
        if sec_name not in SECTIONS:
            return None
        section = SECTIONS.get(sec_name)
        return section.html if kind == "html" else section.markdown

    return jinja2.Environment(
        loader=jinja2.ChoiceLoader(
            [
                jinja2.FileSystemLoader(str(files("reports") / "templates")),
                jinja2.FunctionLoader(section_source),
            ]
        ),
        autoescape=jinja2.select_autoescape(["html", "j2"], default_for_string=True)
        if autoescape
        else False,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def _bbi_version() -> str:
    try:
        from bbi import __version__

        return str(__version__)
    except ImportError:  # pragma: no cover - the package always defines it
        return "unknown"


# ---- renderers --------------------------------------------------------------------
def render_html(r: Report) -> str:
    env = _environment(autoescape=True)
    css = _resource("report.css")
    js = _resource("report.js")
    csp = (
        "default-src 'none'; "
        f"style-src {_csp_hash(css)}; script-src {_csp_hash(js)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    return env.get_template("report.html.j2").render(css=css, js=js, csp=csp, **build_context(r))


# Markdown that run-provided text (run name, aliases, specs, categories, adversary names,
# verdict text) could use to format, link or inject HTML; escaped wherever such text is
# written. Line-start syntax (#, -, >, 1.) needs no escape: such text never starts a line.
_MD_PUNCT = re.compile(r"[\\`*\[\]|~]")
# "_" only emphasises at a word boundary; "style_format" stays readable.
_MD_UNDERSCORE = re.compile(r"(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def _md_plain(text: Any) -> str:
    """One line, with invisible/direction-changing characters shown as code points."""
    s = " ".join(str(text).splitlines())
    return _INVISIBLE.sub(lambda m: f"(U+{ord(m.group()):04X})", s)


def _md_cell(text: Any) -> str:
    """Run-provided text as inert markdown: no HTML, links, emphasis or table breaks."""
    s = _md_plain(text)
    s = s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    s = _MD_PUNCT.sub(lambda m: "\\" + m.group(), s)
    return _MD_UNDERSCORE.sub(r"\\_", s)


def _md_code(text: Any) -> str:
    """Run-provided text as a code span (shown verbatim; a fence longer than any run of
    backticks inside, so the text cannot close it). "|" is still escaped for tables."""
    s = _md_plain(text).replace("|", "\\|")
    longest = max((len(run) for run in re.findall(r"`+", s)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if s.startswith("`") or s.endswith("`") else ""
    return f"{fence}{pad}{s}{pad}{fence}"


def render_markdown(r: Report) -> str:
    env = _environment(autoescape=False)
    env.filters["md"] = _md_cell
    env.filters["mdcode"] = _md_code
    return env.get_template("report.md.j2").render(**build_context(r))


def render_section(r: Report, name: str, fmt: str = "html") -> str:
    """One registered section alone (html or md), with the context a full report gives it;
    "" when the section has nothing to show or no template for ``fmt``."""
    ctx = build_context(r)
    part = next((p for p in ctx["sections"] if p.section.name == name), None)
    template = None if part is None else (part.html if fmt == "html" else part.markdown)
    if template is None:
        return ""
    env = _environment(autoescape=fmt == "html")
    env.filters["md"] = _md_cell
    env.filters["mdcode"] = _md_code
    source = "{% with section = part.context %}{% include part_template %}{% endwith %}"
    return env.from_string(source).render(part=part, part_template=template, **ctx)


def summary(r: Report) -> dict:
    """Compact machine-readable summary for CI pipelines (thresholds, dashboards)."""

    def est(e: Est | None) -> dict | None:
        return e.as_dict() if e is not None else None

    comps = {}
    for c in r.comparisons + r.similarity_only:
        best = c.best_per_category()
        comps[c.alias] = {
            "role": c.role,
            "spec": c.spec,
            "verdict": {
                "status": c.verdict.status,
                "epsilon": c.verdict.epsilon,
                "broken_by": c.verdict.broken_by,
                "at_budget": c.verdict.at_budget,
                "confirmed_eps": est(c.verdict.primary),
                "confirmed_by": c.verdict.primary_adversary,
                "distinguishable_in": c.verdict.distinguishable_in,
                "text": c.verdict.text,
                "equality": c.verdict.equality,
            },
            "similarity": est((c.similarity or {}).get("test")),
            "similarity_overall": est((c.similarity or {}).get("overall")),
            "adversaries": {
                a.name: {**(est(a.eps) or {"value": None}), "p": a.p, "auroc": est(a.auroc)}
                for a in c.adversaries
            },
            "categories": {
                cat: {
                    "best_eps": est(best[cat][0]) if cat in best else None,
                    "best_adversary": best[cat][1] if cat in best else None,
                    "significant_adversaries": c.significant_categories().get(cat, []),
                    "similarity": est(((c.similarity or {}).get("per_category") or {}).get(cat)),
                }
                for cat in r.category_order()
            },
            "explain": explain_summary(c),
        }
    distillation = {
        d.alias: {
            "base": d.base,
            "method": d.method,
            "status": d.status,
            "reading": d.reading,
            "similarity": {
                "delta": est(d.similarity),
                "base": est(d.sim_base),
                "distilled": est(d.sim_distilled),
            },
            "adversaries": {
                row.adversary: {
                    "delta": est(row.delta),
                    "eps_base": est(row.eps_base),
                    "eps_distilled": est(row.eps_distilled),
                    "point": row.point,
                    "per_category": {c: e.as_dict() for c, e in row.per_category.items()},
                }
                for row in d.rows
            },
            "skipped": d.skipped,
        }
        for d in r.distillation
    }
    task_distillation = {}
    for t in _task_distill(r):
        d, b, a = t["d"], t["b"], t["attack"]
        best = a.get("best")
        task_distillation[d.alias] = {
            "method": d.method,
            "spec": d.spec,
            "base": d.base,
            "teacher": d.teacher,
            "seeds": b.seeds,
            "confidence": b.confidence,
            "higher_is_better": b.higher_is_better,
            "arms": {row.label: {m: est(e) for m, e in row.cells.items()} for row in b.rows},
            "deltas": {row.label: {m: est(e) for m, e in row.cells.items()} for row in b.deltas},
            "attacked": a["attacked"],
            "best_adversary": best.name if best else None,
            "eps": est(best.eps) if best else None,
        }
    ns = _null_status(r)
    out = {
        "schema_version": REPORT_SCHEMA_VERSION,
        "run": r.run,
        "suite": {
            "hash": r.suite.get("hash"),
            "n": r.suite.get("n"),
            "n_test": r.suite.get("n_test"),
        },
        "teacher": r.teacher,
        "epsilon": r.epsilon,
        "alpha": r.alpha,
        "indistinguishable": (
            all(c.verdict.status == "indistinguishable" for c in r.students) if r.students else None
        ),
        "null_calibration": None
        if ns is None
        else {"alias": ns["alias"], "ok": ns["ok"], "failing": ns["failing"]},
        "comparisons": comps,
        "distillation": distillation,
        "notes": list(r.notes.values()),
    }
    if task_distillation:  # only runs with `bbi distill bird|circuit` students carry it
        out["task_distillation"] = task_distillation
    extra = {s.name: s.summary(r) for s in ordered() if s.summary is not None}
    if extra:  # sections that add a machine-readable part (plug-ins)
        out["sections"] = extra
    return validated_summary(out)


def _finite(obj: Any) -> Any:
    """``obj`` with non-finite floats replaced by None (JSON has no NaN or Infinity)."""
    if isinstance(obj, float):
        return obj if obj == obj and obj not in (float("inf"), float("-inf")) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def render(r: Report, fmt: str) -> str:
    if fmt == "html":
        return render_html(r)
    if fmt == "md":
        return render_markdown(r)
    if fmt == "json":
        # Strict JSON: an infinite estimate in results.json becomes null, never "Infinity".
        return json.dumps(_finite(summary(r)), indent=2, ensure_ascii=False, allow_nan=False) + "\n"
    raise BbiError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")


def write_report(
    run_dir: str | Path, out: str | Path | None = None, fmt: str = "html", max_examples: int = 3
) -> Path:
    """Render the run's report and write it (default: <run>/report.<ext>); returns the path.

    ``out="-"`` writes to stdout (handy in CI) and returns Path("-").
    """
    if fmt not in FORMATS:
        raise BbiError(f"unknown report format {fmt!r}: use one of {', '.join(FORMATS)}")
    if max_examples < 0:
        raise BbiError("--examples must be >= 0")
    report = load_report(run_dir, max_examples=max_examples)
    text = render(report, fmt)
    if str(out) == "-":
        sys.stdout.write(text)
        return Path("-")
    path = Path(out) if out is not None else report.path / DEFAULT_NAMES[fmt]
    if path.is_dir():
        raise BbiError(f"{path} is a directory; give a file name for the report")
    from bbi.runstore import atomic_write_text

    try:
        atomic_write_text(path, text)
    except OSError as exc:
        raise BbiError(f"cannot write report to {path}: {exc.strerror or exc}") from None
    return path
