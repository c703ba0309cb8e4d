"""`bbi report`: structure and numbers match results.json, text is inert, nothing is fetched."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fixtures_results import HOSTILE_TEXT, build_run, load_results
from typer.testing import CliRunner

from bbi.app.cli import app
from bbi.errors import BbiError
from bbi.runstore import RunDir, write_json
from reports import load_report, write_report
from reports.render import _md_cell


class _Doc(HTMLParser):
    """Collect elements with their attributes, script bodies and text, for assertions."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.scripts: list[str] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self._in: str | None = None

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag in ("script", "style"):
            self._in = tag
            (self.scripts if tag == "script" else self.styles).append("")

    def handle_startendtag(self, tag, attrs):
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag):
        if tag == self._in:
            self._in = None

    def handle_data(self, data):
        if self._in == "script":
            self.scripts[-1] += data
        elif self._in == "style":
            self.styles[-1] += data
        else:
            self.text.append(data)

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


@pytest.fixture(scope="module")
def full_run(tmp_path_factory) -> Path:
    return build_run(tmp_path_factory.mktemp("runs") / "demo")


@pytest.fixture(scope="module")
def full_html(full_run) -> tuple[str, _Doc]:
    path = write_report(full_run)
    html = path.read_text(encoding="utf-8")
    return html, _parse(html)


def _close(a: str, b: float) -> bool:
    return a != "" and abs(float(a) - b) < 1e-9


# ---- numbers ------------------------------------------------------------------------
def test_summary_rows_match_results(full_run, full_html):
    _, doc = full_html
    res = load_results(full_run)
    comps = res["attack"]["comparisons"]
    students = [a for a, c in comps.items() if c["role"] == "student"]
    tables = doc.having("data-comparison")
    assert {t["data-comparison"] for t in tables} >= set(students)
    # Walk rows in document order and attribute each to the table before it.
    current = None
    seen = set()
    for tag, attrs in doc.elements:
        if tag == "table" and "summary" in attrs.get("class", "").split():
            current = attrs["data-comparison"]
        if tag == "tr" and attrs.get("data-row") == "adversary" and current:
            adv = attrs["data-adversary"]
            want = comps[current]["adversaries"][adv]["eps"]
            assert _close(attrs["data-eps"], want["value"])
            assert _close(attrs["data-lo"], want["ci"][0]) and _close(
                attrs["data-hi"], want["ci"][1]
            )
            assert _close(attrs["data-p"], want["p"])
            assert int(attrs["data-n"]) == want["n"]
            null_want = comps["teacher_null"]["adversaries"][adv]["eps"]["value"]
            assert _close(attrs["data-null-eps"], null_want)
            seen.add((current, adv))
        if tag == "tr" and attrs.get("data-row") == "similarity" and current:
            want = res["similarity"][current]["test"]
            assert _close(attrs["data-value"], want["value"])
            assert int(attrs["data-n"]) == want["n"]
    assert seen == {(s, a) for s in students for a in comps[s]["adversaries"]}


def test_heatmap_cells_match_per_category(full_run, full_html):
    _, doc = full_html
    comps = load_results(full_run)["attack"]["comparisons"]
    cells = [
        a
        for tag, a in doc.elements
        if tag == "g" and "data-category" in a and "data-adversary" in a
    ]
    expected = {
        (alias, adv, cat): est
        for alias, comp in comps.items()
        for adv, a in comp["adversaries"].items()
        for cat, est in a["per_category"].items()
    }
    got = {(c["data-comparison"], c["data-adversary"], c["data-category"]): c for c in cells}
    assert set(got) == set(expected)
    for key, est in expected.items():
        c = got[key]
        assert _close(c["data-eps"], est["value"])
        assert _close(c["data-lo"], est["ci"][0]) and _close(c["data-hi"], est["ci"][1])
        assert c["data-significant"] == ("true" if est["significant"] else "false")


def test_verdicts_and_giveaways(full_run, full_html):
    _, doc = full_html
    comps = load_results(full_run)["attack"]["comparisons"]
    cards = {a["data-verdict"]: a for a in doc.having("data-verdict")}
    assert set(cards) == {a for a, c in comps.items() if c["role"] == "student"}
    for alias, card in cards.items():
        v = comps[alias]["verdict"]
        assert card["data-status"] == v["status"]
        assert card["data-broken-by"] == (v["broken_by"] or "")
        assert card["data-at-budget"] == ("" if v["at_budget"] is None else str(v["at_budget"]))
    # The planted categories are the ones named in the first student's verdict card.
    first = next(iter(cards))
    giveaways = [a["data-giveaway"] for a in doc.having("data-giveaway")]
    sig = {
        cat
        for a in comps[first]["adversaries"].values()
        for cat, est in a["per_category"].items()
        if est["significant"]
    }
    assert sig and set(giveaways[: len(sig)]) == sig
    assert doc.having("data-calibration", **{"data-calibration": "ok"})


def test_queries_until_told_apart(full_run, full_html):
    _, doc = full_html
    comps = load_results(full_run)["attack"]["comparisons"]
    for rec in (a for c in comps.values() for a in c["adversaries"].values()):
        for pt in rec["sequential"]:  # queries = training budget + 2 per test prompt
            n = pt["n_to_reject"]
            assert pt["queries"] == (None if n is None else pt["q"] + 2 * n)
    first = comps["student"]["adversaries"]
    best = {
        a: min((pt["queries"] for pt in r["sequential"] if pt["queries"]), default=None)
        for a, r in first.items()
    }
    assert any(b is not None for b in best.values())  # the planted student is told apart
    shown = [
        (e["data-seq-adversary"], e["data-seq-queries"]) for e in doc.having("data-seq-adversary")
    ]
    for a, b in best.items():
        assert (a, "" if b is None else str(b)) in shown


def test_curves_and_similarity_points(full_run, full_html):
    _, doc = full_html
    res = load_results(full_run)
    comps = res["attack"]["comparisons"]
    rows = [a for tag, a in doc.elements if tag == "tr" and "data-strategy" in a]
    n_points = sum(
        len(pts)
        for c in comps.values()
        for a in c["adversaries"].values()
        for pts in a["curves"].values()
    )
    assert len(rows) == n_points
    for r in rows[:50]:
        table_comp = (
            None  # rows carry adversary/strategy/k/q; find the matching point in any comparison
        )
        matches = [
            p
            for alias, c in comps.items()
            for p in c["adversaries"][r["data-adversary"]]["curves"][r["data-strategy"]]
            if p["q"] == int(r["data-q"])
            and p["k"] == int(r["data-k"])
            and _close(r["data-value"], p["value"])
        ]
        assert matches, (r, table_comp)
    sim_cells = [
        a for tag, a in doc.elements if tag == "td" and "data-model" in a and "data-category" in a
    ]
    assert sim_cells
    for c in sim_cells:
        want = res["similarity"][c["data-model"]]["per_category"][c["data-category"]]["value"]
        assert _close(c["data-value"], want)


def test_student_deltas(full_run, full_html):
    _, doc = full_html
    res = load_results(full_run)
    comps = res["attack"]["comparisons"]
    deltas = {
        a["data-measure"]: a for tag, a in doc.elements if tag == "tr" and "data-measure" in a
    }
    for adv in comps["student"]["adversaries"]:
        d = deltas[f"ε {adv}"]
        # the row's delta cell follows; check via the table cells below
        assert d
    cells = [a["data-delta"] for tag, a in doc.elements if tag == "td" and "data-delta" in a]
    want = [
        comps["student_lora"]["adversaries"][a]["eps"]["value"]
        - comps["student"]["adversaries"][a]["eps"]["value"]
        for a in comps["student"]["adversaries"]
    ]
    sim = (
        res["similarity"]["student_lora"]["test"]["value"]
        - res["similarity"]["student"]["test"]["value"]
    )
    assert abs(float(cells[0]) - sim) < 1e-9
    for got, w in zip(cells[1 : 1 + len(want)], want, strict=True):
        assert abs(float(got) - w) < 1e-9


def test_examples_show_both_responses(full_run, full_html):
    html, doc = full_html
    res = load_results(full_run)
    run = RunDir(full_run)
    examples = res["attack"]["comparisons"]["student"]["examples"]
    shown = {(a["data-comparison"], a["data-example"]) for a in doc.having("data-example")}
    for items in examples.values():
        for item in items:
            assert ("student", item["prompt_id"]) in shown
    # The texts come from the run directory, escaped; a plain one appears verbatim.
    pair = run.paired("student").set_index("id")
    pid = examples["factual"][0]["prompt_id"]
    assert pair.loc[pid, "teacher"] in html and pair.loc[pid, "other"] in html


# ---- safety: text is inert, nothing is fetched ------------------------------------------
def test_hostile_response_is_text_not_markup(full_html):
    html, doc = full_html
    # The only script element is the report's own (allowed by its CSP hash).
    assert len(doc.scripts) == 1 and "pwned" not in doc.scripts[0]
    assert not [a for tag, a in doc.elements if tag == "img"]
    assert not any(k.startswith("on") for _, a in doc.elements for k in a)
    text = "".join(doc.text)
    visible = HOSTILE_TEXT.replace("\u202e", "U+202E")
    assert visible in text  # shown literally, the bidi override made visible
    assert "&lt;script&gt;document.title" in html
    assert "\u202e" not in html


def test_no_network_resources(full_html):
    html, doc = full_html
    urlish = re.compile(r"^\s*(https?:)?//", re.I)
    for tag, attrs in doc.elements:
        for key in ("src", "href", "xlink:href", "action", "poster", "data", "srcset"):
            if key in attrs:
                assert not urlish.match(attrs[key]), (tag, key, attrs[key])
                if tag != "a":
                    assert attrs[key].startswith(("#", "data:")), (tag, key, attrs[key])
        assert tag not in ("link", "iframe", "object", "embed", "img", "base")
    for css in doc.styles:
        for url in re.findall(r"url\(([^)]*)\)", css):
            assert url.strip("'\" ").startswith(("#", "data:"))
        assert "@import" not in css
    for _, attrs in doc.elements:
        for value in attrs.values():
            for url in re.findall(r"url\(([^)]*)\)", value):
                assert url.strip("'\" ").startswith("#"), value
    csp = doc.having("http-equiv", **{"http-equiv": "Content-Security-Policy"})
    assert csp and "default-src 'none'" in csp[0]["content"]


def test_autoescape_is_on_for_all_run_text(tmp_path):
    # Hostile names everywhere the run controls text: alias, category, adversary, notes.
    run = build_run(
        tmp_path / "evil",
        students=("s1",),
        adversaries=("surface", "<b>adv</b>"),
        categories=("factual", "<i>cat</i>"),
        planted={"<i>cat</i>": 0.4},
    )
    res = load_results(run)
    res["attack"]["comparisons"]["s1"]["verdict"]["text"] = "<script>alert(1)</script>"
    write_json(run / "results.json", res)
    doc = _parse(write_report(run).read_text(encoding="utf-8"))
    tags = {t for t, _ in doc.elements}
    assert "i" not in tags and len(doc.scripts) == 1
    assert "<i>cat</i>" in "".join(doc.text) and "<script>alert(1)</script>" in "".join(doc.text)


# ---- degraded runs ------------------------------------------------------------------
def test_similarity_only_report(tmp_path):
    run = build_run(tmp_path / "sim", attack=False)
    html = write_report(run).read_text(encoding="utf-8")
    doc = _parse(html)
    assert doc.having("data-note", **{"data-note": "attack"})
    assert not doc.having("data-heatmap")
    res = load_results(run)
    rows = [a for tag, a in doc.elements if tag == "tr" and a.get("data-row") == "similarity"]
    assert {r["data-model"] for r in rows} == set(res["similarity"])
    for r in rows:
        assert _close(r["data-value"], res["similarity"][r["data-model"]]["test"]["value"])
    md = write_report(run, fmt="md").read_text(encoding="utf-8")
    assert "no verdict yet" in md


def test_no_null_model_says_so(tmp_path):
    run = build_run(tmp_path / "nonull", null=False, students=("student",))
    doc = _parse(write_report(run).read_text(encoding="utf-8"))
    note = doc.having("data-note", **{"data-note": "null"})
    assert note
    assert "No A/A calibration in this run" in "".join(doc.text)
    assert not doc.having("data-calibration")
    assert not doc.having("data-null-eps")


def test_no_curves_section_note(tmp_path):
    run = build_run(tmp_path / "nocurves", curves=False)
    doc = _parse(write_report(run).read_text(encoding="utf-8"))
    assert doc.having("data-note", **{"data-note": "curves"})
    assert not doc.having("data-curves")
    assert not doc.having("data-delta") or True  # deltas still present with two students
    assert doc.having("data-measure")


def test_failed_calibration_is_flagged(tmp_path):
    run = build_run(tmp_path / "badnull")
    res = load_results(run)
    adv = next(iter(res["attack"]["comparisons"]["teacher_null"]["adversaries"]))
    null = res["attack"]["comparisons"]["teacher_null"]
    assert null["verdict"]["calibration"]["ok"] is True
    # The verdict's family-wise A/A test decides ...
    null["verdict"]["calibration"] = {
        **null["verdict"]["calibration"],
        "ok": False,
        "rejected": [f"style_format/{adv}"],
    }
    write_json(run / "results.json", res)
    doc = _parse(write_report(run).read_text(encoding="utf-8"))
    assert doc.having("data-calibration", **{"data-calibration": "failed"})
    assert write_report(run, fmt="json") and json.loads((run / "report.json").read_text())[
        "null_calibration"
    ]["failing"] == [adv]
    # ... and results without it fall back to "every eps CI covers 0".
    del null["verdict"]["calibration"]
    null["adversaries"][adv]["eps"] = {"value": 0.2, "ci": [0.1, 0.3], "n": 20, "p": 0.001}
    write_json(run / "results.json", res)
    doc = _parse(write_report(run).read_text(encoding="utf-8"))
    assert doc.having("data-calibration", **{"data-calibration": "failed"})


def test_missing_responses_do_not_break_examples(tmp_path):
    run = build_run(tmp_path / "noresp", students=("student",))
    (run / "responses" / "student.jsonl").unlink()
    html = write_report(run).read_text(encoding="utf-8")
    assert "(response not found in the run directory)" in html


# ---- formats and CLI --------------------------------------------------------------------
def test_markdown_summary(full_run):
    md = write_report(full_run, fmt="md").read_text(encoding="utf-8")
    res = load_results(full_run)
    assert md.startswith(f"# bbi report: {res['run']}")
    assert "## Verdict" in md and "## Summary" in md and "## Per category" in md
    eps = res["attack"]["comparisons"]["student"]["adversaries"]["tfidf"]["eps"]
    row = next(line for line in md.splitlines() if line.startswith("| tfidf |"))
    assert f"{eps['value']:.2f}".replace("-", "\u2212") in row
    for cat in res["suite"]["categories"]:
        assert any(line.startswith(f"| {cat} |") for line in md.splitlines())
    # every table row has the same number of cells as its header
    for block in md.split("\n\n"):
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if lines:
            widths = {line.replace("\\|", "").count("|") for line in lines}
            assert len(widths) == 1, block


def test_json_summary(full_run):
    out = json.loads(write_report(full_run, fmt="json").read_text(encoding="utf-8"))
    res = load_results(full_run)
    comps = res["attack"]["comparisons"]
    assert out["run"] == res["run"] and out["suite"]["hash"] == res["suite"]["hash"]
    assert out["epsilon"] == res["attack"]["config"]["epsilon"]
    for alias, comp in comps.items():
        got = out["comparisons"][alias]
        assert got["verdict"]["broken_by"] == comp["verdict"]["broken_by"]
        for adv, a in comp["adversaries"].items():
            assert got["adversaries"][adv]["value"] == a["eps"]["value"]
            assert got["adversaries"][adv]["ci"] == a["eps"]["ci"]
    assert out["indistinguishable"] == all(
        c["verdict"]["indistinguishable"] for c in comps.values() if c["role"] == "student"
    )


def test_cli_report_formats_and_errors(full_run, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.html"
    res = runner.invoke(app, ["report", str(full_run), "-o", str(out)])
    assert res.exit_code == 0, res.output
    assert out.read_text(encoding="utf-8").startswith("<!doctype html>")
    res = runner.invoke(app, ["report", str(full_run), "--format", "json", "-o", "-"])
    assert res.exit_code == 0 and json.loads(res.stdout)["run"] == "demo"
    res = runner.invoke(app, ["report", str(full_run), "--format", "pdf"])
    assert res.exit_code == 2 and "unknown report format" in res.output
    res = runner.invoke(app, ["report", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "run directory not found" in res.output
    empty = tmp_path / "empty"
    empty.mkdir()
    res = runner.invoke(app, ["report", str(empty)])
    assert res.exit_code == 2 and "no results.json" in res.output


def test_malformed_results_is_a_user_error(tmp_path):
    run = build_run(tmp_path / "bad", students=("student",))
    res = load_results(run)
    res["attack"]["comparisons"]["student"]["adversaries"]["tfidf"]["eps"] = {"value": "high"}
    write_json(run / "results.json", res)
    with pytest.raises(BbiError, match=r"tfidf\.eps\.value"):
        load_report(run)
    (run / "results.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(BbiError, match="invalid JSON"):
        load_report(run)


@pytest.mark.parametrize(
    ("version", "needle"), [(1, "older bbi"), (None, "older bbi"), (3, "newer bbi")]
)
def test_attack_section_of_another_schema_version_is_one_clear_error(tmp_path, version, needle):
    run = build_run(tmp_path / "old", students=("student",))
    res = load_results(run)
    assert res["attack"]["schema_version"] == 2
    if version is None:
        del res["attack"]["schema_version"]
    else:
        res["attack"]["schema_version"] = version
    write_json(run / "results.json", res)
    out = CliRunner().invoke(app, ["report", str(run)])
    assert out.exit_code == 2 and needle in out.output and "schema_version" in out.output
    assert len(out.output.strip().splitlines()) == 1


def test_results_carry_no_key_outside_the_schema(full_run):
    from bbi.results_schema import parse_attack

    res = load_results(full_run)
    assert parse_attack(res["attack"]).dump() == res["attack"]  # nothing dropped or added
    res["attack"]["comparisons"]["student"]["verdict"]["surprise"] = 1
    with pytest.raises(BbiError, match="surprise"):
        parse_attack(res["attack"])


def test_category_order_follows_distinguishability(full_run):
    rep = load_report(full_run)
    order = rep.category_order()
    best = rep.students[0].best_per_category()
    vals = [best[c][0].value for c in order]
    assert vals == sorted(vals, reverse=True)


def test_markdown_escapes_run_text(tmp_path):
    hostile = "[click](https://evil.example/) <img src=x onerror=alert(1)> *bold* _x_ a|b ~~s~~"
    run = build_run(
        tmp_path / "evil",
        students=("s1",),
        adversaries=("surface", "<b>adv</b>"),
        categories=("factual", "**cat**_[x](y)"),
        planted={"**cat**_[x](y)": 0.4},
    )
    res = load_results(run)
    res["run"] = hostile
    res["attack"]["comparisons"]["s1"]["verdict"]["text"] = "<script>alert(1)</script>"
    res["models"]["teacher"]["spec"] = "hf:./a`b``c|d"
    write_json(run / "results.json", res)
    md = write_report(run, fmt="md").read_text(encoding="utf-8")
    first = md.splitlines()[0]
    assert first.startswith("# bbi report: ") and "\\[click\\]" in first
    assert "<" not in md and "&lt;img src=x" in md and "&lt;b&gt;adv&lt;/b&gt;" in md
    assert "\\*bold\\*" in first and "\\_x\\_" in first and "a\\|b" in first and "\\~\\~s" in first
    assert "\\*\\*cat\\*\\*\\_\\[x\\](y)" in md
    assert "```hf:./a`b``c\\|d```" in md  # a code span its backticks cannot close
    for block in md.split("\n\n"):  # hostile text does not break the tables
        lines = [line for line in block.splitlines() if line.startswith("|")]
        if lines:
            assert len({line.replace("\\|", "").count("|") for line in lines}) == 1, block
    summary = json.loads(write_report(run, fmt="json").read_text(encoding="utf-8"))
    assert summary["run"] == hostile  # JSON keeps the text exactly (json.dumps escapes it)


def test_json_summary_is_strict_json(tmp_path):
    run = build_run(tmp_path / "inf", students=("student",))
    res = load_results(run)
    res["attack"]["comparisons"]["student"]["adversaries"]["tfidf"]["eps"]["value"] = float("inf")
    write_json(run / "results.json", res)
    text = write_report(run, fmt="json").read_text(encoding="utf-8")
    assert "Infinity" not in text and "NaN" not in text
    assert json.loads(text)["comparisons"]["student"]["adversaries"]["tfidf"]["value"] is None


# ---- distillation: paired deltas ------------------------------------------------------
def test_distillation_section_matches_deltas(full_run, full_html):
    _, doc = full_html
    res = load_results(full_run)
    deltas = res["attack"]["deltas"]
    assert deltas  # the fixture's second student is distilled from the first
    readings = {a["data-distilled"]: a["data-reading"] for a in doc.having("data-reading")}
    assert readings == {alias: d["reading"]["status"] for alias, d in deltas.items()}
    current, seen, cats_seen = None, set(), set()
    for tag, attrs in doc.elements:
        if tag == "table" and "data-distilled" in attrs:
            current = attrs["data-distilled"]
        if tag == "tr" and attrs.get("data-row") == "distill-adversary":
            want = deltas[current]["adversaries"][attrs["data-adversary"]]["delta"]
            assert _close(attrs["data-value"], want["value"])
            assert _close(attrs["data-lo"], want["ci"][0]) and _close(
                attrs["data-hi"], want["ci"][1]
            )
            assert _close(attrs["data-p"], want["p"]) and int(attrs["data-n"]) == want["n"]
            seen.add((current, attrs["data-adversary"]))
        if tag == "tr" and attrs.get("data-row") == "distill-similarity":
            want = deltas[current]["similarity"]
            assert _close(attrs["data-value"], want["value"]) and int(attrs["data-n"]) == want["n"]
            seen.add((current, "similarity"))
        if tag == "td" and "data-category" in attrs and "data-significant" in attrs:
            e = deltas[current]["adversaries"][attrs["data-adversary"]]["per_category"][
                attrs["data-category"]
            ]
            assert _close(attrs["data-value"], e["value"])
            assert attrs["data-significant"] == ("true" if e["significant"] else "false")
            cats_seen.add((current, attrs["data-adversary"], attrs["data-category"]))
    assert seen == {(s, a) for s, d in deltas.items() for a in [*d["adversaries"], "similarity"]}
    assert cats_seen == {
        (s, a, c)
        for s, d in deltas.items()
        for a, e in d["adversaries"].items()
        for c in e["per_category"]
    }
    assert doc.having("href", href="#distillation")


def test_distillation_in_markdown_and_json(full_run):
    res = load_results(full_run)
    d = res["attack"]["deltas"]["student_lora"]
    md = write_report(full_run, fmt="md").read_text(encoding="utf-8")
    assert "## Distillation: did it get closer?" in md
    assert _md_cell(d["reading"]["text"]) in md  # "p < 0.05" is written as inert markdown
    for adv, e in d["adversaries"].items():
        row = next(line for line in md.splitlines() if line.startswith(f"| ε {adv} |"))
        v = e["delta"]["value"]
        assert ("+" if round(v, 2) > 0 else "") + f"{v:.2f}".replace("-", "\u2212") in row
    out = json.loads(write_report(full_run, fmt="json").read_text(encoding="utf-8"))
    got = out["distillation"]["student_lora"]
    assert got["base"] == d["base"] and got["status"] == d["reading"]["status"]
    for adv, e in d["adversaries"].items():
        assert got["adversaries"][adv]["delta"]["value"] == e["delta"]["value"]
        assert got["adversaries"][adv]["delta"]["ci"] == e["delta"]["ci"]
    assert got["similarity"]["delta"]["value"] == d["similarity"]["value"]


def test_distillation_section_escapes_run_text(tmp_path):
    run = build_run(
        tmp_path / "evil",
        students=("s1", "s1_kd"),
        adversaries=("surface", "<b>adv</b>"),
        categories=("factual", "<i>cat</i>*_[x](y)"),
        planted={"<i>cat</i>*_[x](y)": 0.4},
    )
    assert load_results(run)["attack"]["deltas"]["s1_kd"]["adversaries"]["<b>adv</b>"]
    doc = _parse(write_report(run).read_text(encoding="utf-8"))
    assert {t for t, _ in doc.elements}.isdisjoint({"i"}) and len(doc.scripts) == 1
    text = "".join(doc.text)
    assert "ε <b>adv</b>" in text and "<i>cat</i>*_[x](y)" in text
    md = write_report(run, fmt="md").read_text(encoding="utf-8")
    section = md[md.index("## Distillation") : md.index("## Per category")]
    assert "<" not in section and "&lt;b&gt;adv&lt;/b&gt;" in section
    assert "&lt;i&gt;cat&lt;/i&gt;\\*\\_\\[x\\](y)" in section


def _adopt(run: Path, res: dict, cf: dict, **fields) -> dict:
    """Let the cross-fitted record ``cf`` (completed by ``fields``, one base adversary,
    surface) decide the fixture's student verdict; write results.json; the comparison."""
    from discriminators.verdict_cf import adopt_crossfit

    n = cf["primary"]["eps"]["n"]
    cf.update(n_prompts=n, responses=2 * n, adversaries=["surface"], **fields)
    comp = res["attack"]["comparisons"]["student"]
    comp["verdict"] = adopt_crossfit(comp["verdict"], cf)
    (run / "results.json").write_text(json.dumps(res), encoding="utf-8")
    return comp


def _with_crossfit(run: Path) -> dict:
    """The fixture's student verdict, decided by a cross-fitted record: one planted
    category, one category too small to test, one base adversary and the best rule."""
    import numpy as np

    from discriminators.verdict_cf import decide_crossfit

    res = load_results(run)
    cats_all = res["suite"]["categories"]
    cats = np.array([c for c in cats_all[:-1] for _ in range(30)] + [cats_all[-1]] * 3)
    d = np.zeros(len(cats))
    d[cats == cats_all[0]] = 1.0  # planted: every prompt of the first category
    rng = np.random.default_rng(0)
    base = rng.choice([-1.0, 0.0, 1.0], len(cats))
    cf = decide_crossfit(d, cats, 0.1, 0.05, base={"surface": base}, n_bootstrap=200)
    comp = _adopt(
        run,
        res,
        cf,
        plan="nested cross-fitted stack",
        folds=5,
        skipped={"mmd": "two-sample test: no per-prompt score to stack"},
        best_rule={"feature": "n_chars", "value": 0.2, "ci": [0.1, 0.3], "n": len(cats)},
    )
    return comp["verdict"]


def test_verdict_shows_the_crossfit_decision(tmp_path):
    run = build_run(tmp_path / "demo")
    v = _with_crossfit(run)
    cf, cats = v["crossfit"], load_results(run)["suite"]["categories"]
    html = write_report(run).read_text(encoding="utf-8")
    doc = _parse(html)
    card = doc.having("data-crossfit", **{"data-crossfit": "student"})
    assert card and card[0]["data-crossfit-rejected"] == "no"  # the overall test is diluted
    assert v["status"] == "distinguishable" and v["distinguishable_in"] == [cats[0]]
    # The decision comes with the interval of the test that made it.
    row = next(r for r in cf["categories"] if r["category"] == cats[0])
    assert row["significant"] and row["lower"] > 0.1
    lead = html.split('data-crossfit="student"', 1)[1].split("</p>", 1)[0]
    assert f"<b>{cats[0]}</b> ε ≥ {row['lower']:.2f}" in lead
    assert "Decided by the cross-fitted stack over surface" in lead
    assert f"test: {cf['primary']['method']}" in lead  # the test that decided is named
    # Base adversaries and the best one-feature rule beside it.
    base = doc.having("data-crossfit-base", **{"data-crossfit-base": "student"})
    assert base and doc.having("data-best-rule", **{"data-best-rule": "n_chars"})
    assert f"surface {cf['base']['surface']['value']:.2f}".replace("-", "\u2212") in html
    # Each category too small for its share of alpha says what it cannot detect.
    small = {e["data-min-detectable"] for e in doc.having("data-min-detectable")}
    noted = {r["category"] for r in cf["categories"] if r["note"]}
    assert cats[-1] in small and small == noted
    assert "too few test prompts (3) to detect any ε" in html
    mde = next(r["min_detectable"] for r in cf["categories"] if r["category"] == cats[1])
    if cats[1] in noted:
        assert f"too few test prompts (30) to detect ε ≤ {mde:.2f}" in html
    md = write_report(run, fmt="md").read_text(encoding="utf-8")
    assert "Decided by the cross-fitted stack over surface" in md
    assert f"{cats[0]} ε ≥ {row['lower']:.2f}" in md
    assert "too few test prompts (3) to detect any ε" in md
    assert "best one-feature rule (n\\_chars" in md or "best one-feature rule (n_chars" in md


def test_declared_sequential_test_is_rendered(tmp_path):
    """``verdict.sequential`` (the one declared "stop as soon as told apart" test) is shown
    with every billed query; the per-budget curve beside it is marked descriptive."""
    import numpy as np

    from discriminators.verdict import declared_sequential

    run = build_run(tmp_path / "demo")
    res = load_results(run)
    comps = res["attack"]["comparisons"]
    told = declared_sequential({"surface": np.ones(60), "tfidf": np.zeros(60)}, 80, 0.05)
    never = declared_sequential({"surface": np.zeros(60)}, 80, 0.05)
    comps["student"]["verdict"]["sequential"] = told
    others = [a for a, c in comps.items() if a != "student" and c["role"] != "null"]
    for alias in others:
        comps[alias]["verdict"]["sequential"] = never
    (run / "results.json").write_text(json.dumps(res), encoding="utf-8")
    html = write_report(run).read_text(encoding="utf-8")
    doc = _parse(html)
    shown = doc.having("data-sequential-declared", **{"data-sequential-declared": "student"})
    assert shown and shown[0]["data-sequential-queries"] == str(told["queries"])
    assert shown[0]["data-sequential-by"] == "surface"
    assert f"told apart after {told['queries']} queries" in html
    assert "the smallest of these is selected, so it is not the declared test" in html
    for alias in others:
        row = doc.having("data-sequential-declared", **{"data-sequential-declared": alias})
        assert row and row[0]["data-sequential-queries"] == ""
        assert "not told apart after" in html
    md = write_report(run, fmt="md").read_text(encoding="utf-8")
    bought = told["queries"] - 2 * told["n_to_reject"]
    assert f"**{told['queries']}** ({bought} bought to train at q = {told['q']}" in md


def test_verdict_names_the_selected_adversary_and_the_test_that_decided(tmp_path):
    """A record of the selected adversary names the candidate of each fold and the fold
    whose exact test decided (with its p), in the HTML and Markdown reports."""
    import numpy as np

    from discriminators.verdict_cf import decide_crossfit

    run = build_run(tmp_path / "demo")
    res = load_results(run)
    cats = np.repeat(res["suite"]["categories"][:2], 60)
    folds = np.tile([0, 1], 60)
    d = np.where(folds == 1, 1.0, 0.0)  # fold 2 (a rule) carries the evidence
    cf = decide_crossfit(
        d, cats, 0.1, 0.05, n_bootstrap=100, folds=folds, chosen=["stack", "rule:n_exclaims"]
    )
    assert cf["primary"]["decided_by"]["candidate"] == "rule:n_exclaims"
    assert cf["primary"]["decided_by"]["fold"] == 1 and cf["primary"]["rejected"]
    _adopt(
        run,
        res,
        cf,
        plan="cross-fitted selected adversary",
        folds=2,
        skipped={},
        stack={"value": 0.21, "ci": [0.1, 0.3], "n": len(cats), "p": 0.2, "lower": -0.05},
    )
    html = write_report(run).read_text(encoding="utf-8")
    lead = html.split('data-crossfit="student"', 1)[1].split("</p>", 1)[0]
    assert "Decided by the cross-fitted selected adversary" in lead
    assert 'data-chosen="stack,rule:n_exclaims"' in lead
    assert 'data-decided-by="rule:n_exclaims"' in lead and "fold 2's" in lead
    assert "the stack on every fold 0.21" in html
    md = write_report(run, fmt="md").read_text(encoding="utf-8")
    assert "fold 1: stack, fold 2: rule:n\\_exclaims" in md or "fold 2: rule:n_exclaims" in md
    assert "The test that decided: fold 2's" in md
