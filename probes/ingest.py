"""Reading users' prompt and response files in the shapes they come in.

JSONL, JSON arrays, CSV/TSV (multi-line quoted cells), Parquet and ``datasets``
directories; any column names, given by a ``FieldMap`` (``--prompt-field`` and friends).
Responses may come one model per file, several models in a long table (a column naming
the model) or a wide one (one column per model), several samples per prompt (a sample
column, or several rows per prompt), and match the suite by id or, without ids, by
prompt text. A suite can be built from the prompts of a responses file, with a seeded,
sized split stratified by category.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bbi.errors import BbiError
from probes.schema import (
    DEFAULT_CATEGORY,
    SPLITS,
    TEST_FRACTION,
    Row,
    _normalise,
    _where,
    read_rows,
)


@dataclass(frozen=True)
class FieldMap:
    """Which column holds what. ``None`` = the standard name where the file has it:
    prompt, text (the response), category, prompt_id (or id), sample."""

    prompt: str | None = None
    responses: tuple[str, ...] = ()  # one column, or one per model (a wide table)
    category: str | None = None
    id: str | None = None
    model: str | None = None  # a long table's column naming each row's model
    sample: str | None = None


@dataclass(frozen=True)
class SplitSpec:
    """How to split a suite that has no split column: seeded, stratified by category."""

    seed: int | None = None
    test_fraction: float | None = None
    test_size: int | None = None

    @property
    def given(self) -> bool:
        return self.seed is not None or self.test_fraction is not None or self.test_size is not None


# ---- reading ---------------------------------------------------------------------------


def columns(rows: Sequence[Row]) -> list[str]:
    """Column names in first-seen order."""
    seen: dict[str, None] = {}
    for _, rec in rows:
        for key in rec:
            seen.setdefault(str(key), None)
    return list(seen)


def _listing(cols: Sequence[str]) -> str:
    shown = ", ".join(repr(c) for c in cols[:20])
    return shown + (f" and {len(cols) - 20} more" if len(cols) > 20 else "")


def require_column(src: str | Path, cols: Sequence[str], name: str, flag: str, what: str) -> str:
    """``name`` if the file has that column, else one line naming it and the columns."""
    if name not in cols:
        raise BbiError(
            f"{src}: no column {name!r} (the file's columns are {_listing(cols)}: "
            f"name the {what} column with {flag})"
        )
    return name


def _pick(cols: Sequence[str], given: str | None, defaults: Sequence[str]) -> str | None:
    if given is not None:
        return given
    return next((d for d in defaults if d in cols), None)


# ---- suites ----------------------------------------------------------------------------


def load_suite_mapped(
    path: str | Path, fields: FieldMap | None = None, split: SplitSpec | None = None
) -> tuple[list[dict], list[str]]:
    """A suite file of any shape with its columns named by ``fields``; like
    probes.load_suite_with_notes, but a missing column is named (with the columns the
    file has) rather than found at some line, and a missing split is seeded and sized."""
    fields = fields or FieldMap()
    split = split or SplitSpec()
    rows = read_rows(path)
    cols = columns(rows)
    prompt = fields.prompt or "prompt"
    if fields.prompt is not None:  # else schema names it (with the line, for JSONL)
        require_column(path, cols, prompt, "--prompt-field", "prompt")
    rename = {prompt: "prompt"}
    if fields.category is not None:
        rename[require_column(path, cols, fields.category, "--category-field", "category")] = (
            "category"
        )
    if fields.id is not None:
        rename[require_column(path, cols, fields.id, "--id-field", "id")] = "id"
    if any(k != v for k, v in rename.items()):
        rows = [(loc, _renamed(rec, rename)) for loc, rec in rows]
    had_split = any(rec.get("split") not in (None, "") for _, rec in rows)
    records, notes = _normalise(rows, str(path))
    if not had_split and split.given:
        notes = [seeded_split(records, split)]
    return records, notes


def _renamed(rec: dict, rename: dict[str, str]) -> dict:
    out = {k: v for k, v in rec.items() if k not in rename and k not in rename.values()}
    for old, new in rename.items():
        out[new] = rec.get(old)
    return out


def seeded_split(records: list[dict], split: SplitSpec) -> str:
    """Assign train/test within each category: ``test_size`` prompts in all (shared
    among categories in proportion, largest remainders first) or ``test_fraction`` of
    each; which ones is a shuffle seeded by ``seed``, of the records sorted by id, so
    the file's row order does not matter. Returns a note saying what was done."""
    seed = 0 if split.seed is None else split.seed
    n = len(records)
    by_cat: dict[str, list[dict]] = {}
    for rec in records:
        by_cat.setdefault(rec["category"], []).append(rec)
    if split.test_size is not None:
        if not 0 < split.test_size < n:
            raise BbiError(f"--test-size {split.test_size}: must be between 1 and {n - 1}")
        quotas = {c: len(v) * split.test_size / n for c, v in by_cat.items()}
        counts = {c: math.floor(q) for c, q in quotas.items()}
        left = split.test_size - sum(counts.values())
        for c in sorted(quotas, key=lambda c: (counts[c] - quotas[c], c))[:left]:
            counts[c] += 1
    else:
        frac = TEST_FRACTION if split.test_fraction is None else split.test_fraction
        if not 0 < frac < 1:
            raise BbiError(f"--test-fraction {frac}: must be between 0 and 1")
        counts = {c: round(len(v) * frac) for c, v in by_cat.items()}
    for cat, recs in by_cat.items():
        ranked = sorted(recs, key=lambda r: r["id"])
        random.Random(f"{seed}:{cat}").shuffle(ranked)
        for i, rec in enumerate(ranked):
            rec["split"] = "test" if i < counts[cat] else "train"
    n_test = sum(counts.values())
    if n_test == 0 or n_test == n:
        raise BbiError(
            f"the split leaves {'no' if n_test == 0 else 'only'} test prompts ({n} prompts); "
            "use another --test-fraction or --test-size"
        )
    return f"split seeded with {seed}, stratified by category: {n - n_test} train / {n_test} test"


# ---- responses -------------------------------------------------------------------------


@dataclass
class Response:
    """One response read from a user's file, before it is matched to the suite."""

    where: str
    loc: str
    model: str | None
    key: str  # the prompt id, or the prompt text when joining on text
    prompt: str | None
    category: str | None
    sample: int | None
    text: str
    n_tokens: int | None
    finish_reason: str | None
    split: str | None = None  # the file's own train/test split, if it has one


@dataclass
class ResponseTable:
    """What ``read_responses`` found: responses per model name (None: the file's only
    model), and whether they match the suite by id or by prompt text."""

    src: Path
    by_model: dict[str | None, list[Response]]
    by_text: bool
    id_column: str | None
    prompt_column: str | None


def read_responses(
    path: str | Path, fields: FieldMap, models: Sequence[str] | None = None
) -> ResponseTable:
    """Responses per model from a file of any shape (see the module docstring)."""
    src = Path(path)
    rows = read_rows(src)
    cols = columns(rows)
    wide = len(fields.responses) > 1
    if wide and fields.model is not None:
        raise BbiError(
            "--model-field is for long tables (a column names each row's model); a wide table "
            "names one --response-field per model: use one or the other"
        )
    if wide:
        resp_cols = [
            require_column(src, cols, c, "--response-field", "response") for c in fields.responses
        ]
    else:
        col = _pick(cols, fields.responses[0] if fields.responses else None, ("text",))
        if col is None:
            require_column(src, cols, "text", "--response-field", "response")
        resp_cols = [require_column(src, cols, col, "--response-field", "response")]
    id_col = _pick(cols, fields.id, ("prompt_id",))
    if id_col is not None:
        require_column(src, cols, id_col, "--id-field", "id")
    prompt_col = _pick(cols, fields.prompt, ("prompt",))
    if id_col is None and prompt_col is None:
        raise BbiError(
            f"{src}: no column 'prompt_id' or 'prompt' (the file's columns are {_listing(cols)}: "
            "name the id column with --id-field, or the prompt column with --prompt-field to "
            "match responses to the suite by prompt text)"
        )
    if id_col is None:  # joined on the prompt text: it must be there
        prompt_col = require_column(src, cols, prompt_col, "--prompt-field", "prompt")
    elif prompt_col is not None:
        require_column(src, cols, prompt_col, "--prompt-field", "prompt")
    cat_col = fields.category
    if cat_col is not None:
        require_column(src, cols, cat_col, "--category-field", "category")
    model_col = fields.model
    if model_col is not None:
        require_column(src, cols, model_col, "--model-field", "model")
    sample_col = _pick(cols, fields.sample, ("sample",))
    if sample_col is not None:
        require_column(src, cols, sample_col, "--sample-field", "sample")
    by_model: dict[str | None, list[Response]] = {}
    for loc, rec in rows:
        where = _where(str(src), loc)
        key = _text(rec, id_col, where, "id", allow_number=True) if id_col else None
        prompt = _text(rec, prompt_col, where, "prompt") if prompt_col else None
        if key is None:
            key = prompt
        category = _text(rec, cat_col, where, "category", optional=True) if cat_col else None
        sample = _sample(rec.get(sample_col), where, sample_col) if sample_col else None
        n_tok = rec.get("n_tokens")
        if not isinstance(n_tok, int) or isinstance(n_tok, bool) or n_tok < 0:
            n_tok = None
        fr = rec.get("finish_reason")
        fr = fr if fr in ("stop", "length") else None
        own = rec.get("split") if rec.get("split") in SPLITS else None
        if wide:
            for c in resp_cols:
                text = _text(rec, c, where, "response")
                by_model.setdefault(c, []).append(
                    Response(where, loc, c, key, prompt, category, sample, text, None, None, own)
                )
            continue
        name = _text(rec, model_col, where, "model") if model_col else None
        text = _text(rec, resp_cols[0], where, "response")
        by_model.setdefault(name, []).append(
            Response(where, loc, name, key, prompt, category, sample, text, n_tok, fr, own)
        )
    if models:
        missing = [m for m in models if m not in by_model]
        if missing:
            found = [m for m in by_model if m is not None]
            raise BbiError(
                f"{src}: no model {missing[0]!r} in column {model_col or 'of the file'!r} "
                f"(models: {_listing(found)})"
            )
        by_model = {m: by_model[m] for m in models}
    return ResponseTable(src, by_model, id_col is None, id_col, prompt_col)


def _text(
    rec: dict, col: str | None, where: str, what: str, *, optional: bool = False,
    allow_number: bool = False,
) -> str | None:  # fmt: skip
    value = rec.get(col) if col else None
    if allow_number and isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None or (isinstance(value, str) and not value.strip() and what != "response"):
        if optional:
            return None
        raise BbiError(f"{where}: column {col!r} ({what}) is empty")
    if not isinstance(value, str):
        raise BbiError(f"{where}: column {col!r} ({what}) must be text, got {type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise BbiError(f"{where}: column {col!r} is not valid Unicode (a lone surrogate)") from None
    return value


def _sample(value: Any, where: str, col: str) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise BbiError(f"{where}: column {col!r} (sample) must be a non-negative integer")
    return value


def prompt_id_for(text: str) -> str:
    """A stable id for a prompt known only by its text: files of two models that share
    their prompts build the same suite, whatever their order."""
    return "p-" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]


def suite_from_responses(table: ResponseTable, split: SplitSpec) -> tuple[list[dict], str]:
    """The suite of a responses file's distinct prompts (first-seen order), with its
    category column and a seeded, stratified split. Returns (records, note)."""
    if table.prompt_column is None:
        cols = columns(read_rows(table.src))
        require_column(table.src, cols, "prompt", "--prompt-field", "prompt")
    first = next(iter(table.by_model.values()))
    return _suite_of(first, table.by_text, table.src, split)


def suite_from_file(path: str | Path, fields: FieldMap, split: SplitSpec) -> tuple[list[dict], str]:
    """The suite ``bbi probe import --build-suite`` would build from this file's prompts
    (same ids, same split, same hash), for ``bbi probe build --from FILE``."""
    src = Path(path)
    rows = read_rows(src)
    cols = columns(rows)
    id_col = _pick(cols, fields.id, ("prompt_id",))
    if id_col is not None:
        require_column(src, cols, id_col, "--id-field", "id")
    prompt_col = require_column(src, cols, fields.prompt or "prompt", "--prompt-field", "prompt")
    cat_col = fields.category
    if cat_col is not None:
        require_column(src, cols, cat_col, "--category-field", "category")
    entries = []
    for loc, rec in rows:
        where = _where(str(src), loc)
        prompt = _text(rec, prompt_col, where, "prompt")
        key = _text(rec, id_col, where, "id", allow_number=True) if id_col else prompt
        category = _text(rec, cat_col, where, "category", optional=True) if cat_col else None
        own = rec.get("split") if rec.get("split") in SPLITS else None
        entries.append(Response(where, loc, None, key, prompt, category, None, "", None, None, own))
    return _suite_of(entries, id_col is None, src, split)


def _suite_of(
    entries: Sequence[Response], by_text: bool, src: Path, split: SplitSpec
) -> tuple[list[dict], str]:
    rows: list[Row] = []
    seen: dict[str, Response] = {}
    for r in entries:
        if r.key in seen:
            old = seen[r.key]
            if old.prompt != r.prompt:
                raise BbiError(f"{r.where}: id {r.key!r} has another prompt than at {old.where}")
            continue
        seen[r.key] = r
        rid = prompt_id_for(r.key) if by_text else r.key
        cat = r.category or DEFAULT_CATEGORY
        rows.append((r.loc, {"id": rid, "prompt": r.prompt, "category": cat, "split": r.split}))
    if not split.given and all(rec["split"] for _, rec in rows):
        # The file's own split (a split column, or a DatasetDict's train/test parts).
        records, _ = _normalise(rows, str(src))
        n_test = sum(r["split"] == "test" for r in records)
        return records, f"the file's own split: {len(records) - n_test} train / {n_test} test"
    rows = [(loc, {**rec, "split": None}) for loc, rec in rows]
    records, _ = _normalise(rows, str(src))
    note = seeded_split(records, split)
    return records, note


def response_lines(table: ResponseTable, model: str | None, suite: Sequence[dict]) -> list[dict]:
    """One model's responses as responses-file lines, matched to the suite by id or by
    prompt text (exact, else with whitespace runs collapsed); several rows of one
    prompt without a sample column are its samples 0, 1, ... in file order."""
    from bbi.ingest import response_line

    ids = {r["id"] for r in suite}
    exact: dict[str, str] = {}
    loose: dict[str, str | None] = {}
    if table.by_text:
        for r in suite:
            exact.setdefault(r["prompt"], r["id"])
            k = " ".join(r["prompt"].split())
            loose[k] = r["id"] if loose.get(k, r["id"]) == r["id"] else None
    lines: list[dict] = []
    taken: dict[tuple[str, int], str] = {}
    counts: dict[str, int] = {}
    for r in table.by_model[model]:
        if table.by_text:
            pid = exact.get(r.key) or loose.get(" ".join(r.key.split()))
            if pid is None:
                short = " ".join(r.key.split())[:60]
                raise BbiError(f"{r.where}: prompt {short!r} is not in the run's suite")
        else:
            pid = r.key
            if pid not in ids:
                raise BbiError(f"{r.where}: prompt id {pid!r} is not in the run's suite")
        sample = r.sample if r.sample is not None else counts.get(pid, 0)
        counts[pid] = counts.get(pid, 0) + 1
        if (pid, sample) in taken:
            raise BbiError(
                f"{r.where}: a second response to the prompt of {taken[(pid, sample)]} "
                f"(sample {sample}); several samples need a distinct --sample-field value"
            )
        taken[(pid, sample)] = r.where
        lines.append(response_line(pid, sample, r.text, r.n_tokens, r.finish_reason))
    return lines
