"""The report's sections: one registry, rendered in order in the HTML and markdown report.

A section is a :class:`ReportSection`: a name (also its HTML anchor), an order, a title,
a function that builds its template context from the loaded :class:`~reports.model.Report`
(typed results; ``None`` hides the section), and its HTML and markdown templates (jinja
source text, or the name of a template shipped in ``reports/templates``). Run-provided
text is escaped by the renderer (HTML autoescape, markdown's ``md``/``mdcode`` filters),
never by the section. A section may add a JSON-ready ``summary`` to ``report.json``
(under ``sections.<name>``).

Adding a section is one module plus its registration: a :class:`ReportSection` object
registered here or, from another package, by an entry point in the group
``bbi.report_sections`` (``name = "pkg.module:SECTION"``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from bbi.registry import Registry

if TYPE_CHECKING:
    from reports.model import Report


@dataclass(frozen=True)
class ReportSection:
    """One section of the report (see the module docstring)."""

    name: str
    order: int
    title: str
    html: str | None = None  # jinja source, or "sections/<file>" under reports/templates
    markdown: str | None = None  # idem; None: the section is HTML-only
    context: Callable[[Report], dict[str, Any] | None] | None = None
    summary: Callable[[Report], Any] | None = None  # report.json["sections"][name]
    nav: bool = True  # linked from the report's table of contents

    def build(self, report: Report) -> dict[str, Any] | None:
        """The section's own context, or None when it has nothing to show."""
        return {} if self.context is None else self.context(report)


def _check(name: str, item: Any) -> None:
    if not isinstance(item, ReportSection):
        raise TypeError(f"expected a reports.sections.ReportSection, got {type(item).__name__}")
    if item.name != name:
        raise ValueError(f"registered as {name!r} but named {item.name!r}")
    if item.html is None and item.markdown is None:
        raise ValueError("a section needs an HTML or a markdown template (or both)")
    if isinstance(item.order, bool) or not isinstance(item.order, int):
        raise TypeError("order must be an integer")


# Built-in sections, in report order; each context function lives in reports.render
# beside the helpers it shares. The header's table of contents lays these out itself.
_BUILTIN = {
    "verdict": "reports.render:VERDICT",
    "summary": "reports.render:SUMMARY",
    "distillation": "reports.render:DISTILLATION",
    "token-curve": "reports.render:TOKEN_CURVE",
    "task-distillation": "reports.render:TASK_DISTILLATION",
    "categories": "reports.render:CATEGORIES",
    "budget": "reports.render:BUDGET",
    "comparison": "reports.render:COMPARISON",
    "giveaway": "reports.render:GIVEAWAY",
    "examples": "reports.render:EXAMPLES",
    "methods": "reports.render:METHODS",
}

SECTIONS: Registry[ReportSection] = Registry(
    "report section", "bbi.report_sections", builtins=_BUILTIN, check=_check
)


def ordered() -> list[ReportSection]:
    """Every registered section, by order (ties: registration order)."""
    items = [s for _, s in SECTIONS.items()]
    return sorted(items, key=lambda s: s.order)


__all__ = ["SECTIONS", "ReportSection", "ordered"]
