"""The probe suite: shape, determinism, uniqueness, references, perturbations, loading."""

from __future__ import annotations

import hashlib
import json
import random
import re
from collections import Counter

import pytest

import probes
from bbi.errors import BbiError
from probes import CATEGORIES, FIELDS, suite_hash
from probes.perturb import PERTURBATIONS, casing, perturb, typos, whitespace
from probes.schema import assign_split, load_suite_with_notes
from probes.suite import normalise


@pytest.fixture(scope="module")
def suite() -> list[dict]:
    return probes.build_suite(0)


@pytest.fixture(scope="module")
def by_id(suite) -> dict[str, dict]:
    return {r["id"]: r for r in suite}


def _cat(suite, category, sub_prefix=""):
    return [
        r for r in suite if r["category"] == category and r["subcategory"].startswith(sub_prefix)
    ]


# ---- shape ---------------------------------------------------------------------------------


def test_categories_are_the_ten_in_order():
    assert CATEGORIES == (
        "factual",
        "reasoning",
        "instruction",
        "style_format",
        "robustness",
        "domain_technical",
        "creative",
        "conversational",
        "safety",
        "extraction",
    )


def test_suite_has_5000_records_stratified_400_100(suite):
    assert len(suite) == 5000
    counts = Counter((r["category"], r["split"]) for r in suite)
    for cat in CATEGORIES:
        assert counts[(cat, "train")] == 400, cat
        assert counts[(cat, "test")] == 100, cat
    assert sum(r["split"] == "train" for r in suite) == 4000


def test_records_follow_the_schema(suite):
    for r in suite:
        assert tuple(r) == FIELDS
        assert re.fullmatch(rf"{r['category']}-\d{{5}}", r["id"])
        assert isinstance(r["prompt"], str) and r["prompt"].strip()
        assert isinstance(r["subcategory"], str) and r["subcategory"]
        assert isinstance(r["source"], str) and r["source"]
        assert r["reference"] is None or (isinstance(r["reference"], str) and r["reference"])
        if r["category"] != "robustness":
            assert r["perturbation"] is None and r["base_id"] is None


def test_split_is_stratified_within_subcategories(suite):
    # Every subcategory with >= 20 items gets roughly its share of the test split.
    groups = Counter((r["category"], r["subcategory"]) for r in suite)
    tests = Counter((r["category"], r["subcategory"]) for r in suite if r["split"] == "test")
    for key, n in groups.items():
        if key[0] != "robustness" and n >= 20:
            assert abs(tests[key] - n / 5) <= 1, key


def test_each_category_is_varied(suite):
    for cat in CATEGORIES:
        recs = _cat(suite, cat)
        subs = {r["subcategory"] for r in recs}
        assert len(subs) >= 5, (cat, subs)
        # no single opening dominates: the most common first three words cover < 30%
        openings = Counter(" ".join(r["prompt"].split()[:3]) for r in recs)
        assert openings.most_common(1)[0][1] < 0.3 * len(recs), (cat, openings.most_common(3))


# ---- determinism and uniqueness -------------------------------------------------------------


def test_build_is_deterministic_byte_for_byte(suite, tmp_path):
    again = probes.build_suite(0)
    assert again == suite
    p1, p2 = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    probes.write_suite(suite, p1)
    probes.write_suite(again, p2)
    assert p1.read_bytes() == p2.read_bytes()
    digest = "sha256:" + hashlib.sha256(p1.read_bytes()).hexdigest()
    assert suite_hash(suite) == suite_hash(again) == digest


def test_default_suite_hash_is_pinned(suite):
    # Same bytes on every platform and Python version; see DEFAULT_SUITE_HASH.
    assert suite_hash(suite) == probes.DEFAULT_SUITE_HASH


def test_other_seed_gives_another_suite(suite):
    other = probes.build_suite(1)
    assert suite_hash(other) != suite_hash(suite)
    assert len(other) == 5000


def test_default_suite_is_build_suite_0_and_returns_copies(suite):
    a = probes.default_suite()
    assert a == suite
    a[0]["prompt"] = "changed"
    assert probes.default_suite()[0]["prompt"] == suite[0]["prompt"]


def test_prompts_and_ids_are_unique(suite):
    assert len({r["id"] for r in suite}) == len(suite)
    assert len({r["prompt"] for r in suite}) == len(suite)


def test_no_test_prompt_in_train(suite):
    train = {r["prompt"] for r in suite if r["split"] == "train"}
    train_keys = {normalise(r["prompt"]) for r in suite if r["split"] == "train"}
    for r in suite:
        if r["split"] == "test":
            assert r["prompt"] not in train
            if r["category"] != "robustness":
                assert normalise(r["prompt"]) not in train_keys


# ---- robustness --------------------------------------------------------------------------


def test_robustness_items_point_to_real_bases(suite, by_id):
    kinds = Counter()
    for r in _cat(suite, "robustness"):
        base = by_id[r["base_id"]]
        assert base["category"] != "robustness"
        assert r["perturbation"] in PERTURBATIONS
        assert r["perturbation"] == r["subcategory"]
        assert r["prompt"] != base["prompt"]
        assert r["split"] == base["split"]  # no variant of a test prompt is in train
        assert r["reference"] == base["reference"]
        assert r["source"] == f"perturbed:{base['category']}"
        kinds[r["perturbation"]] += 1
    assert set(kinds) == set(PERTURBATIONS)


def test_perturbations_leave_code_quotes_and_numbers_alone():
    rng = random.Random(0)
    text = "What does `sorted([3, 1, 2])` return for 'hello world' when Python evaluates it?"
    for _ in range(200):
        for fn in (typos, casing, whitespace):
            out = fn(rng, text)
            assert "`sorted([3, 1, 2])`" in out
            assert "'hello world'" in out
    for _ in range(200):
        out = typos(rng, "Compute 3471 + 2290 for the accountant please.")
        assert "3471" in out and "2290" in out


def test_perturb_always_changes_the_text():
    rng = random.Random(1)
    for text in ("hi", "What is 2 + 2?", "`x`", "ALREADY UPPER CASE TEXT"):
        for _ in range(50):
            out, kind = perturb(rng, text)
            assert out != text and kind in PERTURBATIONS


# ---- references ----------------------------------------------------------------------------


def test_references_present_where_known(suite):
    for cat in ("factual", "reasoning", "instruction", "domain_technical", "safety", "extraction"):
        assert all(r["reference"] for r in _cat(suite, cat)), cat
    assert all(r["reference"] is None for r in _cat(suite, "creative"))
    assert all(r["reference"] is None for r in _cat(suite, "conversational"))


def test_arithmetic_references_are_correct(suite):
    ops = {
        "+": int.__add__,
        "-": int.__sub__,
        "×": int.__mul__,
        "*": int.__mul__,
        "÷": int.__floordiv__,
        "/": int.__floordiv__,
    }
    checked = 0
    for r in _cat(suite, "reasoning", "arithmetic"):
        m = re.search(r"(\d+) ([-+×*÷/]) (\d+)", r["prompt"])
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        assert r["reference"] == f"{a} {op} {b} = {ops[op](a, b)}."
        checked += 1
    for r in _cat(suite, "reasoning", "algebra"):
        a, b, c = map(int, re.search(r"(\d+)x \+ (\d+) = (-?\d+)", r["prompt"]).groups())
        x = int(re.search(r"x = .* = (-?\d+)\.$", r["reference"]).group(1))
        assert a * x + b == c
        checked += 1
    assert checked > 50


def test_prime_references_are_correct(suite):
    for r in _cat(suite, "reasoning", "number_theory"):
        m = re.search(r"Is (\d+) (?:a )?prime|whether (\d+) is prime", r["prompt"])
        if not m:
            continue
        n = int(m.group(1) or m.group(2))
        is_prime = all(n % d for d in range(2, int(n**0.5) + 1))
        assert r["reference"].startswith("Yes" if is_prime else "No"), r


def test_instruction_references_satisfy_their_constraint(suite):
    for r in _cat(suite, "instruction"):
        kind, _, arg = r["subcategory"].partition(":")
        ref = r["reference"]
        if kind == "exact_bullets":
            lines = ref.splitlines()
            assert len(lines) == int(arg) and all(line[:2] in ("- ", "* ", "• ") for line in lines)
        elif kind == "numbered":
            assert [line.split(".")[0] for line in ref.splitlines()] == [
                str(i) for i in range(1, int(arg) + 1)
            ]
        elif kind == "max_words":
            assert len(ref.split()) <= int(arg)
        elif kind == "all_caps":
            assert ref == ref.upper()
        elif kind == "lowercase":
            assert ref == ref.lower()
        elif kind == "sentences":
            assert len(re.findall(r"[.!?](?:\s|$)", ref)) == int(arg)
        elif kind == "start_with":
            assert ref.startswith(arg)
        elif kind == "no_commas":
            assert "," not in ref
        elif kind == "quoted":
            assert ref.startswith('"') and ref.endswith('"')
        elif kind == "title":
            assert re.match(r"<<[^>]+>>\n", ref)
        elif kind == "paragraphs":
            assert ref.count("\n\n") == 1
        elif kind == "postscript":
            assert "\nP.S. " in ref
        elif kind == "end_with":
            phrase = re.search(r"""['"]([^'"]+)['"]""", r["prompt"]).group(1)
            assert ref.endswith(phrase)


def test_style_format_structured_references_parse(suite):
    for r in _cat(suite, "style_format", "json"):
        json.loads(r["reference"])
    for r in _cat(suite, "style_format", "markdown_table"):
        lines = r["reference"].splitlines()
        assert len(lines) >= 4 and set(lines[1].replace("|", "").split()) == {"---"}
        assert len({line.count("|") for line in lines}) == 1
    for r in _cat(suite, "style_format", "csv"):
        lines = r["reference"].splitlines()
        assert lines[0] == "name,age,city" and all(line.count(",") == 2 for line in lines)
    for r in _cat(suite, "style_format", "list"):
        given = r["prompt"].split(": ")[-1].split(", ")
        items = [re.sub(r"^(- |\d+\. )", "", x) for x in re.split(r"\n|, ", r["reference"])]
        assert sorted(items) == sorted(given)
        assert items in (sorted(given), sorted(given, reverse=True))


def test_python_snippet_and_regex_references_match_python(suite):
    checked = 0
    for r in _cat(suite, "domain_technical", "python_eval"):
        if "print(" in r["prompt"]:
            continue
        expr = re.search(r"`(.+)`", r["prompt"]).group(1)
        value = eval(expr, {"__builtins__": __builtins__}, {})  # noqa: S307 - suite's own code
        assert r["reference"] == f"`{expr}` evaluates to `{value!r}`."
        checked += 1
    for r in _cat(suite, "domain_technical", "regex"):
        m = re.search(r"regex `(.+)` match the string '(.*)'\?", r["prompt"])
        if m:
            hit = re.search(m.group(1), m.group(2)) is not None
            assert r["reference"].startswith("Yes" if hit else "No")
            checked += 1
    assert checked > 30


def test_extraction_answers_appear_in_the_passage(suite):
    for r in _cat(suite, "extraction"):
        sub = r["subcategory"]
        if sub.startswith("list:"):
            for part in r["reference"].split(", "):
                assert part in r["prompt"]
        elif sub == "invoice:total":
            items = re.findall(r"(\d+) x [^$]+ at \$(\d+) each", r["prompt"])
            total = sum(int(n) * int(p) for n, p in items)
            assert r["reference"].startswith(f"The total is ${total} ")


def test_safety_mixes_refusals_and_answers(suite):
    subs = Counter(r["subcategory"].split(":")[0] for r in _cat(suite, "safety"))
    assert subs["refuse"] > 150 and subs["comply"] > 150
    for r in _cat(suite, "safety", "refuse"):
        assert r["reference"].startswith("I can't help")


# ---- training corpus -----------------------------------------------------------------------


def test_training_corpus_default_is_disjoint_and_complete(suite):
    corpus = probes.training_corpus()
    assert len(corpus) == 2000 * len(CATEGORIES)
    assert Counter(r["category"] for r in corpus) == {c: 2000 for c in CATEGORIES}
    suite_prompts = {r["prompt"] for r in suite}
    assert not any(r["prompt"] in suite_prompts for r in corpus)
    assert len({r["prompt"] for r in corpus}) == len(corpus)
    ids = {r["id"] for r in corpus}
    assert len(ids) == len(corpus)
    for r in corpus:
        assert isinstance(r["reference"], str) and r["reference"].strip()
        assert len(r["reference"].split()) <= 60
        if r["category"] == "robustness":
            assert r["base_id"] in ids


def test_training_corpus_is_deterministic_and_seeded():
    a = probes.training_corpus(seed=1, per_category=150)
    b = probes.training_corpus(seed=1, per_category=150)
    c = probes.training_corpus(seed=2, per_category=150)
    assert a == b
    assert suite_hash(a) != suite_hash(c)
    assert len(a) == 1500


def test_training_corpus_rejects_bad_size():
    with pytest.raises(BbiError):
        probes.training_corpus(per_category=0)


# ---- loading user suites -------------------------------------------------------------------


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_jsonl_round_trip(suite, tmp_path):
    path = probes.write_suite(suite[:50], tmp_path / "s.jsonl")
    assert probes.load_suite(path) == suite[:50]


def test_user_jsonl_defaults_and_stratified_split(tmp_path):
    rows = [{"prompt": f"question {i}?", "category": "a" if i % 2 else "b"} for i in range(40)]
    rows += [{"prompt": "no category here"}]
    recs, notes = load_suite_with_notes(_write_jsonl(tmp_path / "u.jsonl", rows))
    assert len(recs) == 41 and notes and "split" in notes[0]
    assert all(tuple(r)[: len(FIELDS)] == FIELDS for r in recs)
    assert recs[-1]["category"] == "uncategorized"
    counts = Counter((r["category"], r["split"]) for r in recs)
    assert counts[("a", "test")] == 4 and counts[("b", "test")] == 4
    assert len({r["id"] for r in recs}) == 41
    # the split depends on ids only, not on file order
    explicit = [dict(r, id=f"q{i}") for i, r in enumerate(rows)]
    s1, _ = load_suite_with_notes(_write_jsonl(tmp_path / "w.jsonl", explicit))
    s2, _ = load_suite_with_notes(_write_jsonl(tmp_path / "x.jsonl", explicit[::-1]))
    assert {r["id"]: r["split"] for r in s1} == {r["id"]: r["split"] for r in s2}


def test_assign_split_keeps_fraction_per_category():
    recs = [{"id": f"r{i}", "category": "c" if i < 50 else "d"} for i in range(150)]
    assign_split(recs, 0.2)
    assert Counter((r["category"], r["split"]) for r in recs) == {
        ("c", "train"): 40,
        ("c", "test"): 10,
        ("d", "train"): 80,
        ("d", "test"): 20,
    }


def test_csv_loading(tmp_path):
    path = tmp_path / "u.csv"
    path.write_text(
        "id,category,prompt,split,reference\n"
        'a1,math,"What is 2+2, exactly?",train,4\n'
        "a2,math,What is 3+3?,test,\n"
        "a3,,Say hi,train,\n",
        encoding="utf-8",
    )
    recs = probes.load_suite(path)
    assert [r["id"] for r in recs] == ["a1", "a2", "a3"]
    assert recs[0]["prompt"] == "What is 2+2, exactly?" and recs[0]["reference"] == "4"
    assert recs[1]["reference"] is None and recs[2]["category"] == "uncategorized"
    assert recs[1]["split"] == "test"


def test_datasets_directory_loading(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [
        {"id": f"d{i}", "prompt": f"prompt {i}", "category": "x", "split": "train"}
        for i in range(5)
    ]
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    recs = probes.load_suite(tmp_path / "ds")
    assert [r["id"] for r in recs] == [f"d{i}" for i in range(5)]
    dd = datasets.DatasetDict(
        {
            "train": datasets.Dataset.from_list([{"prompt": "a"}, {"prompt": "b"}]),
            "test": datasets.Dataset.from_list([{"prompt": "c"}]),
        }
    )
    dd.save_to_disk(str(tmp_path / "dd"))
    recs = probes.load_suite(tmp_path / "dd")
    assert [(r["prompt"], r["split"]) for r in recs] == [
        ("a", "train"),
        ("b", "train"),
        ("c", "test"),
    ]


@pytest.mark.parametrize(
    "content, suffix, pattern",
    [
        ('{"prompt": "a", "split": "train"}\n{"prompt": \n', ".jsonl", r"u\.jsonl:2: invalid JSON"),
        ('{"id": "x", "split": "train"}\n', ".jsonl", r":1: field 'prompt' is missing"),
        (
            '{"prompt": "  ", "split": "train"}\n',
            ".jsonl",
            r":1: field 'prompt' is missing or empty",
        ),
        ('{"prompt": "a", "split": "dev"}\n', ".jsonl", r":1: field 'split': unknown value 'dev'"),
        (
            '{"id": "a", "prompt": "p", "split": "train"}\n\n{"id": "a", "prompt": "q", '
            '"split": "test"}\n',
            ".jsonl",
            r":3: field 'id': duplicate id 'a' \(first at 1\)",
        ),
        ("", ".jsonl", r"empty file"),
        ("\n\n", ".jsonl", r"empty file"),
        ("[1, 2]\n", ".jsonl", r":1: expected a JSON object"),
        (
            '{"prompt": "a", "split": "train"}\n{"prompt": "b"}\n',
            ".jsonl",
            r":2: field 'split' is missing",
        ),
        (
            '{"prompt": "a", "split": "train", "base_id": "nope"}\n',
            ".jsonl",
            r":1: field 'base_id'",
        ),
        ('{"prompt": 3, "split": "train"}\n', ".jsonl", r":1: field 'prompt' must be a string"),
        ("id,prompt,split\n1,hello,train\n2,,test\n", ".csv", r"u\.csv:3: field 'prompt'"),
        ("id,prompt,split\n1,hello,validation\n", ".csv", r"u\.csv:2: field 'split'"),
        ("prompt\n", ".csv", r"empty file"),
        ("prompt,split\nhi,train\n", ".xlsx", r"unknown file type '.xlsx'"),
        ("prompt,split\nhi,train\n", ".parquet", r"u\.parquet: not a Parquet file"),
    ],
)
def test_malformed_files_raise_one_line_errors(tmp_path, content, suffix, pattern):
    path = tmp_path / f"u{suffix}"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(BbiError) as exc:
        probes.load_suite(path)
    msg = str(exc.value)
    assert "\n" not in msg
    assert re.search(pattern, msg), msg


def test_missing_path_and_non_dataset_dir(tmp_path):
    with pytest.raises(BbiError, match="no such file"):
        probes.load_suite(tmp_path / "absent.jsonl")
    (tmp_path / "d").mkdir()
    with pytest.raises(BbiError, match="save_to_disk"):
        probes.load_suite(tmp_path / "d")
