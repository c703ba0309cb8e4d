"""Chart geometry for the inline SVG plots.

Python computes every coordinate and colour; the jinja macros in
``templates/_charts.html.j2`` only draw what is computed here. That keeps the templates
free of arithmetic, the output crisp and small, and makes the report readable without
JavaScript (SVG is static markup, and each chart also gets a table fallback).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

# Diverging scale (ColorBrewer RdBu, 7 classes, reversed so positive eps is warm).
_DIVERGING = ("#2166ac", "#67a9cf", "#d1e5f0", "#f7f7f7", "#fddbc7", "#ef8a62", "#b2182b")
# Restrained categorical palette for series (strategies, k values, models).
SERIES_COLOURS = ("#2f6690", "#d17a22", "#3a7d44", "#8e5aa8", "#7a7a7a", "#b04a5a")
INK = "#1f2933"


# ---- formatting -------------------------------------------------------------------
def fmt(value: float | None, digits: int = 2) -> str:
    """Fixed-precision number, with a real minus sign; '–' for a missing value."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    text = f"{value:.{digits}f}"
    if text.startswith("-") and float(text) == 0:
        text = text[1:]
    return text.replace("-", "\u2212")


def fmt_ci(ci: Sequence[float] | None, digits: int = 2) -> str:
    if not ci:
        return "–"
    return f"[{fmt(ci[0], digits)}, {fmt(ci[1], digits)}]"


def fmt_p(p: float | None) -> str:
    """p-values: three decimals, '<0.001' below that (permutation p has a floor anyway)."""
    if p is None:
        return "–"
    if p < 0.001:
        return "<0.001"
    return f"{p:.3f}"


def p_is(p: float | None, name: str = "p") -> str:
    """A p-value in a sentence: "p = 0.012", "p < 0.001" (never "p = <0.001")."""
    if p is None:
        return f"{name} –"
    text = fmt_p(p)
    return f"{name} < {text[1:]}" if text.startswith("<") else f"{name} = {text}"


# ---- colour -----------------------------------------------------------------------
def _hex_to_rgb(h: str) -> tuple[int, int, int]:
    return int(h[1:3], 16), int(h[3:5], 16), int(h[5:7], 16)


def diverging_colour(value: float | None, domain: float) -> str:
    """Colour for a signed value on [-domain, domain]; white at 0, warm for positive."""
    if value is None:
        return "#ffffff"
    t = max(-1.0, min(1.0, value / domain if domain > 0 else 0.0))
    pos = (t + 1) / 2 * (len(_DIVERGING) - 1)
    i = min(int(pos), len(_DIVERGING) - 2)
    f = pos - i
    a, b = _hex_to_rgb(_DIVERGING[i]), _hex_to_rgb(_DIVERGING[i + 1])
    rgb = tuple(round(x + (y - x) * f) for x, y in zip(a, b, strict=True))
    return "#{:02x}{:02x}{:02x}".format(*rgb)


def text_colour(background: str) -> str:
    """Dark or light label, whichever reads better on ``background`` (WCAG luminance)."""
    r, g, b = (c / 255 for c in _hex_to_rgb(background))

    def lin(c: float) -> float:
        return c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4

    lum = 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b)
    return "#ffffff" if lum < 0.33 else INK


def diverging_domain(values: Sequence[float | None], floor: float = 0.2) -> float:
    """Symmetric domain shared by all heatmaps so colours compare across models."""
    finite = [abs(v) for v in values if v is not None]
    top = max(finite, default=0.0)
    return max(floor, math.ceil(top * 10) / 10)


# ---- scales -----------------------------------------------------------------------
def nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / max(1, count)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = start
    while t <= hi + 1e-9:
        ticks.append(round(t, 10))
        t += step
    return ticks


@dataclass
class Linear:
    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, v: float) -> float:
        if self.d1 == self.d0:
            return (self.r0 + self.r1) / 2
        return round(self.r0 + (v - self.d0) / (self.d1 - self.d0) * (self.r1 - self.r0), 2)


@dataclass
class Log:
    d0: float
    d1: float
    r0: float
    r1: float

    def __call__(self, v: float) -> float:
        if self.d1 <= self.d0:
            return (self.r0 + self.r1) / 2
        f = (math.log(v) - math.log(self.d0)) / (math.log(self.d1) - math.log(self.d0))
        return round(self.r0 + f * (self.r1 - self.r0), 2)


def label_width(labels: Sequence[str], px_per_char: float = 7.2) -> float:
    """Room for the longest row label at the chart's 12.5px font (no text measuring in SVG)."""
    return round(max((len(str(x)) for x in labels), default=8) * px_per_char + 18)


# ---- heatmap ----------------------------------------------------------------------
@dataclass
class HeatCell:
    row: str
    col: str
    x: float
    y: float
    w: float
    h: float
    value: float | None
    ci: Sequence[float] | None
    n: int | None
    p_holm: float | None
    significant: bool
    fill: str
    ink: str
    label: str
    title: str


@dataclass
class Heatmap:
    width: float
    height: float
    rows: list[tuple[str, float]]  # label, y centre
    cols: list[tuple[str, float]]  # label, x centre
    cells: list[HeatCell]
    legend: list[tuple[float, str]]  # offset 0..1, colour
    legend_x: float
    legend_y: float
    legend_w: float
    domain: float
    uid: str


def heatmap(
    rows: Sequence[str],
    cols: Sequence[str],
    cell: dict[tuple[str, str], dict],
    domain: float,
    uid: str,
    label_w: float = 132,
    cell_w: float = 84,
    cell_h: float = 28,
) -> Heatmap:
    """Rows x cols of estimates (``{"value","ci","n","p_holm","significant"}``)."""
    label_w = max(label_w, label_width(rows))
    top = 34
    cells = []
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            est = cell.get((r, c)) or {}
            v = est.get("value")
            fill = diverging_colour(v, domain)
            ci = est.get("ci")
            sig = bool(est.get("significant"))
            parts = [f"{r} × {c}: ε = {fmt(v)}"]
            if ci:
                parts.append(f"95% CI {fmt_ci(ci)}")
            if est.get("n") is not None:
                parts.append(f"n = {est['n']}")
            if est.get("p_holm") is not None:
                parts.append(p_is(est["p_holm"], "Holm p"))
            if sig:
                parts.append("significant")
            cells.append(
                HeatCell(
                    row=r,
                    col=c,
                    x=label_w + j * cell_w,
                    y=top + i * cell_h,
                    w=cell_w - 2,
                    h=cell_h - 2,
                    value=v,
                    ci=ci,
                    n=est.get("n"),
                    p_holm=est.get("p_holm"),
                    significant=sig,
                    fill=fill,
                    ink=text_colour(fill),
                    label=fmt(v) + (" *" if sig else ""),
                    title="; ".join(parts),
                )
            )
    grid_w = label_w + len(cols) * cell_w
    legend_y = top + len(rows) * cell_h + 12
    stops = [(k / 10, diverging_colour(-domain + 2 * domain * k / 10, domain)) for k in range(11)]
    return Heatmap(
        width=max(grid_w, label_w + 310) + 4,
        height=legend_y + 44,
        rows=[(r, top + i * cell_h + (cell_h - 2) / 2) for i, r in enumerate(rows)],
        cols=[(c, label_w + j * cell_w + (cell_w - 2) / 2) for j, c in enumerate(cols)],
        cells=cells,
        legend=stops,
        legend_x=label_w,
        legend_y=legend_y,
        legend_w=220,
        domain=domain,
        uid=uid,
    )


# ---- dot plot with CI (per-category similarity) -----------------------------------
@dataclass
class DotSeries:
    name: str
    colour: str
    points: list[dict] = field(default_factory=list)  # x, y, lo, hi, title, value


@dataclass
class DotPlot:
    width: float
    height: float
    plot_x0: float
    plot_x1: float
    plot_y0: float
    plot_y1: float
    rows: list[dict]  # label, y, marked
    ticks: list[tuple[float, str]]
    series: list[DotSeries]
    x_label: str


def dot_plot(
    rows: Sequence[str],
    series: dict[str, dict[str, dict]],
    marked: set[str],
    x_label: str,
    label_w: float = 160,
    width: float = 640,
    row_h: float = 26,
) -> DotPlot:
    """Rows of estimates with CI whiskers; one offset dot per series (model)."""
    label_w = max(label_w, label_width(rows))
    width = max(width, label_w + 420)
    vals = [
        x
        for per in series.values()
        for est in per.values()
        for x in [est.get("value"), *(est.get("ci") or [])]
        if x is not None
    ]
    lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
    pad = max(0.02, (hi - lo) * 0.08)
    lo, hi = max(-1.0, lo - pad), min(1.0, hi + pad)
    ticks = nice_ticks(lo, hi, 5)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    top, bottom = 10, 34
    x = Linear(lo, hi, label_w, width - 16)
    out_series = []
    k = len(series)
    for si, (name, per) in enumerate(series.items()):
        ds = DotSeries(name=name, colour=SERIES_COLOURS[si % len(SERIES_COLOURS)])
        for ri, r in enumerate(rows):
            est = per.get(r)
            if not est or est.get("value") is None:
                continue
            off = (si - (k - 1) / 2) * min(8, row_h / (k + 1))
            y = top + ri * row_h + row_h / 2 + off
            ci = est.get("ci") or [est["value"], est["value"]]
            ds.points.append(
                {
                    "row": r,
                    "x": x(est["value"]),
                    "y": round(y, 2),
                    "lo": x(ci[0]),
                    "hi": x(ci[1]),
                    "value": est["value"],
                    "title": f"{name} · {r}: {fmt(est['value'], 3)} {fmt_ci(ci, 3)}, n = {est.get('n', '–')}",
                }
            )
        out_series.append(ds)
    height = top + len(rows) * row_h + bottom
    return DotPlot(
        width=width,
        height=height,
        plot_x0=label_w,
        plot_x1=width - 16,
        plot_y0=top,
        plot_y1=top + len(rows) * row_h,
        rows=[
            {"label": r, "y": top + i * row_h + row_h / 2, "marked": r in marked}
            for i, r in enumerate(rows)
        ],
        ticks=[(x(t), fmt(t, 2)) for t in ticks],
        series=out_series,
        x_label=x_label,
    )


# ---- line chart with CI bands (budget curves) ---------------------------------------
@dataclass
class LineSeries:
    name: str
    colour: str
    dash: str
    path: str
    band: str
    points: list[dict]


@dataclass
class Axes:
    """What every log-x chart has: its frame, ticks, the eps0 line and the zero line."""

    title: str
    width: float
    height: float
    x0: float
    x1: float
    y0: float
    y1: float
    x_ticks: list[tuple[float, str]]
    y_ticks: list[tuple[float, str]]
    threshold: tuple[float, str] | None
    zero: float | None


@dataclass
class LineChart(Axes):
    series: list[LineSeries]
    x_label: str
    y_label: str


def line_chart(
    title: str,
    series: dict[str, list[dict]],
    threshold: float | None,
    x_label: str = "queries q (log scale)",
    y_label: str = "ε",
    width: float = 380,
    height: float = 230,
    dashes: Sequence[str] = ("",),
    order: Sequence[str] | None = None,
) -> LineChart:
    """eps(q) lines with CI bands; ``series`` maps name -> points {q, value, ci}."""
    xs = sorted({p["q"] for pts in series.values() for p in pts if p.get("q")})
    ys = [
        y
        for pts in series.values()
        for p in pts
        for y in [p.get("value"), *(p.get("ci") or [])]
        if y is not None
    ]
    if threshold is not None:
        ys.append(threshold)
    lo = min([0.0, *ys])
    hi = max([0.1, *ys])
    ticks = nice_ticks(lo, hi, 4)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    left, right, top, bottom = 46, 12, 26, 40
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    xmin, xmax = (xs[0], xs[-1]) if xs else (1, 10)
    if xmin == xmax:
        xmin, xmax = xmin / 2, xmax * 2
    xs_scale = Log(xmin, xmax, x0 + 6, x1 - 6)
    ys_scale = Linear(lo, hi, y1, y0)
    out = []
    # A fixed name -> style mapping keeps colours consistent across small multiples.
    names = list(order) if order is not None else list(series)
    for name, pts in series.items():
        si = names.index(name) if name in names else len(names)
        pts = sorted(
            (p for p in pts if p.get("value") is not None and p.get("q")), key=lambda p: p["q"]
        )
        if not pts:
            continue
        coords = [(xs_scale(p["q"]), ys_scale(p["value"])) for p in pts]
        path = "M" + " L".join(f"{a},{b}" for a, b in coords)
        band = ""
        if all(p.get("ci") for p in pts):
            upper = [(xs_scale(p["q"]), ys_scale(p["ci"][1])) for p in pts]
            lower = [(xs_scale(p["q"]), ys_scale(p["ci"][0])) for p in reversed(pts)]
            band = "M" + " L".join(f"{a},{b}" for a, b in upper + lower) + " Z"
        out.append(
            LineSeries(
                name=name,
                colour=SERIES_COLOURS[si % len(SERIES_COLOURS)],
                dash=dashes[si % len(dashes)],
                path=path,
                band=band,
                points=[
                    {
                        "x": a,
                        "y": b,
                        "q": p["q"],
                        "value": p["value"],
                        "ci": p.get("ci"),
                        "title": f"{name}, q = {p['q']}: ε = {fmt(p['value'])} {fmt_ci(p.get('ci'))}",
                    }
                    for (a, b), p in zip(coords, pts, strict=True)
                ],
            )
        )
    return LineChart(
        title=title,
        width=width,
        height=height,
        x0=x0,
        x1=x1,
        y0=y0,
        y1=y1,
        x_ticks=[(xs_scale(q), f"{q:g}") for q in xs],
        y_ticks=[(ys_scale(t), fmt(t, 2)) for t in ticks],
        threshold=(ys_scale(threshold), fmt(threshold)) if threshold is not None else None,
        zero=ys_scale(0.0) if lo < 0 < hi else None,
        series=out,
        x_label=x_label,
        y_label=y_label,
    )


# ---- eps against distillation tokens (log x, CI error bars, the A/A band) --------------
@dataclass
class TokenCurveChart(Axes):
    band: tuple[float, float] | None  # the A/A eps CI as (y of hi, y of lo)
    band_label: str | None
    base: tuple[float, str] | None  # the student before distillation: (y, label)
    path: str
    points: list[dict]  # x, y, y_lo, y_hi, tokens, value, title
    colour: str = SERIES_COLOURS[0]
    x_label: str = "distillation tokens seen (log scale)"
    y_label: str = "ε"


def _tokens_label(t: float) -> str:
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if t >= div:
            return f"{t / div:.3g}{suffix}"
    return f"{t:g}"


def token_curve_chart(
    title: str,
    points: Sequence[dict],
    band: Sequence[float] | None,
    threshold: float | None,
    base: dict | None = None,
    width: float = 560,
    height: float = 260,
) -> TokenCurveChart:
    """eps against tokens seen: ``points`` {tokens, value, ci} (tokens > 0, log x) with
    CI error bars, the A/A band (``band`` = the null's eps CI) shaded across the plot, and
    the base student (``base`` {value, ci}, 0 tokens) as a dotted reference line."""
    pts = sorted(
        (p for p in points if p.get("tokens") and p.get("value") is not None),
        key=lambda p: p["tokens"],
    )
    ys = [y for p in pts for y in [p["value"], *(p.get("ci") or [])] if y is not None]
    ys += list(band or [])
    if base and base.get("value") is not None:
        ys.append(base["value"])
    if threshold is not None:
        ys.append(threshold)
    lo, hi = min([0.0, *ys]), max([0.1, *ys])
    ticks = nice_ticks(lo, hi, 4)
    lo, hi = min(lo, ticks[0]), max(hi, ticks[-1])
    left, right, top, bottom = 46, 16, 26, 40
    x0, x1, y0, y1 = left, width - right, top, height - bottom
    xs = [p["tokens"] for p in pts]
    xmin, xmax = (min(xs), max(xs)) if xs else (1, 10)
    if xmin == xmax:
        xmin, xmax = xmin / 2, xmax * 2
    # A little room either side so the first and last error bars are not on the frame.
    pad = (math.log(xmax) - math.log(xmin)) * 0.06
    xsc = Log(math.exp(math.log(xmin) - pad), math.exp(math.log(xmax) + pad), x0, x1)
    ysc = Linear(lo, hi, y1, y0)
    decades = range(math.floor(math.log10(xsc.d0)), math.ceil(math.log10(xsc.d1)) + 1)
    x_ticks = [
        (xsc(10.0**d), _tokens_label(10.0**d)) for d in decades if xsc.d0 <= 10.0**d <= xsc.d1
    ]
    if len(x_ticks) < 2:  # less than a decade: label the points themselves
        x_ticks = [(xsc(t), _tokens_label(t)) for t in xs]
    drawn = []
    for p in pts:
        ci = p.get("ci")
        drawn.append(
            {
                "x": xsc(p["tokens"]),
                "y": ysc(p["value"]),
                "y_lo": ysc(ci[0]) if ci else None,
                "y_hi": ysc(ci[1]) if ci else None,
                "tokens": p["tokens"],
                "value": p["value"],
                "title": f"{p.get('label', '')} {_tokens_label(p['tokens'])} tokens: "
                f"ε = {fmt(p['value'])} {fmt_ci(ci)}".strip(),
            }
        )
    path = "M" + " L".join(f"{d['x']},{d['y']}" for d in drawn) if drawn else ""
    base_line = None
    if base and base.get("value") is not None:
        base_line = (ysc(base["value"]), f"before distillation: ε = {fmt(base['value'])}")
    return TokenCurveChart(
        title=title,
        width=width,
        height=height,
        x0=x0,
        x1=x1,
        y0=y0,
        y1=y1,
        x_ticks=x_ticks,
        y_ticks=[(ysc(t), fmt(t, 2)) for t in ticks],
        threshold=(ysc(threshold), fmt(threshold)) if threshold is not None else None,
        zero=ysc(0.0) if lo < 0 < hi else None,
        band=(ysc(band[1]), ysc(band[0])) if band else None,
        band_label=f"A/A band {fmt_ci(band)}" if band else None,
        base=base_line,
        path=path,
        points=drawn,
    )


# ---- forest strip (one estimate vs the threshold, inside a table cell) ----------------
@dataclass
class Forest:
    width: float
    height: float
    x: float
    lo: float
    hi: float
    zero: float
    threshold: float | None
    state: str  # "above" (CI above the threshold), "straddles" or "below"
    colour: str


def eps_state(ci: Sequence[float] | None, threshold: float | None) -> str:
    """Where an eps CI sits relative to the threshold (the verdict's two bounds)."""
    if not ci or threshold is None:
        return "below"
    if ci[0] > threshold:
        return "above"
    return "straddles" if ci[1] > threshold else "below"


def forest(
    value: float | None,
    ci: Sequence[float] | None,
    threshold: float | None,
    domain: tuple[float, float],
) -> Forest | None:
    """A tiny CI strip so a table row shows at a glance whether eps clears the threshold."""
    if value is None:
        return None
    ci = ci or [value, value]
    state = eps_state(ci, threshold)
    s = Linear(domain[0], domain[1], 4, 116)
    return Forest(
        width=120,
        height=18,
        x=s(value),
        lo=s(max(domain[0], ci[0])),
        hi=s(min(domain[1], ci[1])),
        zero=s(0.0),
        threshold=s(threshold) if threshold is not None else None,
        state=state,
        colour={"above": "#a3212c", "straddles": "#a86b00"}.get(state, "#2f6690"),
    )
