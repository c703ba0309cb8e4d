"""Writing imported responses into a run directory, several models at once.

Reading a user's file (any shape, any column names) is ``probes.ingest``; this module
takes validated response lines per model and lays them into the run as one unit: every
check (the run's files, the suite, aliases and their file names, roles, prompt sets) is
made before the first write, each file is replaced atomically, responses before
run.yaml. It also splits a teacher imported with several samples per prompt into the
teacher and its A/A null (``NULL_ALIAS``), as ``bbi probe run`` would have generated
them, and keeps results.json's ``suite`` and ``models`` up to date so reports show the
suite hash of imported runs.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bbi.errors import BbiError
from bbi.runstore import (
    ROLES,
    RunDir,
    alias_file_stem,
    append_jsonl,
    backup_path,
    check_model_name,
    iter_jsonl,
    printable,
    suite_hash,
)

NULL_ALIAS = "teacher_null"  # the alias `bbi probe run` gives the A/A resample


@dataclass
class ImportedModel:
    """One model's responses to import: lines in the responses/<alias>.jsonl schema."""

    alias: str
    role: str
    lines: list[dict]
    source: Path
    spec: str | None = None
    note: dict = field(default_factory=dict)  # extra manifest fields (e.g. null_from)


def response_line(
    prompt_id: str,
    sample: int,
    text: str,
    n_tokens: int | None = None,
    finish_reason: str | None = None,
    cache_key: str | None = None,
) -> dict:
    """A responses line as bbi writes it; ``n_tokens`` defaults to a whitespace count."""
    return {
        "prompt_id": prompt_id,
        "sample": sample,
        "text": text,
        "n_tokens": len(text.split()) if n_tokens is None else n_tokens,
        "finish_reason": finish_reason or "stop",
        "cache_key": cache_key or "imported",
    }


def split_null(lines: list[dict]) -> tuple[list[dict], list[dict]] | None:
    """Teacher lines with >= 2 samples of every prompt -> (teacher, A/A null), else None.

    ``bbi probe run`` draws the null as an independent resample of the teacher with as
    many samples per prompt as the teacher. From imported samples the same is had by a
    partition: with ``m`` the fewest samples any prompt has and ``h = m // 2``, each
    prompt's samples at positions ``h .. 2h-1`` (in sample order) become the null's
    samples ``0 .. h-1``, and the teacher keeps the others, renumbered from 0. No text is
    in both, so teacher and null are exchangeable draws, as A/A calibration requires.
    """
    by_prompt: dict[str, list[dict]] = {}
    for line in lines:
        by_prompt.setdefault(line["prompt_id"], []).append(line)
    fewest = min((len(v) for v in by_prompt.values()), default=0)
    if fewest < 2:
        return None
    h = fewest // 2
    teacher: list[dict] = []
    null: list[dict] = []
    for group in by_prompt.values():
        group = sorted(group, key=lambda line: line["sample"])
        for pos, line in enumerate(group):
            if h <= pos < 2 * h:
                null.append({**line, "sample": pos - h})
            else:
                teacher.append({**line, "sample": pos if pos < h else pos - h})
    return teacher, null


class RunImport:
    """One import into a run: construct (checks the run and the suite), ``add`` models
    (checks each against the run), then ``commit`` (writes everything)."""

    def __init__(
        self,
        run_path: str | os.PathLike,
        suite_records: list[dict] | None = None,
        *,
        suite_name: str | None = None,
        replace: bool = False,
    ) -> None:
        path = Path(run_path)
        if path.exists() and not path.is_dir():
            raise BbiError(f"--run {path}: exists and is not a directory")
        self.run = RunDir(path, must_exist=False)
        self.is_new = not path.is_dir()
        self.cfg = self.run.config() if not self.is_new else {}
        if not self.is_new:
            self.run.check_files()  # damaged run files fail here, before any write
        self.replace = replace
        self.has_suite = self.run.suite_path.exists()
        self.suite_records = suite_records
        self.suite_name = suite_name
        if suite_records is not None:
            digest = suite_hash(suite_records)
            if self.has_suite and digest != _file_hash(self.run.suite_path):
                raise BbiError(
                    f"--suite differs from the suite {self.run.path} already holds: import into "
                    "another --run, or leave --suite out to use the run's suite"
                )
            self.suite_ids = {r["id"] for r in suite_records}
        elif self.has_suite:
            self.suite_ids = set(self.run.suite().index)
        else:
            raise BbiError(f"{self.run.path} has no suite yet: pass --suite FILE (or 'default')")
        self.existing = self.run.models() if not self.is_new else {}
        self.models: list[ImportedModel] = []

    def check(self, alias: str, role: str) -> None:
        """Whether ``alias`` may be imported with ``role`` (before its file is read)."""
        check_model_name(alias)
        if role not in ROLES:
            raise BbiError(f"unknown role {role!r} (use one of {', '.join(ROLES)})")
        if alias in self.existing and not self.replace:
            old = self.existing[alias]
            raise BbiError(
                f"alias {alias!r} in {self.run.path} already holds {old.get('role')} responses of "
                f"{old.get('spec') or 'an unknown model'}: choose another --alias, or --replace "
                "(the old file is kept beside it)"
            )
        if role == "teacher":
            teachers = [
                a for a, m in self.existing.items() if m.get("role") == "teacher" and a != alias
            ]
            teachers += [m.alias for m in self.models if m.role == "teacher"]
            if teachers:
                raise BbiError(
                    f"{self.run.path} already has the teacher {teachers[0]!r}; a run has one teacher"
                )
        if any(m.alias == alias for m in self.models):
            raise BbiError(f"model {alias!r} is imported twice")
        stem = alias_file_stem(alias)
        for other in [*self.existing, *(m.alias for m in self.models)]:
            if other != alias and alias_file_stem(other) == stem:
                raise BbiError(
                    f"model names {other!r} and {alias!r} would share the file "
                    f"responses/{stem}.jsonl; pass another --alias"
                )

    def add(self, model: ImportedModel, *, null: bool = False) -> ImportedModel | None:
        """Queue a model; with ``null`` and a teacher of >= 2 samples per prompt, also its
        A/A null (returned) unless the run already has one."""
        self.check(model.alias, model.role)
        if not model.lines:
            raise BbiError(f"{model.source}: no responses")
        self.models.append(model)
        if not (null and model.role == "teacher"):
            return None
        if any(m.get("role") == "null" for a, m in self.existing.items() if a != NULL_ALIAS):
            return None
        if NULL_ALIAS in self.existing and not self.replace:
            return None
        parts = split_null(model.lines)
        if parts is None:
            return None
        model.lines, null_lines = parts
        n_null = max(line["sample"] for line in null_lines) + 1
        null_model = ImportedModel(
            NULL_ALIAS,
            "null",
            null_lines,
            model.source,
            model.spec,
            note={"null_from": f"{model.alias}: {n_null} of each prompt's samples"},
        )
        self.check(NULL_ALIAS, "null")
        self.models.append(null_model)
        return null_model

    def commit(self) -> dict:
        """Check prompt sets, then write responses, suite, run.yaml, manifest, results."""
        run = self.run
        ids_of = {m.alias: {line["prompt_id"] for line in m.lines if line["sample"] == 0}
                  for m in self.models}  # fmt: skip
        for m in self.models:
            ids = ids_of[m.alias]
            for other in self.existing:
                if other in ids_of or not run.responses_path(other).exists():
                    continue
                theirs = set(run.responses(other).query("sample == 0")["prompt_id"])
                if theirs and theirs != ids:
                    raise BbiError(
                        f"prompt set of {m.alias!r} ({len(ids)} prompts) differs from "
                        f"{other!r} ({len(theirs)} prompts)"
                    )
            first = self.models[0]
            if ids != ids_of[first.alias]:
                raise BbiError(
                    f"prompt set of {m.alias!r} ({len(ids)} prompts) differs from "
                    f"{first.alias!r} ({len(ids_of[first.alias])} prompts)"
                )
        run.path.mkdir(parents=True, exist_ok=True)
        if self.suite_records is not None and not self.has_suite:
            from bbi.probe_run import write_suite

            write_suite(run, self.suite_records)
        for m in self.models:  # responses first: a crash before run.yaml leaves --replace
            path = run.responses_path(m.alias)
            tmp = path.with_name(f".{path.stem}.import.tmp")
            tmp.unlink(missing_ok=True)
            append_jsonl(tmp, m.lines)
            if path.exists():
                os.replace(path, backup_path(path, "replaced"))
            os.replace(tmp, path)
        cfg = dict(self.cfg)
        models = dict(cfg.get("models") or {})
        for m in self.models:
            models[m.alias] = {
                "spec": m.spec or f"imported:{printable(m.source.name)}",
                "role": m.role,
            }
        cfg["models"] = models
        if self.suite_records is not None and not self.has_suite:
            cfg["suite"] = {
                "name": self.suite_name or "imported",
                "hash": suite_hash(self.suite_records),
                "n": len(self.suite_records),
            }
        run.write_config(cfg)
        src_hash: dict[Path, str] = {}
        man_models = {}
        for m in self.models:
            if m.source not in src_hash:
                src_hash[m.source] = _file_hash(m.source) if m.source.is_file() else None
            man_models[m.alias] = {
                "spec": models[m.alias]["spec"],
                "role": m.role,
                "imported_from": printable(m.source),
                "fingerprint": src_hash[m.source],
                **m.note,
            }
        run.update_manifest(models=man_models)
        record_suite_and_models(run)
        return {m.alias: len(m.lines) for m in self.models}


def record_suite_and_models(run: RunDir, name: str | None = None) -> None:
    """results.json's ``suite`` (with its hash) and ``models`` from what the run holds,
    as ``bbi probe run`` records them."""
    from bbi.probe_run import suite_summary

    run._suite = None
    records = run.suite().to_dict("records")
    cfg_suite = run.config().get("suite") or {}
    digest = _file_hash(run.suite_path)
    res_suite = run.read_results().get("suite") or {}
    if res_suite.get("hash") != digest:
        run.update_results(
            "suite",
            suite_summary(records, digest, name or str(cfg_suite.get("name") or "imported")),
        )
    man = run.manifest().get("models", {})
    run.update_results(
        "models",
        {
            a: {**m, "fingerprint": (man.get(a) or {}).get("fingerprint")}
            for a, m in run.models().items()
        },
    )


def similarity_todo(run: RunDir, imported: Sequence[str]) -> list[str]:
    """The models whose similarity to the teacher an import makes computable or stale:
    all non-teacher models once the teacher is new (any order of imports works), else
    the imported ones, and any that still have none. Empty without a teacher."""
    teachers = run.aliases("teacher")
    if len(teachers) != 1 or not run.responses_path(teachers[0]).exists():
        return []
    have = run.read_results().get("similarity") or {}
    others = [a for a in run.aliases() if a not in teachers and run.responses_path(a).exists()]
    if teachers[0] in imported:
        return others
    return [a for a in others if a in imported or a not in have]


def _file_hash(path: Path) -> str:
    return "sha256:" + hashlib.sha256(Path(path).read_bytes()).hexdigest()


def import_responses(
    run_path: str | os.PathLike,
    alias: str,
    role: str,
    source: str | os.PathLike,
    suite_records: list[dict] | None = None,
    spec: str | None = None,
    replace: bool = False,
    null: bool = False,
) -> dict:
    """Bring responses produced elsewhere into a run (schema: docs/run-directory.md).

    Validates the whole file and its fit with the run (suite, roles, prompt sets, an
    alias already in use) before anything is written; the run's files then change as a
    unit of atomic replacements (bbi.ingest). ``replace`` allows re-importing an alias
    (the old file is kept as ``responses/ALIAS.replaced-<time>.jsonl``); ``null`` makes
    a teacher with >= 2 samples per prompt also the A/A null (bbi.ingest.split_null).
    Other file shapes and column names: probes.ingest.
    """
    check_model_name(alias)
    if role not in ROLES:
        raise BbiError(f"unknown role {role!r} (use one of {', '.join(ROLES)})")
    src = Path(source)
    if src.is_dir():
        raise BbiError(f"{src}: is a directory, expected a responses file (JSONL)")
    if not src.is_file():
        raise BbiError(f"responses file not found: {src}")
    job = RunImport(run_path, suite_records, replace=replace)
    job.check(alias, role)
    suite_ids = job.suite_ids
    lines: list[dict] = []
    seen: set[tuple[str, int]] = set()
    for i, rec in iter_jsonl(src):
        where = f"{src}:{i}"
        if "prompt_id" not in rec or not isinstance(rec["prompt_id"], str):
            raise BbiError(f"{where}: missing field 'prompt_id'")
        if "text" not in rec or not isinstance(rec["text"], str):
            raise BbiError(f"{where}: missing field 'text' (a string)")
        if rec["prompt_id"] not in suite_ids:
            raise BbiError(f"{where}: prompt_id {rec['prompt_id']!r} is not in the run's suite")
        sample = rec.get("sample", 0)
        if not isinstance(sample, int) or isinstance(sample, bool) or not 0 <= sample < 2**31:
            raise BbiError(f"{where}: field 'sample' must be a non-negative integer")
        fr = rec.get("finish_reason", "stop")
        if fr not in ("stop", "length"):
            raise BbiError(f"{where}: field 'finish_reason' must be 'stop' or 'length'")
        n_tok = rec.get("n_tokens")
        if n_tok is None:
            n_tok = len(rec["text"].split())
        if not isinstance(n_tok, int) or isinstance(n_tok, bool) or not 0 <= n_tok < 2**62:
            raise BbiError(f"{where}: field 'n_tokens' must be a non-negative integer")
        if (rec["prompt_id"], sample) in seen:
            raise BbiError(
                f"{where}: duplicate response for ({rec['prompt_id']!r}, sample {sample})"
            )
        seen.add((rec["prompt_id"], sample))
        cache = rec.get("cache_key", "imported")
        lines.append(response_line(rec["prompt_id"], sample, rec["text"], n_tok, fr, cache))
    if not lines:
        raise BbiError(f"{src}: no responses")
    made_null = job.add(ImportedModel(alias, role, lines, src, spec), null=null)
    counts = job.commit()
    return {"alias": alias, "n": counts[alias], "null": made_null.alias if made_null else None}
