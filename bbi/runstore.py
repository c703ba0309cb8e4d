"""The run directory: the one module that knows its layout (docs/run-directory.md).

Commands communicate only through these files, so a run produced on another machine
(or imported responses) can be attacked and reported on here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bbi.errors import BbiError

ROLES = ("teacher", "null", "student")
# The fields of a probe-suite record, in canonical order (docs/run-directory.md).
SUITE_FIELDS = (
    "id",
    "category",
    "subcategory",
    "prompt",
    "split",
    "reference",
    "source",
    "perturbation",
    "base_id",
)
ALIAS_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
SCHEMA_VERSION = 1


def canonical_record(rec: dict) -> dict:
    """Standard suite fields first (in SUITE_FIELDS order), then extra fields sorted by name."""
    out = {k: rec.get(k) for k in SUITE_FIELDS}
    for k in sorted(set(rec) - set(SUITE_FIELDS)):
        out[k] = rec[k]
    return out


def suite_bytes(records: list[dict]) -> bytes:
    """The canonical JSONL bytes of a suite: what suite.jsonl holds and what is hashed."""
    lines = [json.dumps(canonical_record(r), ensure_ascii=False) for r in records]
    return ("\n".join(lines) + "\n").encode("utf-8") if lines else b""


def suite_hash(records: list[dict]) -> str:
    """ "sha256:<hex>" of the canonical JSONL bytes; the one suite hash bbi records."""
    return "sha256:" + hashlib.sha256(suite_bytes(records)).hexdigest()


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """A YAML file whose top level is a mapping; every problem is a one-line BbiError."""
    path = Path(path)
    if not path.is_file():
        raise BbiError(f"config not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise BbiError(f"{path}: invalid YAML ({(str(exc).splitlines() or [''])[0]})") from None
    if not isinstance(data, dict):
        raise BbiError(f"{path}: expected a mapping at the top level")
    return data


def check_alias(alias: str) -> str:
    """Aliases become file names; refuse anything that is not file-name safe."""
    if not ALIAS_RE.match(alias) or alias in {".", ".."}:
        raise BbiError(f"invalid model alias {alias!r}: use letters, digits, '_', '-', '.'")
    return alias


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(
        Path(path), json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    )


def _json_default(obj: Any) -> Any:
    # numpy scalars / arrays and Paths show up in results; serialise them plainly.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def read_jsonl(path: Path) -> Iterator[dict]:
    """Yield records; a torn last line (crash mid-write) is skipped, other bad lines are errors."""
    path = Path(path)
    with path.open(encoding="utf-8") as fh:
        lines = fh.readlines()
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if i == len(lines) and not line.endswith("\n"):
                return  # torn tail of an interrupted append
            raise BbiError(f"{path}:{i}: invalid JSON ({exc.msg})") from None
        if not isinstance(rec, dict):
            raise BbiError(f"{path}:{i}: expected a JSON object")
        yield rec


def append_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Append records and flush+fsync, so what was written survives a kill."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    # Repair a torn tail first so the next record starts on its own line.
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if last != b"\n":
            _truncate_torn_tail(path)
    with path.open("a", encoding="utf-8") as fh:
        for rec in records:
            fh.write(json.dumps(rec, ensure_ascii=False, default=_json_default) + "\n")
            n += 1
        fh.flush()
        os.fsync(fh.fileno())
    return n


def _truncate_torn_tail(path: Path) -> None:
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    with path.open("r+b") as fh:
        fh.truncate(cut)


class RunDir:
    """Accessors for one run directory (see docs/run-directory.md)."""

    def __init__(self, path: str | os.PathLike, create: bool = False):
        self.path = Path(path)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif not self.path.is_dir():
            raise BbiError(f"run directory not found: {self.path}")
        self._suite: pd.DataFrame | None = None

    # ---- paths -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.path.resolve().name

    @property
    def config_path(self) -> Path:
        return self.path / "run.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def suite_path(self) -> Path:
        return self.path / "suite.jsonl"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def similarity_path(self) -> Path:
        return self.path / "similarity.jsonl"

    @property
    def attack_dir(self) -> Path:
        return self.path / "attack"

    def responses_path(self, alias: str) -> Path:
        return self.path / "responses" / f"{check_alias(alias)}.jsonl"

    # ---- config / manifest -------------------------------------------------------
    def config(self) -> dict:
        return read_yaml_mapping(self.config_path) if self.config_path.exists() else {}

    def write_config(self, cfg: dict) -> None:
        atomic_write_text(
            self.config_path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
        )

    def manifest(self) -> dict:
        if not self.manifest_path.exists():
            return {}
        return json.loads(self.manifest_path.read_text(encoding="utf-8"))

    def update_manifest(self, **fields: Any) -> dict:
        man = self.manifest()
        for key, value in fields.items():
            if isinstance(value, dict) and isinstance(man.get(key), dict):
                man[key] = {**man[key], **value}
            else:
                man[key] = value
        write_json(self.manifest_path, man)
        return man

    # ---- models ------------------------------------------------------------------
    def models(self) -> dict[str, dict]:
        """alias -> {"spec": str, "role": str}, from run.yaml, else inferred from responses/."""
        models = dict(self.config().get("models") or {})
        for p in sorted((self.path / "responses").glob("*.jsonl")):
            alias = p.stem
            if alias not in models:
                role = (
                    "teacher"
                    if alias == "teacher"
                    else "null"
                    if alias == "teacher_null"
                    else "student"
                )
                models[alias] = {"spec": None, "role": role}
        return models

    def aliases(self, role: str | None = None) -> list[str]:
        return [a for a, m in self.models().items() if role is None or m.get("role") == role]

    def teacher_alias(self) -> str:
        teachers = self.aliases("teacher")
        if len(teachers) != 1:
            raise BbiError(
                f"{self.path}: expected exactly one teacher model, found {len(teachers)}"
            )
        return teachers[0]

    # ---- suite / responses -------------------------------------------------------
    def suite(self) -> pd.DataFrame:
        if self._suite is None:
            if not self.suite_path.exists():
                raise BbiError(
                    f"{self.path}: no suite.jsonl (run `bbi probe run` or `bbi probe import` first)"
                )
            df = pd.DataFrame(list(read_jsonl(self.suite_path)))
            if df.empty:
                raise BbiError(f"{self.suite_path}: empty suite")
            self._suite = df.set_index("id", drop=False)
        return self._suite

    def responses(self, alias: str) -> pd.DataFrame:
        path = self.responses_path(alias)
        if not path.exists():
            raise BbiError(f"{self.path}: no responses for model {alias!r}")
        df = pd.DataFrame(list(read_jsonl(path)))
        if df.empty:
            return pd.DataFrame(
                columns=["prompt_id", "sample", "text", "n_tokens", "finish_reason"]
            )
        if "sample" not in df:
            df["sample"] = 0
        # Last write wins if a line was ever duplicated by an interrupted run.
        return df.drop_duplicates(["prompt_id", "sample"], keep="last").reset_index(drop=True)

    def paired(self, other: str, sample: int = 0, reference: str | None = None) -> pd.DataFrame:
        """One row per prompt answered by both the reference (teacher) and ``other``.

        Columns: id, category, subcategory, split, prompt, teacher, other (response texts),
        teacher_tokens, other_tokens.
        """
        reference = reference or self.teacher_alias()
        suite = self.suite()
        ref = self.responses(reference)
        oth = self.responses(other)
        in_suite = set(suite.index)
        ref = ref[(ref["sample"] == sample) & ref["prompt_id"].isin(in_suite)].set_index(
            "prompt_id"
        )
        oth = oth[(oth["sample"] == sample) & oth["prompt_id"].isin(in_suite)].set_index(
            "prompt_id"
        )
        missing = set(ref.index) ^ set(oth.index)
        if missing:
            raise BbiError(
                f"{self.path}: models {reference!r} and {other!r} answered different prompt sets "
                f"({len(missing)} prompt ids differ, e.g. {sorted(missing)[0]!r})"
            )
        ids = [i for i in suite.index if i in ref.index]
        if not ids:
            raise BbiError(f"{self.path}: no responses match the suite's prompt ids")
        out = suite.loc[ids, ["id", "category", "subcategory", "split", "prompt"]].copy()
        out["teacher"] = ref.loc[ids, "text"].astype(str).values
        out["other"] = oth.loc[ids, "text"].astype(str).values
        out["teacher_tokens"] = ref.loc[ids, "n_tokens"].values if "n_tokens" in ref else None
        out["other_tokens"] = oth.loc[ids, "n_tokens"].values if "n_tokens" in oth else None
        return out.reset_index(drop=True)

    # ---- results -----------------------------------------------------------------
    def read_results(self) -> dict:
        if not self.results_path.exists():
            return {"schema_version": SCHEMA_VERSION, "run": self.name}
        try:
            return json.loads(self.results_path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise BbiError(f"{self.results_path}: invalid JSON ({exc.msg})") from None

    def update_results(self, key: str, value: Any) -> dict:
        """Replace one top-level key of results.json atomically, keeping the others."""
        res = self.read_results()
        res["schema_version"] = SCHEMA_VERSION
        res["run"] = self.name
        res[key] = value
        write_json(self.results_path, res)
        return res

    def write_json(self, relpath: str, obj: Any) -> Path:
        path = self.path / relpath
        write_json(path, obj)
        return path
