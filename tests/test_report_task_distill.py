"""`bbi report` on students from `bbi distill bird|circuit`: the behaviour table (the
method beside its controls, over seeds) next to the attack's view of the student.

Numbers are compared against the written results.json, formatted the way the report
formats them (``reports.charts.fmt``), never against literals.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fixtures_results import build_run, load_results, task_distill_record

from bbi.errors import BbiError
from bbi.runstore import write_json
from reports import load_report, write_report
from reports.charts import fmt, fmt_ci, fmt_p
from reports.render import build_context, signed

HOSTILE_SPEC = "hf:./m<b>"


class _Doc(HTMLParser):
    """Elements with their attributes, and the text of every element carrying ``data-metric``
    in a behaviour table, keyed by (table alias, row key, metric)."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []
        self.cells: dict[tuple[str, str, str], str] = {}
        self._table: str | None = None
        self._row: str | None = None
        self._cell: tuple[str, str, str] | None = None

    def handle_starttag(self, tag, attrs):
        a = {k: v or "" for k, v in attrs}
        self.elements.append((tag, a))
        if tag == "table":
            self._table = a.get("data-behaviour")
        elif tag == "tr":
            self._row = a.get("data-arm") or (
                "-" + a["data-control"] if "data-control" in a else None
            )
        elif tag == "td" and self._table and self._row and "data-metric" in a:
            self._cell = (self._table, self._row, a["data-metric"])
            self.cells[self._cell] = ""

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        if tag == "td":
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        self.text.append(data)
        if self._cell is not None:
            self.cells[self._cell] += data

    def having(self, attr: str, **match: str) -> list[dict[str, str]]:
        return [
            a
            for _, a in self.elements
            if attr in a and all(a.get(k) == v for k, v in match.items())
        ]


def _parse(html: str) -> _Doc:
    doc = _Doc()
    doc.feed(html)
    doc.close()
    return doc


def _write(run: Path, res: dict) -> Path:
    write_json(run / "results.json", res)
    return run


@pytest.fixture(scope="module")
def task_run(tmp_path_factory) -> Path:
    """student (base), student_lora (a LoRA record with attack deltas), student_bird
    (attacked; a spec with HTML in it), student_circuit (not attacked), student_bad (a
    malformed behaviour block)."""
    run = build_run(
        tmp_path_factory.mktemp("runs") / "task",
        students=("student", "student_lora", "student_bird"),
        adversaries=("surface", "tfidf"),
        n_per_category=10,
    )
    res = load_results(run)
    res["models"]["student_bird"]["spec"] = HOSTILE_SPEC
    res["models"]["student_circuit"] = {"spec": "hf:./runs/task/circuit", "role": "student"}
    res["models"]["student_bad"] = {"spec": "hf:./runs/task/bad", "role": "student"}
    res["distill"]["student_bird"] = task_distill_record("bird", HOSTILE_SPEC, seed=1)
    res["distill"]["student_circuit"] = task_distill_record(
        "circuit", "hf:./runs/task/circuit", seed=2
    )
    res["distill"]["student_bad"] = {
        "spec": "hf:./runs/task/bad",
        "method": "bird",
        "behaviour": {"version": 1, "rows": "not a table", "metrics": 3},
    }
    return _write(run, res)


@pytest.fixture(scope="module")
def task_html(task_run) -> tuple[str, _Doc]:
    html = write_report(task_run).read_text(encoding="utf-8")
    return html, _parse(html)


def test_behaviour_table_matches_results(task_run, task_html):
    _, doc = task_html
    res = load_results(task_run)
    for alias in ("student_bird", "student_circuit"):
        b = res["distill"][alias]["behaviour"]
        for arm in b["arms"]:
            for m in b["metrics"]:
                e = b["rows"][arm][m]
                assert doc.cells[(alias, arm, m)] == f"{fmt(e['mean'], 3)} {fmt_ci(e['ci'], 3)}"
        for ctl, row in b["deltas"].items():
            for m in b["metrics"]:
                e = row[m]
                want = f"{signed(e['mean'], 3)} {fmt_ci(e['ci'], 3)} p {fmt_p(e['p'])}"
                assert doc.cells[(alias, "-" + ctl, m)] == want
        # every arm and every method - control row, nothing else
        shown = {(r, m) for (a, r, m) in doc.cells if a == alias}
        assert shown == {(r, m) for r in b["arms"] for m in b["metrics"]} | {
            ("-" + c, m) for c in b["deltas"] for m in b["metrics"]
        }


def test_method_row_marked_and_directions_shown(task_run, task_html):
    _, doc = task_html
    res = load_results(task_run)
    for alias, method in (("student_bird", "bird"), ("student_circuit", "circuit")):
        (article,) = doc.having("data-task-distilled", **{"data-task-distilled": alias})
        assert article["data-method"] == method
        b = res["distill"][alias]["behaviour"]
        marked = []
        table = None
        for tag, a in doc.elements:
            if tag == "table":
                table = a.get("data-behaviour")
            if tag == "tr" and table == alias and a.get("data-method-row") == "true":
                assert "method" in a["class"].split() and a["data-row"] == "behaviour-arm"
                marked.append(a["data-arm"])
        assert marked == [method] and set(b["controls"]) < set(b["arms"])
    heads = doc.having("data-higher-is-better")
    dirs = {(h["data-metric"], h["data-higher-is-better"]) for h in heads}
    bird = res["distill"]["student_bird"]["behaviour"]["higher_is_better"]
    assert {(m, "true" if up else "false") for m, up in bird.items()} <= dirs
    assert ("over_refusal_rate", "false") in dirs and ("refusal_rate", "true") in dirs
    assert doc.having("title", title="lower is better")


def test_seeds_facts_and_attack_beside(task_run, task_html):
    html, doc = task_html
    res = load_results(task_run)
    assert [d["data-seeds"] for d in doc.having("data-seeds")] == ["3", "3"]
    assert html.count("(0, 1, 2) · 95% intervals") == 2
    text = "".join(doc.text)
    # bird: diagnostics and layers; circuit: accuracies and size
    diag = res["distill"]["student_bird"]["diagnostics"]
    for k, v in diag.items():
        assert f"<dt>{k.replace('_', ' ')}</dt><dd>{fmt(v, 3)}</dd>" in html
    assert "teacher model.layers.3 → student model.layers.2" in text
    circ = res["distill"]["student_circuit"]
    assert f"<dt>teacher accuracy</dt><dd>{fmt(circ['teacher_accuracy'], 3)}</dd>" in html
    assert f"<dt>student accuracy (before)</dt><dd>{fmt(circ['student_accuracy'], 3)}</dd>" in html
    assert "k = 3 of 12 heads (L0H1, L1H0, L2H3)" in text
    # the attacked student: its best adversary's eps at the full budget
    advs = res["attack"]["comparisons"]["student_bird"]["adversaries"]
    best = max(advs, key=lambda a: advs[a]["eps"]["value"])
    (aside,) = doc.having("data-task-attack", **{"data-task-attack": "student_bird"})
    assert aside["data-attacked"] == "true"
    (p,) = doc.having("data-best-eps")  # only student_bird was attacked
    assert p["data-best-adversary"] == best
    assert float(p["data-best-eps"]) == advs[best]["eps"]["value"]
    e = advs[best]["eps"]
    assert f"ε = {fmt(e['value'])} {fmt_ci(e['ci'])} at q = {advs[best]['budget']}" in text
    # the base model (by spec) for context
    base = res["attack"]["comparisons"]["student"]["adversaries"]
    base_best = max(base, key=lambda a: base[a]["eps"]["value"])
    assert [float(x["data-base-eps"]) for x in doc.having("data-base-eps")][0] == pytest.approx(
        base[base_best]["eps"]["value"]
    )
    # the student nobody attacked yet
    (aside,) = doc.having("data-task-attack", **{"data-task-attack": "student_circuit"})
    assert aside["data-attacked"] == "false"
    assert "Not attacked yet; run bbi probe run + bbi attack." in text
    assert doc.having("href", href="#task-distillation")


def test_run_text_is_escaped(task_html):
    html, doc = task_html
    assert HOSTILE_SPEC not in html
    assert "hf:./m&lt;b&gt;" in html
    text = "".join(doc.text)
    assert f"zoo:student → {HOSTILE_SPEC}" in text  # shown literally, as text


def test_hostile_names_in_the_behaviour_block_are_inert(tmp_path):
    run = build_run(tmp_path / "evil", students=("s1",), adversaries=("surface",))
    res = load_results(run)
    rec = task_distill_record("bird", "hf:./x", seed=3)
    b = rec["behaviour"]
    evil_arm, evil_metric = "<i>task</i>", '<img src=x onerror="window.__pwned=1">'
    b["rows"][evil_arm] = b["rows"].pop("task")
    b["deltas"][evil_arm] = b["deltas"].pop("task")
    b["arms"] = [evil_arm if a == "task" else a for a in b["arms"]]
    b["metrics"][0] = evil_metric
    for table in (b["rows"], b["deltas"]):
        for row in table.values():
            row[evil_metric] = row.pop("refusal_rate")
    rec["diagnostics"]["<script>x</script>"] = 0.5
    rec["layers"]["teacher"] = "<u>layer</u>"
    rec["teacher"] = "zoo:t|`x`"
    res["models"]["s1_<b>bird</b>"] = {"spec": "hf:./x", "role": "student"}
    res["distill"] = {"s1_<b>bird</b>": rec}
    _write(run, res)
    html = write_report(run).read_text(encoding="utf-8")
    doc = _parse(html)
    tags = {t for t, _ in doc.elements}
    assert tags.isdisjoint({"i", "img", "u"}) and html.count("<script>") == 1
    text = "".join(doc.text)
    assert evil_arm in text and evil_metric in text and "<u>layer</u>" in text
    assert ("s1_<b>bird</b>", evil_arm, evil_metric) in doc.cells  # still a readable cell
    md = write_report(run, fmt="md").read_text(encoding="utf-8")
    section = md[md.index("## Representation") : md.index("## Per category")]
    outside_code = re.sub(r"`+[^`]*`+", "", section)
    assert not re.search(r"<[A-Za-z/!?]", outside_code)  # no tag ("p <0.001" is no tag)
    assert "&lt;i&gt;task&lt;/i&gt;" in section
    for block in section.split("\n\n"):  # hostile text does not break the table
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if lines:
            assert len({line.replace("\\|", "").count("|") for line in lines}) == 1, block


def test_malformed_behaviour_is_skipped(task_run, task_html):
    _, doc = task_html
    shown = [a["data-task-distilled"] for a in doc.having("data-task-distilled")]
    assert shown == ["student_bird", "student_circuit"]
    assert doc.having("data-unreadable")[0]["data-unreadable"] == "student_bad"
    rep = load_report(task_run)
    assert rep.task_distill_unreadable == ["student_bad"]


@pytest.mark.parametrize(
    "behaviour",
    [
        "a string",
        [1, 2, 3],
        None,
        {},
        {"metrics": [], "rows": {}},
        {"metrics": ["a"], "rows": {"none": "x", "bird": [1]}},
        {"metrics": ["a"], "rows": {"bird": {"a": {"mean": "high", "ci": "wide"}}}},
    ],
)
def test_unusable_behaviour_blocks_do_not_crash(tmp_path, behaviour):
    run = build_run(tmp_path / "bad", students=("student",), adversaries=("surface",))
    res = load_results(run)
    res["distill"] = {"student": {"spec": "zoo:student", "method": "bird", "behaviour": behaviour}}
    _write(run, res)
    doc = _parse(write_report(run).read_text(encoding="utf-8"))
    assert not doc.having("data-task-distilled")
    assert doc.having("data-unreadable")[0]["data-unreadable"] == "student"
    md = write_report(run, fmt="md").read_text(encoding="utf-8")
    assert "not shown: student." in md
    assert "task_distillation" not in json.loads(
        write_report(run, fmt="json").read_text(encoding="utf-8")
    )


def test_partly_malformed_behaviour_shows_the_rest(tmp_path):
    run = build_run(tmp_path / "partly", students=("student",), adversaries=("surface",))
    res = load_results(run)
    rec = task_distill_record("circuit", "hf:./c", seed=4)
    b = rec["behaviour"]
    b["rows"]["none"]["accuracy"] = {"mean": "n/a", "ci": None}  # unreadable cell
    b["rows"]["ce"]["faithfulness"] = {"mean": 0.5, "ci": [0.1], "per_seed": "x"}  # no CI
    b["rows"]["random"] = "garbage"  # an unreadable arm is left out
    del b["higher_is_better"], b["confidence"], b["seeds"]
    del b["deltas"]["ce"]["matched_cka"]
    b["deltas"]["random"] = 7
    rec["circuit"] = {"k": "three", "heads": [[0, 1], "x", [1, "a"]]}
    rec["teacher_accuracy"] = "high"
    res["models"]["student_circuit"] = {"spec": "hf:./c", "role": "student"}
    res["distill"] = {"student_circuit": rec}
    _write(run, res)
    html = write_report(run).read_text(encoding="utf-8")
    doc = _parse(html)
    assert [a["data-task-distilled"] for a in doc.having("data-task-distilled")] == [
        "student_circuit"
    ]
    arms = [a["data-arm"] for a in doc.having("data-arm")]
    assert arms == ["none", "ce", "circuit"]
    assert ("student_circuit", "none", "accuracy") not in doc.cells  # shown as "–"
    assert doc.cells[("student_circuit", "ce", "faithfulness")] == "0.500 –"
    assert not doc.having("data-higher-is-better")
    assert [a["data-control"] for a in doc.having("data-control")] == ["none", "ce"]
    assert ("student_circuit", "-ce", "matched_cka") not in doc.cells
    assert "<dt>teacher accuracy</dt>" not in html and "<dt>circuit</dt>" not in html
    assert doc.having("data-seeds")[0]["data-seeds"] == "0"
    write_report(run, fmt="md")
    write_report(run, fmt="json")


def test_distill_section_not_an_object(tmp_path):
    """A `distill` section of the wrong type is the run directory's one clear error."""
    run = build_run(tmp_path / "weird", students=("student",), adversaries=("surface",))
    res = load_results(run)
    res["distill"] = ["not", "an", "object"]
    _write(run, res)
    with pytest.raises(BbiError, match="distill"):
        write_report(run)


def test_lora_records_render_as_before(task_run, task_html):
    """The LoRA student keeps its paired-delta section and gets no behaviour table; a run
    with only LoRA records has no new section at all, in any format."""
    _, doc = task_html
    assert doc.having("data-distilled", **{"data-distilled": "student_lora"})
    assert not doc.having("data-task-distilled", **{"data-task-distilled": "student_lora"})
    run = build_run(task_run.parent / "lora_only", adversaries=("surface", "tfidf"))
    html = write_report(run).read_text(encoding="utf-8")
    assert 'id="task-distillation"' not in html and "data-behaviour" not in html
    assert 'id="distillation"' in html
    md = write_report(run, fmt="md").read_text(encoding="utf-8")
    assert "Representation and circuit" not in md and "## Distillation" in md
    out = json.loads(write_report(run, fmt="json").read_text(encoding="utf-8"))
    assert "task_distillation" not in out and out["distillation"]["student_lora"]


def test_base_student_is_not_the_bird_student(task_run):
    """`Students compared` uses the undistilled student as base, even when a bird student
    comes first in the model order."""
    res = load_results(task_run)
    res["models"] = {
        "student_bird": res["models"]["student_bird"],
        **{k: v for k, v in res["models"].items() if k != "student_bird"},
    }
    run = task_run.parent / "bird_first"
    shutil.copytree(task_run, run)
    _write(run, res)
    rep = load_report(run)
    assert rep.students[0].alias == "student_bird"
    assert build_context(rep)["deltas"]["base"].alias == "student"


def test_markdown_and_json_summaries(task_run):
    res = load_results(task_run)
    md = write_report(task_run, fmt="md").read_text(encoding="utf-8")
    section = md[md.index("## Representation and circuit distillation") : md.index("## Per cat")]
    b = res["distill"]["student_bird"]["behaviour"]
    assert "### student_bird (bird)" in section
    assert "| arm | refusal_rate ↑ | over_refusal_rate ↓ |" in section
    row = next(line for line in section.splitlines() if line.startswith("| **bird** (method) |"))
    e = b["rows"]["bird"]["refusal_rate"]
    assert f"| {fmt(e['mean'], 3)} {fmt_ci(e['ci'], 3)} |" in row
    row = next(line for line in section.splitlines() if line.startswith("| bird − task |"))
    e = b["deltas"]["task"]["over_refusal_rate"]
    assert f"{signed(e['mean'], 3)} {fmt_ci(e['ci'], 3)} p {fmt_p(e['p'])}" in row
    assert f"`{HOSTILE_SPEC}`" in section  # a code span: shown verbatim, never as HTML
    assert "Mean over 3 seeds (0, 1, 2), 95% intervals" in section
    assert "Attack: not attacked yet; run `bbi probe run` + `bbi attack`." in section
    assert "circuit: k = 3 of 12 heads" in section
    for block in section.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if lines:
            assert len({line.count("|") for line in lines}) == 1, block
    out = json.loads(write_report(task_run, fmt="json").read_text(encoding="utf-8"))
    got = out["task_distillation"]
    assert set(got) == {"student_bird", "student_circuit"}
    assert (
        got["student_bird"]["arms"]["bird"]["refusal_rate"]["value"]
        == (b["rows"]["bird"]["refusal_rate"]["mean"])
    )
    assert (
        got["student_bird"]["deltas"]["none"]["guided_cka"]["p"]
        == (b["deltas"]["none"]["guided_cka"]["p"])
    )
    assert got["student_bird"]["attacked"] and got["student_bird"]["eps"]["value"] is not None
    assert got["student_circuit"]["attacked"] is False and got["student_circuit"]["eps"] is None


def test_report_with_only_a_distilled_student(tmp_path):
    """`bbi distill bird --run` before any probe or attack: the report shows the table."""
    run = build_run(tmp_path / "fresh", students=("student",), attack=False)
    res = load_results(run)
    del res["similarity"]
    res["models"]["student_bird"] = {"spec": "hf:./b", "role": "student"}
    res["distill"] = {"student_bird": task_distill_record("bird", "hf:./b")}
    _write(run, res)
    doc = _parse(write_report(run).read_text(encoding="utf-8"))
    assert [a["data-task-distilled"] for a in doc.having("data-task-distilled")] == ["student_bird"]
    assert doc.having("data-attacked", **{"data-attacked": "false"})
    write_report(run, fmt="md")
    write_report(run, fmt="json")
