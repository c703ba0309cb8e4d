"""bbi reports: the category-sensitive HTML report and markdown/JSON summaries.

Reads only a run directory (results.json, run.yaml, manifest.json, suite.jsonl,
responses/, similarity.jsonl); never runs a model and never imports the adversaries.
"""

from reports.model import Report, load_report
from reports.render import FORMATS, render, render_html, render_markdown, summary, write_report

__all__ = [
    "FORMATS",
    "Report",
    "load_report",
    "render",
    "render_html",
    "render_markdown",
    "summary",
    "write_report",
]
