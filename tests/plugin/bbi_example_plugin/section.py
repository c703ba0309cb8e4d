"""A report section from outside bbi: how many responses each model gave (sample 0 and all).

One module and one entry-point line (group ``bbi.report_sections``) add it to every report.
"""

from __future__ import annotations

from typing import Any

from bbi.errors import BbiError
from bbi.runstore import RunDir
from reports.sections import ReportSection


def _counts(report: Any) -> dict[str, dict[str, int]]:
    run = RunDir(report.path)
    out: dict[str, dict[str, int]] = {}
    for alias in report.models:
        try:
            df = run.responses(alias)
        except BbiError:  # no responses (yet) for this model, or an alias no file can carry
            continue
        out[alias] = {
            "responses": len(df),
            "prompts": int(df["prompt_id"].nunique()) if len(df) else 0,
        }
    return out


def _context(report: Any) -> dict[str, Any] | None:
    counts = _counts(report)
    return {"counts": counts} if counts else None


HTML = """<section class="block" id="response-counts" aria-labelledby="response-counts-h">
  <h2 id="response-counts-h">Responses per model</h2>
  <table class="data">
    <thead><tr><th>model</th><th class="num">prompts</th><th class="num">responses</th></tr></thead>
    <tbody>
    {% for alias, c in section.counts.items() %}
      <tr data-row="response-count" data-model="{{ alias }}"><td>{{ alias }}</td><td class="num">{{ c.prompts }}</td><td class="num">{{ c.responses }}</td></tr>
    {% endfor %}
    </tbody>
  </table>
</section>

"""

MARKDOWN = """## Responses per model

| model | prompts | responses |
|---|---:|---:|
{% for alias, c in section.counts.items() %}
| {{ alias|md }} | {{ c.prompts }} | {{ c.responses }} |
{% endfor %}

"""

SECTION = ReportSection(
    name="response-counts",
    order=85,
    title="Responses",
    html=HTML,
    markdown=MARKDOWN,
    context=_context,
    summary=lambda report: _counts(report),
)
