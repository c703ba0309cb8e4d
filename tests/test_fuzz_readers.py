"""Readers of user files and run files: hostile input is a one-line BbiError, never a crash.

Property-based tests throw arbitrary bytes and near-valid files (one field mutated, BOMs,
lone surrogates, U+2028, deep nesting, wrong types, torn lines) at every reader and
accept exactly two outcomes: success, or a ``BbiError`` whose message is one line. The
regression tests below pin each class of defect these readers once had.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import probes
from bbi.errors import BbiError
from bbi.runstore import (
    MAX_NESTING,
    RunDir,
    append_jsonl,
    atomic_write_text,
    read_jsonl,
    read_yaml_mapping,
    write_json,
)

# Sized for the whole file to take well under 30 s; no example database on disk.
FUZZ = settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
BOM = b"\xef\xbb\xbf"
LINE_SEPARATORS = ["\u2028", "\u2029", "\x85", "\x0b", "\x0c", "\x1c", "\r"]


def clean(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call fn (materialising generators): success or a one-line BbiError, nothing else."""
    try:
        out = fn(*args, **kwargs)
        if isinstance(out, Iterator):
            out = list(out)
        return out
    except BbiError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg, repr(msg)
        return exc


@contextmanager
def scratch() -> Iterator[Path]:
    """A fresh directory per hypothesis example (function-scoped fixtures are shared)."""
    path = Path(tempfile.mkdtemp(prefix="bbi-fuzz-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# ---- near-valid inputs -----------------------------------------------------------------

SUITE = [
    {
        "id": f"q{i}",
        "category": "math" if i % 2 else "chat",
        "subcategory": "s",
        "prompt": f"What is {i} + {i}?",
        "split": "test" if i == 0 else "train",
        "reference": str(2 * i),
        "source": "user",
        "perturbation": None,
        "base_id": None,
    }
    for i in range(4)
]
RESPONSES = [
    {
        "prompt_id": r["id"],
        "sample": 0,
        "text": f"answer {i}",
        "n_tokens": 2,
        "finish_reason": "stop",
        "cache_key": "k",
    }
    for i, r in enumerate(SUITE)
]

json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**20), max_value=10**20),
    st.floats(allow_nan=False),
    st.text(max_size=20),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
# Raw JSON fragments that are not what a field should hold, or not JSON bbi accepts.
hostile_fragment = st.sampled_from(
    [
        '"\\ud800"',
        '"a\\udfffb"',
        '"\\ud83d\\ude00"',
        '"x\u2028y\u2029z\x85"',
        "[" * 5000 + "]" * 5000,
        "[" * 100000,
        "1" * 5000,
        "1e999",
        "NaN",
        "-Infinity",
        "null",
        "[]",
        "{}",
        '{"a": 1, "a": 2}',
        '"\x00"',
        "true",
        "",
        '"',
    ]
)


@st.composite
def mutated_record_line(draw: st.DrawFn, record: dict) -> str:
    """One JSONL line of ``record`` with one field deleted, retyped or made hostile."""
    rec = dict(record)
    key = draw(st.sampled_from(sorted(rec) + ["extra"]))
    how = draw(st.sampled_from(["delete", "value", "fragment", "separator"]))
    if how == "delete":
        rec.pop(key, None)
        return json.dumps(rec, ensure_ascii=False)
    if how == "value":
        rec[key] = draw(json_value)
        return json.dumps(rec, ensure_ascii=False)
    if how == "separator":
        rec[key] = f"a{draw(st.sampled_from(LINE_SEPARATORS))}b"
        return json.dumps(rec, ensure_ascii=False)
    rec[key] = "@@"
    return json.dumps(rec, ensure_ascii=False).replace('"@@"', draw(hostile_fragment))


@st.composite
def damaged_bytes(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few byte-level injuries: truncation, BOM, bad UTF-8, CRLF, junk."""
    for _ in range(draw(st.integers(1, 3))):
        op = draw(st.sampled_from(["truncate", "bom", "insert", "crlf", "flip", "nothing"]))
        pos = draw(st.integers(0, len(data)))
        if op == "truncate":
            data = data[:pos]
        elif op == "bom":
            data = BOM + data
        elif op == "insert":
            junk = draw(
                st.sampled_from(
                    [b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\n", b'"', b"\xe2\x80\xa8"]
                )
                | st.binary(min_size=1, max_size=4)
            )
            data = data[:pos] + junk + data[pos:]
        elif op == "crlf":
            data = data.replace(b"\n", b"\r\n")
        elif op == "flip" and data:
            pos = min(pos, len(data) - 1)
            data = data[:pos] + bytes([data[pos] ^ draw(st.integers(1, 255))]) + data[pos + 1 :]
    return data


def jsonl_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode()


@st.composite
def near_valid_jsonl(draw: st.DrawFn, records: list[dict]) -> bytes:
    lines = [json.dumps(r, ensure_ascii=False) for r in records]
    i = draw(st.integers(0, len(lines) - 1))
    lines[i] = draw(mutated_record_line(records[i]))
    data = ("\n".join(lines) + draw(st.sampled_from(["\n", "", "\r\n"]))).encode(
        "utf-8", "surrogatepass"
    )
    if draw(st.booleans()):
        data = draw(damaged_bytes(data))
    return data


def jsonl_inputs(records: list[dict]) -> st.SearchStrategy[bytes]:
    return st.one_of(
        st.binary(max_size=200),
        near_valid_jsonl(records),
        damaged_bytes(jsonl_bytes(records)),
    )


# ---- property tests: user suites ---------------------------------------------------------


@FUZZ
@given(data=jsonl_inputs(SUITE))
def test_load_suite_jsonl_never_crashes(data):
    with scratch() as d:
        path = d / "suite.jsonl"
        path.write_bytes(data)
        out = clean(probes.load_suite, path)
        if isinstance(out, list):
            # whatever loads must be writable and load back identically
            back = d / "back.jsonl"
            probes.write_suite(out, back)
            assert probes.load_suite(back) == out


@st.composite
def near_valid_json_array(draw: st.DrawFn) -> bytes:
    items = [json.dumps(r, ensure_ascii=False) for r in SUITE]
    i = draw(st.integers(0, len(items) - 1))
    items[i] = draw(mutated_record_line(SUITE[i]))
    data = ("[\n" + ",\n".join(items) + "\n]\n").encode("utf-8", "surrogatepass")
    if draw(st.booleans()):
        data = draw(damaged_bytes(data))
    return data


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=200),
        near_valid_json_array(),
        json_value.map(lambda v: json.dumps(v).encode()),
    )
)
def test_load_suite_json_never_crashes(data):
    with scratch() as d:
        path = d / "suite.json"
        path.write_bytes(data)
        clean(probes.load_suite, path)


def csv_bytes(rows: list[dict], delimiter: str = ",") -> bytes:
    buf = io.StringIO(newline="")
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), delimiter=delimiter)
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue().encode()


csv_cell = st.one_of(
    st.text(max_size=12),
    st.sampled_from(['"', 'a"b', '"a"b', '"unterminated', "a,b", "a\tb", "\u2028", "\r", "\n"]),
)


@st.composite
def near_valid_csv(draw: st.DrawFn, delimiter: str) -> bytes:
    rows = [{k: ("" if v is None else v) for k, v in r.items()} for r in SUITE]
    header = list(rows[0])
    if draw(st.booleans()):  # a mutated header: duplicate, empty or odd column names
        i = draw(st.integers(0, len(header) - 1))
        header[i] = draw(st.sampled_from(["prompt", "", " prompt ", "id", '"q', "\ufeffid"]))
    lines = [delimiter.join(header)]
    for r in rows:
        cells = [str(v) for v in r.values()]
        if draw(st.booleans()):
            j = draw(st.integers(0, len(cells) - 1))
            cells[j] = draw(csv_cell)
        if draw(st.booleans()):
            cells = cells[: draw(st.integers(0, len(cells)))] or cells + ["extra"]
        lines.append(delimiter.join(cells))
    data = ("\r\n".join(lines) + "\r\n").encode()
    if draw(st.booleans()):
        data = draw(damaged_bytes(data))
    return data


@FUZZ
@given(
    suffix=st.sampled_from([".csv", ".tsv"]),
    kind=st.sampled_from(["bytes", "near", "damaged"]),
    data=st.data(),
)
def test_load_suite_csv_never_crashes(suffix, kind, data):
    delimiter = "\t" if suffix == ".tsv" else ","
    if kind == "bytes":
        raw = data.draw(st.binary(max_size=200))
    elif kind == "near":
        raw = data.draw(near_valid_csv(delimiter))
    else:
        raw = data.draw(damaged_bytes(csv_bytes(SUITE, delimiter)))
    with scratch() as d:
        path = d / f"suite{suffix}"
        path.write_bytes(raw)
        clean(probes.load_suite, path)


# Text hypothesis generates never holds surrogates; include every separator explicitly.
prompt_text = st.text(
    alphabet=st.characters(blacklist_categories=("Cs",)) | st.sampled_from(LINE_SEPARATORS),
    min_size=1,
    max_size=30,
).filter(lambda s: s.strip())


@FUZZ
@given(prompts=st.lists(prompt_text, min_size=1, max_size=5))
def test_any_prompt_text_round_trips_through_jsonl_and_csv(prompts):
    records = [
        {"id": f"p{i}", "prompt": p, "category": "c", "split": "train"}
        for i, p in enumerate(prompts)
    ]
    with scratch() as d:
        loaded = probes.load_suite(probes.write_suite(records, d / "s.jsonl"))
        assert [r["prompt"] for r in loaded] == prompts
        (d / "s.csv").write_bytes(csv_bytes(records))
        assert [r["prompt"] for r in probes.load_suite(d / "s.csv")] == prompts


# ---- property tests: JSONL and YAML readers ----------------------------------------------


@FUZZ
@given(data=jsonl_inputs(RESPONSES), torn_ok=st.booleans())
def test_read_jsonl_never_crashes(data, torn_ok):
    with scratch() as d:
        path = d / "r.jsonl"
        path.write_bytes(data)
        clean(read_jsonl, path, allow_torn_tail=torn_ok)


@settings(FUZZ, max_examples=40)
@given(records=st.lists(st.dictionaries(st.text(max_size=8), json_value, max_size=4), max_size=5))
def test_append_then_read_jsonl_round_trips(records):
    with scratch() as d:
        path = d / "r.jsonl"
        append_jsonl(path, records)
        assert list(read_jsonl(path)) == records


yaml_fragment = st.sampled_from(
    [
        "models:",
        "  teacher: {spec: zoo:teacher, role: teacher}",
        "a: &x [1, 2]",
        "b: *x",
        "c: &r [*r]",
        'd: "\\ud800"',
        "e: 2024-13-45",
        "f: !!binary zz",
        "g: !!python/object:os.system x",
        "h: [" * 50,
        "- list item",
        "? [a, b]",
        ": x",
        "i: 1" + "0" * 5000,
        "j: !!float nope",
        "k: !!int nope",
        "%YAML 1.1",
        "---",
        "...",
        "l: \t",
        "\x00",
        "m: '",
        "x: !!float _",  # PyYAML indexes an empty string here (IndexError)
        "x: !!int _",
    ]
)


@FUZZ
@given(
    data=st.one_of(
        st.binary(max_size=200),
        st.lists(yaml_fragment, max_size=6).map(lambda ls: "\n".join(ls).encode()),
        st.lists(yaml_fragment, max_size=6)
        .map(lambda ls: "\n".join(ls).encode())
        .flatmap(damaged_bytes),
    )
)
def test_read_yaml_mapping_never_crashes(data):
    """Any bytes: a dict or a one-line BbiError (``clean``), never another exception."""
    with scratch() as d:
        path = d / "c.yaml"
        path.write_bytes(data)
        out = clean(read_yaml_mapping, path)
        if isinstance(out, dict):
            # what was accepted can be written back as a run.yaml and read again
            rd = RunDir(d / "run", create=True)
            rd.write_config(out)
            assert isinstance(rd.config(), dict)


# ---- property tests: run directories -----------------------------------------------------


def make_run(path: Path) -> RunDir:
    """A small valid run directory (two models, four prompts)."""
    rd = RunDir(path, create=True)
    rd.write_config(
        {
            "models": {
                "teacher": {"spec": "zoo:teacher", "role": "teacher"},
                "student": {"spec": "zoo:student", "role": "student"},
            }
        }
    )
    write_json(rd.manifest_path, {"models": {"teacher": {"chat_format": "plain"}}, "timings": {}})
    write_json(rd.results_path, {"schema_version": 1, "run": "r", "similarity": {}})
    probes.write_suite(SUITE, rd.suite_path)
    append_jsonl(rd.responses_path("teacher"), RESPONSES)
    append_jsonl(rd.responses_path("student"), [dict(r, text="other") for r in RESPONSES])
    return rd


RUN_FILES = {
    "run.yaml": yaml.safe_dump(
        {"models": {"teacher": {"spec": "zoo:teacher", "role": "teacher"}}}
    ).encode(),
    "manifest.json": json.dumps({"models": {}, "timings": {}}).encode(),
    "results.json": json.dumps({"schema_version": 1, "run": "r"}).encode(),
    "suite.jsonl": jsonl_bytes(SUITE),
    "responses/student.jsonl": jsonl_bytes(RESPONSES),
}


@st.composite
def run_file_content(draw: st.DrawFn) -> tuple[str, bytes]:
    name = draw(st.sampled_from(sorted(RUN_FILES)))
    kind = draw(st.sampled_from(["bytes", "damaged", "near", "wrong-type"]))
    if kind == "bytes":
        return name, draw(st.binary(max_size=120))
    if kind == "damaged":
        return name, draw(damaged_bytes(RUN_FILES[name]))
    if kind == "wrong-type":
        value = draw(json_value)
        if name == "run.yaml":
            doc = {
                "models": draw(
                    st.sampled_from(
                        [value, {"teacher": value}, {"t": {"spec": value, "role": "teacher"}}]
                    )
                )
            }
            return name, yaml.safe_dump(doc).encode()
        return name, json.dumps(value).encode()
    if name.endswith(".jsonl"):
        records = SUITE if name == "suite.jsonl" else RESPONSES
        return name, draw(near_valid_jsonl(records))
    return name, draw(damaged_bytes(RUN_FILES[name]))


def exercise(rd: RunDir) -> None:
    """Every read accessor, plus the read-modify-write ones (which must not lose data)."""
    for call in (
        rd.config,
        rd.manifest,
        rd.read_results,
        rd.models,
        rd.aliases,
        rd.suite,
        lambda: rd.responses("student"),
        lambda: rd.responses("teacher"),
        lambda: rd.paired("student"),
        rd.teacher_alias,
    ):
        clean(call)
    for path, update in (
        (rd.manifest_path, lambda: rd.update_manifest(timings={"x": 1.0})),
        (rd.results_path, lambda: rd.update_results("similarity", {"s": 1})),
    ):
        before = path.read_bytes()
        if isinstance(clean(update), BbiError):
            assert path.read_bytes() == before  # a failed update leaves the file alone


@pytest.fixture(scope="module")
def run_template(tmp_path_factory) -> Path:
    return make_run(tmp_path_factory.mktemp("template") / "run").path


@settings(FUZZ, max_examples=60)
@given(change=run_file_content())
def test_run_dir_accessors_never_crash(run_template, change):
    name, data = change
    with scratch() as d:
        path = Path(shutil.copytree(run_template, d / "run"))
        (path / name).write_bytes(data)
        exercise(RunDir(path))


# ---- regressions, one per defect class ---------------------------------------------------


@pytest.mark.parametrize("name", list(RUN_FILES) + ["responses/teacher.jsonl"])
def test_non_utf8_run_file_names_the_file(tmp_path, name):
    rd = make_run(tmp_path / "run")
    (rd.path / name).write_bytes(b'{"a": "\xff\xfe"}\n')
    rd = RunDir(rd.path)
    calls = {
        "run.yaml": rd.models,
        "manifest.json": rd.manifest,
        "results.json": rd.read_results,
        "suite.jsonl": rd.suite,
        "responses/student.jsonl": lambda: rd.responses("student"),
        "responses/teacher.jsonl": lambda: rd.responses("teacher"),
    }
    with pytest.raises(BbiError, match=rf"{Path(name).name}:1: not UTF-8 text .* at byte 7"):
        calls[name]()


@pytest.mark.parametrize(
    "suffix, content, line, byte",
    [
        (".jsonl", b'{"prompt": "ok"}\n{"prompt": "\xc3("}\n', 2, 29),
        (".json", b'[{"prompt": "ok"},\n{"prompt": "\xc3("}]\n', 2, 31),
        (".csv", b"prompt\nok\n\xc3(\n", 3, 10),
        (".tsv", BOM + b"prompt\nok\n\xc3(\n", 3, 13),
        (".yaml", b"run: ok\nteacher: \xc3(\n", 2, 17),
    ],
)
def test_non_utf8_user_file_names_file_line_and_byte(tmp_path, suffix, content, line, byte):
    path = tmp_path / f"u{suffix}"
    path.write_bytes(content)
    read = read_yaml_mapping if suffix == ".yaml" else probes.load_suite
    with pytest.raises(BbiError, match=rf"u\{suffix}:{line}: not UTF-8 text \(.* at byte {byte}\)"):
        read(path)


def test_deep_nesting_is_an_error_naming_file_and_line(tmp_path):
    deep = "[" * 100_000
    (tmp_path / "u.jsonl").write_text('{"prompt": "a"}\n' + deep + "\n")
    with pytest.raises(BbiError, match=r"u\.jsonl:2: invalid JSON \(nested deeper"):
        probes.load_suite(tmp_path / "u.jsonl")
    (tmp_path / "u.json").write_text('[\n{"prompt": "a"},\n' + deep)
    with pytest.raises(BbiError, match=r"u\.json:3: invalid JSON \(nested deeper"):
        probes.load_suite(tmp_path / "u.json")
    # parsable, but deeper than bbi would ever write back safely
    ok_for_json = "[" * (MAX_NESTING + 5) + "]" * (MAX_NESTING + 5)
    (tmp_path / "v.jsonl").write_text(f'{{"prompt": "a", "x": {ok_for_json}}}\n')
    with pytest.raises(BbiError, match=r"v\.jsonl:1: .*nested deeper"):
        probes.load_suite(tmp_path / "v.jsonl")
    rd = make_run(tmp_path / "run")
    rd.manifest_path.write_text('{"a":\n' + deep)
    with pytest.raises(BbiError, match=r"manifest\.json:2: invalid JSON \(nested deeper"):
        rd.manifest()


def test_lone_surrogates_are_rejected_when_read(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_text('{"prompt": "ok"}\n{"prompt": "bad \\ud800 text"}\n')
    with pytest.raises(BbiError, match=r"u\.jsonl:2: .*lone surrogate \(\\ud800\)"):
        probes.load_suite(path)
    (tmp_path / "u.json").write_text('[{"prompt": "ok \\ud83d\\ude00"},\n {"prompt": "\\udc00"}]')
    with pytest.raises(BbiError, match=r"u\.json:2: .*lone surrogate"):
        probes.load_suite(tmp_path / "u.json")
    (tmp_path / "c.yaml").write_text('run: "x\\ud800"\n')
    with pytest.raises(BbiError, match=r"c\.yaml: .*lone surrogate"):
        read_yaml_mapping(tmp_path / "c.yaml")
    # a valid pair written as two escapes is fine
    path.write_text('{"prompt": "\\ud83d\\ude00"}\n')
    assert probes.load_suite(path)[0]["prompt"] == "\U0001f600"


def test_unencodable_text_is_a_bbi_error_and_leaves_no_temp_file(tmp_path):
    target = tmp_path / "results.json"
    target.write_text("old\n")
    with pytest.raises(BbiError, match=r"results\.json: .*lone surrogate"):
        atomic_write_text(target, "new \ud800\n")
    with pytest.raises(BbiError, match="lone surrogate"):
        write_json(target, {"text": "\udfff"})
    with pytest.raises(BbiError, match="lone surrogate"):
        append_jsonl(tmp_path / "r.jsonl", [{"text": "ok"}, {"text": "\ud800"}])
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


@pytest.mark.parametrize(
    "name, content, pattern",
    [
        ("manifest.json", b"", r"manifest\.json: empty file"),
        ("manifest.json", b'{"models": {', r"manifest\.json:1: invalid JSON"),
        ("manifest.json", b"[]", r"manifest\.json: expected a JSON object, got an array"),
        ("results.json", b"[]", r"results\.json: expected a JSON object, got an array"),
        ("results.json", b'{"run": "x"', r"results\.json:1: invalid JSON"),
        ("results.json", b"null", r"results\.json: expected a JSON object, got null"),
    ],
)
def test_corrupt_json_run_files(tmp_path, name, content, pattern):
    rd = make_run(tmp_path / "run")
    (rd.path / name).write_bytes(content)
    read = rd.manifest if name == "manifest.json" else rd.read_results
    with pytest.raises(BbiError, match=pattern):
        read()
    update = (
        (lambda: rd.update_manifest(x=1))
        if name == "manifest.json"
        else (lambda: rd.update_results("x", 1))
    )
    with pytest.raises(BbiError):
        update()
    assert (rd.path / name).read_bytes() == content  # never overwritten


@pytest.mark.parametrize(
    "models, pattern",
    [
        ("[teacher]", r"'models' must be a mapping"),
        ("{teacher: zoo:teacher}", r"models\.teacher must be a mapping"),
        ("{teacher: {spec: 3, role: teacher}}", r"models\.teacher\.spec must be a string"),
        ("{teacher: {spec: x, role: boss}}", r"models\.teacher\.role: unknown role 'boss'"),
        ("{teacher: {spec: x}}", r"models\.teacher\.role: unknown role None"),
        ("{'../x': {spec: x, role: teacher}}", r"models: invalid model alias '\.\./x'"),
        ("{1: {spec: x, role: teacher}}", r"models: invalid model alias 1"),
    ],
)
def test_run_yaml_models_of_the_wrong_shape(tmp_path, models, pattern):
    rd = make_run(tmp_path / "run")
    rd.config_path.write_text(f"models: {models}\n")
    with pytest.raises(BbiError, match=r"run\.yaml: " + pattern):
        rd.models()
    with pytest.raises(BbiError, match=r"run\.yaml: "):
        rd.teacher_alias()


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"id": None}, r"suite\.jsonl:2: field 'id'"),
        ({"id": "q0"}, r"suite\.jsonl:2: duplicate id 'q0' \(first at line 1\)"),
        ({"prompt": ["x"]}, r"suite\.jsonl:2: field 'prompt'"),
        ({"category": None}, r"suite\.jsonl:2: field 'category'"),
        ({"split": "dev"}, r"suite\.jsonl:2: field 'split'"),
        ({"reference": 5}, r"suite\.jsonl:2: field 'reference' must be a string or null"),
    ],
)
def test_suite_jsonl_records_are_checked(tmp_path, change, pattern):
    rd = make_run(tmp_path / "run")
    records = [SUITE[0], {**SUITE[1], **change}]
    rd.suite_path.write_bytes(jsonl_bytes(records))
    with pytest.raises(BbiError, match=pattern):
        RunDir(rd.path).suite()
    rd.suite_path.write_bytes(jsonl_bytes([{k: v for k, v in SUITE[0].items() if k != "split"}]))
    with pytest.raises(BbiError, match=r"suite\.jsonl:1: field 'split'"):
        RunDir(rd.path).suite()


@pytest.mark.parametrize(
    "change, pattern",
    [
        ({"prompt_id": 3}, r"student\.jsonl:2: field 'prompt_id'"),
        ({"text": None}, r"student\.jsonl:2: field 'text'"),
        ({"sample": -1}, r"student\.jsonl:2: field 'sample'"),
        ({"sample": True}, r"student\.jsonl:2: field 'sample'"),
        ({"n_tokens": 10**30}, r"student\.jsonl:2: field 'n_tokens'"),
        ({"finish_reason": []}, r"student\.jsonl:2: field 'finish_reason'"),
    ],
)
def test_response_lines_are_checked(tmp_path, change, pattern):
    rd = make_run(tmp_path / "run")
    rd.responses_path("student").write_bytes(
        jsonl_bytes([RESPONSES[0], {**RESPONSES[1], **change}])
    )
    with pytest.raises(BbiError, match=pattern):
        rd.responses("student")


def test_line_separators_inside_prompts_round_trip(tmp_path):
    records = [
        {**SUITE[0], "prompt": "a\u2028b\u2029c\x85d\x0be\x0cf\x1cg\rh\r\ni"},
        SUITE[1],
    ]
    path = probes.write_suite(records, tmp_path / "s.jsonl")
    assert probes.load_suite(path) == records
    # bbi re-reads its own copy in a run directory as well
    rd = make_run(tmp_path / "run")
    probes.write_suite(records, rd.suite_path)
    assert RunDir(rd.path).suite().loc["q0", "prompt"] == records[0]["prompt"]
    # and a CSV cell may hold them too (also the newline itself)
    (tmp_path / "s.csv").write_bytes(
        csv_bytes([{"id": "x", "prompt": records[0]["prompt"] + "\nj"}])
    )
    assert probes.load_suite(tmp_path / "s.csv")[0]["prompt"] == records[0]["prompt"] + "\nj"


def test_crlf_jsonl_reads_like_lf(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(jsonl_bytes(SUITE).replace(b"\n", b"\r\n"))
    assert probes.load_suite(path) == SUITE
    assert list(read_jsonl(path)) == SUITE


def test_leading_bom_is_accepted(tmp_path):
    (tmp_path / "u.jsonl").write_bytes(BOM + jsonl_bytes(SUITE))
    assert probes.load_suite(tmp_path / "u.jsonl") == SUITE
    (tmp_path / "u.json").write_bytes(BOM + json.dumps(SUITE).encode())
    assert probes.load_suite(tmp_path / "u.json") == SUITE
    (tmp_path / "u.csv").write_bytes(BOM + b"prompt,split\nhello,train\n")
    assert probes.load_suite(tmp_path / "u.csv")[0]["prompt"] == "hello"
    (tmp_path / "c.yaml").write_bytes(BOM + b"run: x\n")
    assert read_yaml_mapping(tmp_path / "c.yaml") == {"run": "x"}
    rd = make_run(tmp_path / "run")
    rd.manifest_path.write_bytes(BOM + b'{"a": 1}')
    assert rd.manifest() == {"a": 1}
    # only one, at the start: a BOM elsewhere is text JSON does not accept
    (tmp_path / "v.jsonl").write_bytes(jsonl_bytes(SUITE[:1]) + BOM + jsonl_bytes(SUITE[1:2]))
    with pytest.raises(BbiError, match=r"v\.jsonl:2: invalid JSON"):
        probes.load_suite(tmp_path / "v.jsonl")


@pytest.mark.parametrize(
    "content, pattern",
    [
        ('prompt,split\n"a"b,train\n', r"u\.csv:2: invalid CSV"),
        ('prompt,split\nok,train\n"never closed,train\n', r"u\.csv:3: invalid CSV"),
        ("prompt,split,prompt\na,train,b\n", r"u\.csv:1: duplicate column 'prompt'"),
        ("prompt, split ,split\na,train,test\n", r"u\.csv:1: duplicate column 'split'"),
        ("prompt,split\na,train,extra\n", r"u\.csv:2: more values than header columns"),
    ],
)
def test_malformed_csv(tmp_path, content, pattern):
    path = tmp_path / "u.csv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BbiError, match=pattern):
        probes.load_suite(path)


def test_csv_quoted_fields_may_span_lines(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text('id,prompt\na,"line one\nline two"\nb,"x\u2028y"\n', encoding="utf-8")
    assert [r["prompt"] for r in probes.load_suite(path)] == ["line one\nline two", "x\u2028y"]


def test_torn_last_line_of_a_user_file_is_an_error(tmp_path):
    path = tmp_path / "u.jsonl"
    path.write_bytes(jsonl_bytes(SUITE[:3]) + b'{"id": "q3", "prompt": "Wha')
    with pytest.raises(BbiError, match=r"u\.jsonl:4: invalid JSON .*unterminated"):
        probes.load_suite(path)
    with pytest.raises(BbiError, match=r"u\.jsonl:4: "):
        list(read_jsonl(path))
    assert len(list(read_jsonl(path, allow_torn_tail=True))) == 3
    # a complete last line without "\n" is fine in a user file
    path.write_bytes(jsonl_bytes(SUITE).rstrip(b"\n"))
    assert probes.load_suite(path) == SUITE


def test_torn_tail_of_bbis_own_files_is_skipped_and_repaired(tmp_path):
    rd = make_run(tmp_path / "run")
    path = rd.responses_path("teacher")
    with path.open("ab") as fh:
        fh.write(b'{"prompt_id": "q9", "text": "\xc3')  # killed mid-character
    assert len(rd.responses("teacher")) == len(RESPONSES)
    append_jsonl(path, [dict(RESPONSES[0], sample=1)])
    assert len(list(read_jsonl(path))) == len(RESPONSES) + 1  # strict read: clean again
    # a complete record that only lacks its "\n" is kept, not cut
    with path.open("ab") as fh:
        fh.write(json.dumps(dict(RESPONSES[0], sample=2)).encode())
    append_jsonl(path, [dict(RESPONSES[0], sample=3)])
    assert [r["sample"] for r in read_jsonl(path)][-2:] == [2, 3]


def test_written_files_get_the_umask_mode(tmp_path):
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "report.html", "<html></html>")
        write_json(tmp_path / "results.json", {"a": 1})
        rd = RunDir(tmp_path / "run", create=True)
        rd.write_config({"models": {}})
        probes.write_suite(SUITE, tmp_path / "s.jsonl")
        os.umask(0o077)
        atomic_write_text(tmp_path / "private.txt", "x")
    finally:
        os.umask(old)
    for p in ("report.html", "results.json", "run/run.yaml", "s.jsonl"):
        assert stat.S_IMODE((tmp_path / p).stat().st_mode) == 0o644, p
    assert stat.S_IMODE((tmp_path / "private.txt").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content, pattern",
    [
        ('{"prompt": ' + "1" * 5000 + "}\n", r"u\.jsonl:1: invalid JSON \(a number is too long\)"),
        (
            '{"prompt": "a", "prompt": "b"}\n',
            r"u\.jsonl:1: invalid JSON \(duplicate key 'prompt'\)",
        ),
        ('{"prompt": "a"}\n"just a string"\n', r"u\.jsonl:2: expected a JSON object, got a string"),
    ],
)
def test_other_json_hazards(tmp_path, content, pattern):
    path = tmp_path / "u.jsonl"
    path.write_text(content)
    with pytest.raises(BbiError, match=pattern):
        probes.load_suite(path)


@pytest.mark.parametrize(
    "content, expected",
    [
        ("", {}),
        ("null\n", {}),
        ("# only a comment\n", {}),
        ("[]\n", "expected a mapping at the top level"),
        ("0\n", "expected a mapping at the top level"),
        ("run: 2024-13-45\n", r"invalid YAML value \(month must be in 1\.\.12\)"),
        ("run: !!int x\n", "invalid YAML value"),
        ("a: &r [*r]\n", "an alias that contains itself"),
        ("run: [" * 2000 + "\n", r"nested"),
        ("a: [1\nb: 2\n", r"c\.yaml:2: invalid YAML"),
        (
            "a: &a [x,x,x,x,x,x,x,x,x,x]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "YAML aliases",
        ),
    ],
)
def test_yaml_hazards(tmp_path, content, expected):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    if isinstance(expected, dict):
        assert read_yaml_mapping(path) == expected
        return
    with pytest.raises(BbiError, match=expected):
        read_yaml_mapping(path)


def test_unreadable_paths_are_bbi_errors(tmp_path):
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(BbiError, match=r"d\.jsonl: is a directory"):
        list(read_jsonl(tmp_path / "d.jsonl"))
    rd = make_run(tmp_path / "run")
    rd.manifest_path.unlink()
    rd.manifest_path.mkdir()
    with pytest.raises(BbiError, match=r"manifest\.json: is a directory"):
        rd.manifest()


@pytest.mark.parametrize("text", ["x: !!float _", "x: !!int _"])
def test_yaml_constructor_crashes_are_user_errors(text):
    """Found by the fuzz test above: PyYAML raises IndexError on these scalars."""
    with scratch() as d:
        path = d / "c.yaml"
        path.write_text(text)
        with pytest.raises(BbiError, match="invalid YAML value"):
            read_yaml_mapping(path)
