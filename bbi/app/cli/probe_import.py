"""`bbi probe import` and `bbi probe refresh`: bring generations made elsewhere into a run.

Files of any shape (probes.ingest reads them with a field mapping), written into the run
as one unit (bbi.ingest); similarity to the teacher is computed whenever both sides
exist, whatever the order of the imports, and printed with its CI.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from bbi.app.cli.params import path_value, text_value
from bbi.errors import BbiError

if TYPE_CHECKING:
    from bbi.runstore import RunDir
    from probes.ingest import FieldMap, SplitSpec

console = Console(stderr=True)


def field_list(values: list[str] | None) -> tuple[str, ...]:
    """Repeated and comma-separated values of one option, in order."""
    out: list[str] = []
    for value in values or []:
        out += [v.strip() for v in value.split(",") if v.strip()]
    return tuple(out)


def split_spec(seed: int | None, fraction: float | None, size: int | None) -> SplitSpec:
    """The split options, checked (one of --test-fraction / --test-size)."""
    from probes.ingest import SplitSpec

    if fraction is not None and size is not None:
        raise BbiError("--test-fraction and --test-size: give one of them")
    return SplitSpec(seed=seed, test_fraction=fraction, test_size=size)


def print_similarity(run: RunDir, aliases: list[str]) -> None:
    """Each model's overall similarity to the teacher, with its 95% CI."""
    sim = run.read_results().get("similarity") or {}
    table = Table(title="semantic similarity to the teacher (mean cosine, 95% CI)")
    for col in ("model", "overall", "test split"):
        table.add_column(col, justify="left" if col == "model" else "right")

    def cell(e: dict | None) -> str:
        return f"{e['value']:.3f} [{e['ci'][0]:.3f}, {e['ci'][1]:.3f}]" if e else "-"

    for alias in aliases:
        e = sim.get(alias) or {}
        table.add_row(alias, cell(e.get("overall")), cell(e.get("test")))
    console.print(table)


def finish(run_path: Path, imported: list[str], similarity: bool) -> None:
    """Similarity for whatever the import made computable; say so when it is not yet."""
    from bbi.ingest import similarity_todo
    from bbi.probe_run import summarize_similarity
    from bbi.runstore import RunDir

    rd = RunDir(run_path)
    if not similarity:
        return
    todo = similarity_todo(rd, imported)
    if todo:
        summarize_similarity(rd, todo)
        print_similarity(rd, todo)
    elif not rd.aliases("teacher"):
        console.print("similarity: computed once the teacher is imported (--role teacher)")


def register(app: typer.Typer) -> None:
    """Attach `import` and `refresh` to the `bbi probe` group."""

    @app.command("import")
    def import_cmd(
        responses: Path = typer.Argument(
            ...,
            help="Responses: JSONL, JSON array, CSV/TSV, Parquet or a datasets directory "
            "(bbi's own schema: prompt_id, text[, sample, n_tokens, finish_reason]).",
            parser=path_value,
        ),
        run: Path = typer.Option(
            ..., "--run", "-r", help="Run directory to import into.", parser=path_value
        ),
        alias: str = typer.Option(
            None,
            "--alias",
            "-a",
            help="Name of the model (any name, e.g. openai/gpt-4o); default: the value of "
            "--model-field when the file holds one model.",
        ),
        role: str = typer.Option(
            "student", "--role", help="teacher, null (A/A resample) or student."
        ),
        teacher: str = typer.Option(
            None,
            "--teacher",
            help="In a file of several models (--model-field, or several --response-field), "
            "the one that is the teacher; the others get --role.",
            parser=text_value,
        ),
        suite: str = typer.Option(
            None, "--suite", help="Suite the responses answer (needed if the run has none yet)."
        ),
        build_suite: bool = typer.Option(
            False,
            "--build-suite",
            help="Build the run's suite from the file's prompts (if it has none yet); see "
            "--split-seed, --test-fraction, --test-size.",
        ),
        prompt_field: str = typer.Option(
            None, "--prompt-field", help="Column of the prompt text (default prompt)."
        ),
        response_field: list[str] = typer.Option(
            None,
            "--response-field",
            help="Column of the response (default text); several (repeated or a,b,c): a wide "
            "table, one column per model, each column's name its alias.",
        ),
        category_field: str = typer.Option(
            None, "--category-field", help="Column of the category, for --build-suite."
        ),
        id_field: str = typer.Option(
            None,
            "--id-field",
            help="Column of the prompt id (default prompt_id); without one, responses are "
            "matched to the suite by prompt text.",
        ),
        model_field: str = typer.Option(
            None,
            "--model-field",
            help="Column naming each row's model (a long table); each model is imported "
            "under its name.",
        ),
        sample_field: str = typer.Option(
            None,
            "--sample-field",
            help="Column of the sample index (default sample); without one, several rows of "
            "a prompt are its samples in file order.",
        ),
        models: list[str] = typer.Option(
            None, "--models", help="Import only these models of a long table (a,b,c)."
        ),
        split_seed: int = typer.Option(None, "--split-seed", help="Seed of the train/test split."),
        test_fraction: float = typer.Option(
            None, "--test-fraction", help="Share of each category's prompts for test (0.2)."
        ),
        test_size: int = typer.Option(
            None, "--test-size", help="Test prompts in all (shared among categories)."
        ),
        spec: str = typer.Option(
            None,
            "--spec",
            help="Optional model spec to record for provenance.",
            parser=text_value,
        ),
        similarity: bool = typer.Option(
            True, "--similarity/--no-similarity", help="Compute similarity to the teacher."
        ),
        null: bool = typer.Option(
            True,
            "--null/--no-null",
            help="A teacher with >= 2 samples per prompt also gives the A/A null "
            "(teacher_null): half of each prompt's samples.",
        ),
        replace: bool = typer.Option(
            False, "--replace", help="Replace an alias's responses (the old file is kept)."
        ),
    ) -> None:
        """Import responses produced elsewhere, in any shape, with a field mapping."""
        from probes.ingest import FieldMap

        fields = FieldMap(
            prompt=prompt_field,
            responses=field_list(response_field),
            category=category_field,
            id=id_field,
            model=model_field,
            sample=sample_field,
        )
        mapped = fields != FieldMap() or models or teacher or build_suite
        if (
            not mapped
            and responses.suffix.lower() in (".jsonl", ".ndjson")
            and _own_schema(responses)
        ):
            if split_seed is not None or test_fraction is not None or test_size is not None:
                raise BbiError("--split-seed, --test-fraction, --test-size go with --build-suite")
            imported = _import_own_schema(responses, run, alias, role, suite, spec, replace, null)
        else:
            imported = _import_mapped(
                responses, run, fields, alias, role, teacher, field_list(models), suite,
                build_suite, split_spec(split_seed, test_fraction, test_size), spec, replace,
                null,
            )  # fmt: skip
        finish(run, imported, similarity)

    @app.command("refresh")
    def refresh_cmd(
        run: Path = typer.Argument(..., help="Run directory.", parser=path_value),
    ) -> None:
        """Recompute what imports leave behind: results.json's suite (and its hash) and
        models, and every model's similarity to the teacher (repairs runs whose student
        was imported before the teacher)."""
        from bbi.ingest import record_suite_and_models
        from bbi.probe_run import summarize_similarity
        from bbi.runstore import RunDir

        rd = RunDir(run)
        rd.check_files()
        rd.teacher_alias()  # one line when there is none (or several)
        record_suite_and_models(rd)
        todo = [a for a in rd.aliases() if a not in rd.aliases("teacher")]
        todo = [a for a in todo if rd.responses_path(a).exists()]
        if todo:
            summarize_similarity(rd, todo)
            print_similarity(rd, todo)
        console.print(f"refreshed {run}")


def _own_schema(path: Path) -> bool:
    """Whether a JSONL file is in bbi's own responses schema (a prompt_id field)."""
    from probes.ingest import read_rows

    rows = read_rows(path)
    return "prompt_id" in rows[0][1]


def _import_own_schema(
    src: Path,
    run: Path,
    alias: str | None,
    role: str,
    suite: str | None,
    spec: str | None,
    replace: bool,
    null: bool,
) -> list[str]:
    from bbi.app.cli.probe_run import load_suite_arg
    from bbi.ingest import import_responses

    if alias is None:
        raise BbiError("--alias is required: the name of the model these responses come from")
    records = load_suite_arg(suite)[0] if suite is not None else None
    out = import_responses(
        run, alias, role, src, suite_records=records, spec=spec, replace=replace, null=null
    )
    console.print(f"imported {out['n']} responses as [bold]{alias}[/] ({role}) into {run}")
    if out.get("null"):
        console.print(f"A/A null: {out['null']}, an independent resample of the teacher")
    return [alias] + ([out["null"]] if out.get("null") else [])


def _import_mapped(
    src: Path,
    run: Path,
    fields: FieldMap,
    alias: str | None,
    role: str,
    teacher: str | None,
    only: tuple[str, ...],
    suite: str | None,
    build_suite: bool,
    split: SplitSpec,
    spec: str | None,
    replace: bool,
    null: bool,
) -> list[str]:
    from bbi.app.cli.probe_run import load_suite_arg
    from bbi.ingest import ImportedModel, RunImport
    from bbi.runstore import RunDir, printable, suite_hash
    from probes.ingest import read_responses, response_lines, suite_from_responses

    if build_suite and suite is not None:
        raise BbiError("--build-suite and --suite: give one of them")
    if split.given and not build_suite:
        raise BbiError("--split-seed, --test-fraction, --test-size go with --build-suite")
    if (
        src.is_dir()
        and not (src / "dataset_info.json").exists()
        and not (src / "dataset_dict.json").exists()
    ):
        raise BbiError(
            f"{src}: is a directory, expected a responses file (or a datasets directory)"
        )
    table = read_responses(src, fields, only or None)
    names = list(table.by_model)
    if len(names) > 1 and alias is not None:
        raise BbiError(
            f"--alias names one model; {src} holds {len(names)} ({', '.join(map(str, names))}): "
            "each is imported under its own name"
        )
    if teacher is not None and teacher not in names:
        raise BbiError(
            f"--teacher {teacher!r}: not a model of {src} ({', '.join(map(str, names))})"
        )
    if len(names) > 1 and role == "teacher":
        raise BbiError("--role teacher with several models: name the teacher with --teacher NAME")
    plan: list[tuple[str | None, str, str]] = []  # (key in the table, alias, role)
    for key in names:
        name = alias if alias is not None else key
        if name is None:
            raise BbiError(
                "--alias is required: the name of the model these responses come from "
                "(or --model-field COLUMN naming it)"
            )
        plan.append((key, name, "teacher" if teacher is not None and key == teacher else role))

    path = Path(run)
    has_suite = (path / "suite.jsonl").is_file()
    records: list[dict] | None = None
    suite_name = None
    note = None
    if build_suite and not has_suite:
        records, note = suite_from_responses(table, split)
        suite_name = f"imported:{printable(src.name)}"
    elif suite is not None:
        records, suite_name = load_suite_arg(suite)
    job = RunImport(run, records, suite_name=suite_name, replace=replace)
    for _, name, r in plan:
        job.check(name, r)
    suite_records = records if records is not None else job.run.suite().to_dict("records")
    nulls = []
    for key, name, r in plan:
        lines = response_lines(table, key, suite_records)
        made = job.add(ImportedModel(name, r, lines, src, spec), null=null)
        if made is not None:
            nulls.append(made.alias)
    counts = job.commit()
    if note:
        console.print(f"suite: {len(records)} prompts from {src.name}; {note}")
    elif build_suite and has_suite:
        console.print("suite: the run's own (built by an earlier import); responses matched to it")
    if records is not None or build_suite:
        digest = suite_hash(RunDir(run).suite().to_dict("records"))
        console.print(f"suite hash: {digest}", soft_wrap=True)
    for m in job.models:
        n_samples = 1 + max(line["sample"] for line in m.lines)
        extra = f", {n_samples} samples per prompt" if n_samples > 1 else ""
        console.print(
            f"imported {counts[m.alias]} responses as [bold]{m.alias}[/] ({m.role}{extra}) "
            f"into {run}",
            highlight=False,
        )
    for n in nulls:
        console.print(f"A/A null: {n}, an independent resample of the teacher from its samples")
    return [m.alias for m in job.models]
