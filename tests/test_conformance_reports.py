"""Every registered report section, built-in or from a plug-in, passes the same checks:
it renders on the results fixtures and on an empty or damaged run, run-provided text
stays inert (escaped in HTML, inert in markdown), and the JSON and markdown carry it."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fixtures_results import (
    HOSTILE_TEXT,
    build_run,
    load_results,
    task_distill_record,
    token_curve_record,
)
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.runstore import write_json
from reports.model import Report, load_report
from reports.render import render, render_section
from reports.sections import SECTIONS, ReportSection, ordered

BUILTIN = list(SECTIONS.names())
PLUGIN = ["response-counts"]  # tests/plugin/bbi_example_plugin/section.py
ALL = BUILTIN + PLUGIN

pytestmark = pytest.mark.usefixtures("example_plugin")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sections")
    full = build_run(root / "full", n_per_category=20)
    res = load_results(full)
    res["distill"] = {"student_lora": task_distill_record("bird", "hf:/tmp/bird")}
    res["token_curve"] = {"student_lora": token_curve_record("student_lora")}
    write_json(full / "results.json", res)
    evil = build_run(
        root / "evil",
        students=("s1",),
        adversaries=("surface", "<b>adv</b>"),
        categories=("factual", "<i>cat</i>"),
        planted={"<i>cat</i>": 0.4},
        n_per_category=20,
    )
    res = load_results(evil)
    res["attack"]["comparisons"]["s1"]["verdict"]["text"] = "<script>alert(1)</script>"
    planted = "<script>alert(1)</script><b>adv</b> \u202eevil"
    res["token_curve"] = {"s1<b>adv</b>": token_curve_record("s1", planted, null=None)}
    write_json(evil / "results.json", res)
    return {
        "full": full,
        "evil": evil,
        "similarity-only": build_run(root / "sim", attack=False, n_per_category=20),
        "no-null": build_run(root / "nonull", null=False, students=("student",), curves=False),
    }


def _damaged(run: Path, tmp_path: Path) -> Path:
    """The run with an unreadable behaviour block and no suite facts (a hand-edited file)."""
    import shutil

    target = tmp_path / "damaged"
    shutil.copytree(run, target)
    res = load_results(target)
    res["distill"]["student_lora"]["behaviour"] = {"rows": "nonsense", "metrics": 3}
    res["suite"] = {}
    write_json(target / "results.json", res)
    return target


def _empty_report(path: Path) -> Report:
    return Report(run="empty", path=path, results={}, suite={}, categories=[], models={},
                  teacher=None, attack_config=None, epsilon=None, alpha=None, comparisons=[],
                  similarity_only=[], manifest={}, config={})  # fmt: skip


# The payloads the fixtures plant in run-provided text (responses, verdict text, category
# and adversary names): none may reach the output as markup.
_LIVE = re.compile(r"<\s*(script|img|iframe)\b|<i>cat|<b>adv|onerror=\"", re.I)


def _inert_html(fragment: str) -> None:
    assert not _LIVE.search(fragment), _LIVE.search(fragment)
    assert "\u202e" not in fragment


def _inert_md(fragment: str) -> None:
    assert not _LIVE.search(fragment), _LIVE.search(fragment)
    assert "](https://evil" not in fragment and "\u202e" not in fragment


@pytest.mark.parametrize("name", ALL)
def test_section_is_registered_and_well_formed(name):
    section = SECTIONS.get(name)
    assert isinstance(section, ReportSection) and section.name == name
    assert section.html or section.markdown
    assert section in ordered()
    assert [s.order for s in ordered()] == sorted(s.order for s in ordered())


_RENDERED: dict[tuple[str, str], object] = {}


def _rendered(runs: dict[str, Path], run: str, what: str):
    """The loaded report and its full renders, once per fixture run (rendering is the
    slow part; the sections themselves are rendered in each test)."""
    if (run, "report") not in _RENDERED:
        _RENDERED[(run, "report")] = load_report(runs[run])
    if (run, what) not in _RENDERED:
        _RENDERED[(run, what)] = render(_RENDERED[(run, "report")], what)
    return _RENDERED[(run, what)]


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("run", ["full", "evil", "similarity-only", "no-null"])
def test_section_renders_inert_text_on_the_fixtures(runs, name, run):
    report = _rendered(runs, run, "report")
    section = SECTIONS.get(name)
    html = render_section(report, name, "html")
    md = render_section(report, name, "md")
    if html.strip():  # whatever a section shows, it shows under its own anchor
        assert f'id="{name}"' in html
    assert section.build(report) is not None or not (html or md)
    _inert_html(html)
    _inert_md(md)
    # what a section renders alone is what the whole report carries
    if html:
        assert html in _rendered(runs, run, "html")
    if md:
        assert md in _rendered(runs, run, "md")
    if section.summary is not None:
        data = json.loads(_rendered(runs, run, "json"))
        assert name in data["sections"]
        assert json.loads(json.dumps(data["sections"][name])) == data["sections"][name]


@pytest.mark.parametrize("name", ALL)
def test_section_renders_on_a_damaged_or_empty_run(runs, name, tmp_path):
    damaged = load_report(_damaged(runs["full"], tmp_path))
    assert damaged.task_distill_unreadable == ["student_lora"]
    for report in (damaged, _empty_report(tmp_path)):
        _inert_html(render_section(report, name, "html"))
        _inert_md(render_section(report, name, "md"))
    render(_empty_report(tmp_path), "json")


def test_hostile_model_text_is_escaped_where_it_is_shown(runs):
    report = load_report(runs["full"])
    html = render_section(report, "examples", "html")
    assert "&lt;script&gt;document.title" in html and HOSTILE_TEXT not in html


def test_bbi_report_shows_a_plugin_section(runs, tmp_path):
    runner = CliRunner()
    run = runs["full"]
    outputs = {}
    for fmt in ("html", "md", "json"):
        out = tmp_path / f"report.{fmt}"
        res = runner.invoke(app, ["report", str(run), "--format", fmt, "--output", str(out)])
        assert res.exit_code == 0, res.output
        outputs[fmt] = out.read_text(encoding="utf-8")
    counts = load_report(run)
    n = len(load_results(run)["models"])
    assert (
        'id="response-counts"' in outputs["html"] and 'href="#response-counts"' in outputs["html"]
    )
    assert outputs["html"].count('data-row="response-count"') == n
    assert outputs["html"].index('id="examples"') < outputs["html"].index('id="response-counts"')
    assert outputs["html"].index('id="response-counts"') < outputs["html"].index('id="methods"')
    assert "## Responses per model" in outputs["md"]
    data = json.loads(outputs["json"])["sections"]["response-counts"]
    assert set(data) == set(counts.models) and all(v["responses"] > 0 for v in data.values())
