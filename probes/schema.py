"""Suite records: validation, loading (JSONL, CSV, `datasets` directories), writing, hashing.

The canonical form of a suite is JSONL with the nine standard fields first, in a fixed
order; ``suite_hash`` is the SHA-256 of exactly the bytes ``write_suite`` writes, so the
hash printed by ``bbi probe build`` identifies the file on disk.
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections import Counter
from pathlib import Path
from typing import Any

from bbi.errors import BbiError
from bbi.runstore import (
    MAX_NESTING,
    SUITE_FIELDS,
    canonical_record,
    iter_jsonl,
    parse_json,
    read_text,
    suite_bytes,
)

FIELDS = SUITE_FIELDS
SPLITS = ("train", "test")
DEFAULT_CATEGORY = "uncategorized"
USER_SOURCE = "user"
TEST_FRACTION = 0.2
_OPTIONAL_STR = ("subcategory", "reference", "source", "perturbation", "base_id")


def write_suite(records: list[dict], path: str | Path) -> Path:
    """Write records as canonical JSONL (atomically)."""
    from bbi.runstore import atomic_write_text  # imports pandas; only needed here

    path = Path(path)
    atomic_write_text(path, suite_bytes(records).decode("utf-8"))
    return path


# ---- loading ---------------------------------------------------------------------------


def load_suite(path: str | Path) -> list[dict]:
    """Load and validate a suite; problems raise BbiError naming file:line and field."""
    return load_suite_with_notes(path)[0]


def load_suite_with_notes(path: str | Path) -> tuple[list[dict], list[str]]:
    """Like load_suite, plus notes about defaults that were filled in (e.g. a split)."""
    path = Path(path)
    return _normalise(read_rows(path), str(path))


def read_rows(path: str | Path) -> list[Row]:
    """The records of a file or ``datasets`` directory, each with where it came from
    (``"3"`` for line 3, ``"item 0"``, ``"row 7"``); an empty one is an error."""
    path = Path(path)
    if not path.exists():
        raise BbiError(f"{path}: no such file or directory")
    if path.is_dir():
        rows = _read_datasets_dir(path)
    else:
        suffix = path.suffix.lower()
        if suffix in (".jsonl", ".ndjson"):
            rows = _read_jsonl(path)
        elif suffix == ".json":
            rows = _read_json_array(path)
        elif suffix in (".csv", ".tsv"):
            rows = _read_csv(path, delimiter="\t" if suffix == ".tsv" else ",")
        elif suffix in (".parquet", ".pq"):
            rows = _read_parquet(path)
        else:
            raise BbiError(
                f"{path}: unknown file type {suffix or '(none)'!r}; use .jsonl, .json, .csv, "
                ".tsv, .parquet or a directory saved with datasets' save_to_disk"
            )
    if not rows:
        raise BbiError(f"{path}: empty file (no records)")
    return rows


Row = tuple[str, dict]  # (location such as "line 3" / "row 7", raw record)


def _read_jsonl(path: Path) -> list[Row]:
    # Strict: a user file with a torn last line is an error, not a shorter suite.
    return [(f"{i}", rec) for i, rec in iter_jsonl(path)]


def _read_json_array(path: Path) -> list[Row]:
    text = read_text(path)
    if not text.strip():
        return []
    data = parse_json(text, path)
    if not isinstance(data, list):
        raise BbiError(f"{path}: expected a JSON array of objects (or use .jsonl)")
    rows: list[Row] = []
    for i, rec in enumerate(data):
        if not isinstance(rec, dict):
            raise BbiError(f"{path}: item {i}: expected a JSON object")
        rows.append((f"item {i}", rec))
    return rows


def _read_csv(path: Path, delimiter: str) -> list[Row]:
    """CSV/TSV with a header row. Strict quoting; records may span lines inside quotes.

    Rows are split by the csv module itself (newline=""), so a quoted field may hold
    line breaks, including U+2028 and other characters str.splitlines would split on.
    """
    text = read_text(path)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    rows: list[Row] = []
    try:
        header = next((row for row in reader if row), None)  # blank lines before it are fine
        if header is None:
            return []
        names = [h.strip() for h in header]
        first: dict[str, int] = {}
        for col, name in enumerate(names, 1):
            if not name:
                continue
            if name in first:
                raise BbiError(
                    f"{path}:{reader.line_num}: duplicate column {name!r} "
                    f"(columns {first[name]} and {col} of the header)"
                )
            first[name] = col
        for values in reader:
            if len(values) > len(names):
                raise BbiError(f"{path}:{reader.line_num}: more values than header columns")
            values = values + [""] * (len(names) - len(values))
            clean = {k: (v if v != "" else None) for k, v in zip(names, values, strict=True) if k}
            if all(v is None for v in clean.values()):
                continue
            rows.append((f"{reader.line_num}", clean))
    except csv.Error as exc:
        raise BbiError(f"{path}:{reader.line_num}: invalid CSV ({exc})") from None
    return rows


def _read_parquet(path: Path) -> list[Row]:
    import pyarrow.parquet as pq  # installed with datasets

    try:
        table = pq.read_table(path)
    except Exception as exc:  # whatever pyarrow chokes on, the file is the problem
        reason = (str(exc).splitlines() or [type(exc).__name__])[0] or type(exc).__name__
        raise BbiError(f"{path}: not a Parquet file ({reason})") from None
    return [(f"row {i}", rec) for i, rec in enumerate(table.to_pylist())]


def _read_datasets_dir(path: Path) -> list[Row]:
    import datasets

    rows: list[Row] = []
    try:
        ds = datasets.load_from_disk(str(path))
        if isinstance(ds, datasets.DatasetDict):
            for name, part in ds.items():
                for i, rec in enumerate(part):
                    rec = dict(rec)
                    if name in SPLITS and rec.get("split") is None:
                        rec["split"] = name
                    rows.append((f"{name} row {i}", rec))
        else:
            rows = [(f"row {i}", dict(rec)) for i, rec in enumerate(ds)]
    except Exception as exc:  # whatever the loader chokes on, the directory is the problem
        reason = (str(exc).splitlines() or [type(exc).__name__])[0] or type(exc).__name__
        raise BbiError(
            f"{path}: not a dataset saved with datasets' save_to_disk ({reason})"
        ) from None
    return rows


def _where(src: str, loc: str) -> str:
    return f"{src}:{loc}" if loc[:1].isdigit() else f"{src}: {loc}"


def _normalise(rows: list[Row], src: str) -> tuple[list[dict], list[str]]:
    notes: list[str] = []
    if rows and not any("prompt" in r for _, r in rows):
        # Name the column and the columns there are, not the line where the first
        # record happens to end (a CSV record may span many lines).
        cols = list(dict.fromkeys(str(k) for _, r in rows for k in r))
        what = (
            f"the file's columns are {', '.join(repr(c) for c in cols[:20])}"
            if cols
            else "the records have no fields"
        )
        hint = f"{what}: name the prompt column with --prompt-field"
        if src.lower().endswith((".jsonl", ".ndjson")):  # one record a line: the line is exact
            raise BbiError(f"{_where(src, rows[0][0])}: field 'prompt' is missing ({hint})")
        raise BbiError(f"{src}: no column 'prompt' ({hint})")
    has_split = [r.get("split") not in (None, "") for _, r in rows]
    if any(has_split) and not all(has_split):
        loc = rows[has_split.index(False)][0]
        raise BbiError(f"{_where(src, loc)}: field 'split' is missing (other records have one)")
    records: list[dict] = []
    wheres: list[str] = []
    first_seen: dict[str, str] = {}
    for n, (loc, raw) in enumerate(rows):
        where = _where(src, loc)
        for key, val in raw.items():
            if not isinstance(key, str):
                raise BbiError(f"{where}: field names must be strings, got {key!r}")
            problem = _storable(val)
            if problem:
                raise BbiError(f"{where}: field {key!r}: {problem}")
        rec = {k: v for k, v in raw.items() if v is not None or k in FIELDS}
        prompt = raw.get("prompt")
        if prompt is None or (isinstance(prompt, str) and not prompt.strip()):
            raise BbiError(f"{where}: field 'prompt' is missing or empty")
        if not isinstance(prompt, str):
            raise BbiError(f"{where}: field 'prompt' must be a string")
        rid = raw.get("id")
        if rid is None or rid == "":
            rid = f"item-{n:05d}"
        elif isinstance(rid, (int, float)) and not isinstance(rid, bool):
            rid = str(rid)
        if not isinstance(rid, str):
            raise BbiError(f"{where}: field 'id' must be a string")
        if rid in first_seen:
            raise BbiError(
                f"{where}: field 'id': duplicate id {rid!r} (first at {first_seen[rid]})"
            )
        first_seen[rid] = loc
        category = raw.get("category")
        if category is None or category == "":
            category = DEFAULT_CATEGORY
        if not isinstance(category, str):
            raise BbiError(f"{where}: field 'category' must be a string")
        split = raw.get("split")
        if split is not None and split not in SPLITS:
            raise BbiError(f"{where}: field 'split': unknown value {split!r} (use train or test)")
        for key in _OPTIONAL_STR:
            val = raw.get(key)
            if val is not None and not isinstance(val, str):
                raise BbiError(f"{where}: field {key!r} must be a string or null")
        rec.update(id=rid, category=category, prompt=prompt, split=split)
        rec.setdefault("source", USER_SOURCE)
        if rec["source"] is None:
            rec["source"] = USER_SOURCE
        records.append(canonical_record(rec))
        wheres.append(where)
    ids = set(first_seen)
    for rec, where in zip(records, wheres, strict=True):
        if rec.get("base_id") is not None and rec["base_id"] not in ids:
            raise BbiError(
                f"{where}: field 'base_id': {rec['base_id']!r} is not an id in the suite"
            )
    if not any(has_split):
        assign_split(records, TEST_FRACTION)
        n_test = sum(r["split"] == "test" for r in records)
        notes.append(
            f"no 'split' field: assigned a deterministic stratified split by category "
            f"({len(records) - n_test} train / {n_test} test, {TEST_FRACTION:.0%} test)"
        )
    return records, notes


def _storable(value: Any) -> str | None:
    """Why a field value cannot be written to suite.jsonl (JSON, valid UTF-8), or None."""
    stack = [(value, 0)]
    while stack:
        val, depth = stack.pop()
        if val is None or isinstance(val, (bool, int, float)):
            continue
        if isinstance(val, str):
            try:
                val.encode("utf-8")
            except UnicodeEncodeError:
                return "text is not valid Unicode (a lone surrogate)"
        elif isinstance(val, (list, tuple, dict)):
            if depth >= MAX_NESTING:
                return f"nested deeper than {MAX_NESTING} levels"
            if isinstance(val, dict):
                if not all(isinstance(k, str) for k in val):
                    return "object keys must be strings"
                stack.extend((k, depth + 1) for k in val)
                val = list(val.values())
            stack.extend((v, depth + 1) for v in val)
        else:
            return f"a {type(val).__name__} value cannot be stored in a suite"
    return None


def assign_split(records: list[dict], test_fraction: float = TEST_FRACTION) -> None:
    """Deterministic stratified split: within each category, the records whose id hashes
    lowest go to test. Depends only on ids, so reordering the file changes nothing."""
    by_cat: dict[str, list[dict]] = {}
    for rec in records:
        by_cat.setdefault(rec["category"], []).append(rec)
    for recs in by_cat.values():
        ranked = sorted(recs, key=lambda r: hashlib.sha256(r["id"].encode()).hexdigest())
        n_test = round(len(recs) * test_fraction)
        for i, rec in enumerate(ranked):
            rec["split"] = "test" if i < n_test else "train"


def summary(records: list[dict]) -> dict[str, Counter]:
    """category -> Counter(split) for tables."""
    out: dict[str, Counter] = {}
    for rec in records:
        out.setdefault(rec["category"], Counter())[rec["split"]] += 1
    return out
