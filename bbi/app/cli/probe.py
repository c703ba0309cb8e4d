"""`bbi probe` commands: build/show/validate probe suites, run models on them."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from bbi.app.cli.params import path_value
from bbi.errors import BbiError

app = typer.Typer(help="Probe suites and model responses.", no_args_is_help=True)


def _counts_table(records: list[dict], title: str) -> Table:
    """category x (train, test, total), categories in suite order, then any others."""
    from probes import CATEGORIES
    from probes.schema import summary

    counts = summary(records)
    order = [c for c in CATEGORIES if c in counts] + sorted(set(counts) - set(CATEGORIES))
    table = Table(title=title)
    table.add_column("category")
    for col in ("train", "test", "total"):
        table.add_column(col, justify="right")
    for cat in order:
        c = counts[cat]
        table.add_row(cat, str(c["train"]), str(c["test"]), str(c["train"] + c["test"]))
    n_train = sum(c["train"] for c in counts.values())
    n_test = sum(c["test"] for c in counts.values())
    table.add_section()
    table.add_row("all", str(n_train), str(n_test), str(n_train + n_test), style="bold")
    return table


@app.command("build")
def build(
    seed: int = typer.Option(0, "--seed", help="Suite seed; 0 is the default suite."),
    output: Path = typer.Option(
        Path("suite.jsonl"), "-o", "--output", help="JSONL file to write.", parser=path_value
    ),
    source: Path = typer.Option(
        None,
        "--from",
        help="Build from the prompts of this file instead (any shape bbi probe import reads), "
        "with --prompt-field, --category-field, --id-field and a seeded split.",
        parser=path_value,
    ),
    prompt_field: str = typer.Option(None, "--prompt-field", help="With --from: prompt column."),
    category_field: str = typer.Option(
        None, "--category-field", help="With --from: category column."
    ),
    id_field: str = typer.Option(None, "--id-field", help="With --from: prompt id column."),
    split_seed: int = typer.Option(None, "--split-seed", help="With --from: split seed."),
    test_fraction: float = typer.Option(None, "--test-fraction", help="With --from: test share."),
    test_size: int = typer.Option(None, "--test-size", help="With --from: test prompts in all."),
) -> None:
    """Build the deterministic 5,000-prompt suite (or one from a file's prompts) as JSONL."""
    from bbi.app.cli.outputs import check_output_file
    from probes import build_suite, suite_hash, write_suite

    check_output_file(output, "-o", "suite.jsonl")
    console = Console()
    if source is not None:
        from bbi.app.cli.probe_import import split_spec
        from probes.ingest import FieldMap, suite_from_file

        fields = FieldMap(prompt=prompt_field, category=category_field, id=id_field)
        records, note = suite_from_file(
            source, fields, split_spec(split_seed, test_fraction, test_size)
        )
        console.print(f"note: {note}")
    else:
        with console.status("building the probe suite..."):
            records = build_suite(seed)
    try:
        write_suite(records, output)
    except OSError as exc:
        raise BbiError(f"-o {output}: cannot write ({exc.strerror or exc})") from None
    title = f"probe suite from {source}" if source is not None else f"probe suite (seed {seed})"
    console.print(_counts_table(records, title))
    console.print(f"wrote {len(records)} prompts to {output}")
    console.print(f"suite hash: {suite_hash(records)}", soft_wrap=True)


@app.command("show")
def show(
    file: Path = typer.Argument(
        ...,
        help="Suite file (JSONL, JSON array, CSV/TSV, Parquet, or a datasets directory).",
        parser=path_value,
    ),
    examples: int = typer.Option(3, "--examples", min=0, help="Examples per category."),
    seed: int = typer.Option(0, "--seed", help="Seed for choosing which examples to show."),
) -> None:
    """Counts per category and split, plus a few example prompts per category."""
    import random

    from probes import load_suite_with_notes, suite_hash

    console = Console()
    records, notes = load_suite_with_notes(file)
    for note in notes:
        console.print(f"note: {note}")
    console.print(_counts_table(records, str(file)))
    console.print(f"suite hash: {suite_hash(records)}", soft_wrap=True)
    if examples == 0:
        return
    rng = random.Random(seed)
    by_cat: dict[str, list[dict]] = {}
    for rec in records:
        by_cat.setdefault(rec["category"], []).append(rec)
    for cat, recs in by_cat.items():
        table = Table(title=f"{cat}: {min(examples, len(recs))} examples", show_lines=True)
        table.add_column("id", no_wrap=True)
        table.add_column("subcategory")
        table.add_column("prompt", overflow="fold")
        table.add_column("reference", overflow="fold")
        for rec in rng.sample(recs, min(examples, len(recs))):
            ref = rec.get("reference")
            table.add_row(
                rec["id"], rec.get("subcategory") or "", rec["prompt"], "" if ref is None else ref
            )
        console.print(table)


@app.command("validate")
def validate(
    file: Path = typer.Argument(
        ...,
        help="Suite file (JSONL, JSON array, CSV/TSV, Parquet, or a datasets directory).",
        parser=path_value,
    ),
    prompt_field: str = typer.Option(None, "--prompt-field", help="Column of the prompt."),
    category_field: str = typer.Option(None, "--category-field", help="Column of the category."),
    id_field: str = typer.Option(None, "--id-field", help="Column of the prompt id."),
    split_seed: int = typer.Option(
        None, "--split-seed", help="Seed of the split (no split column)."
    ),
    test_fraction: float = typer.Option(None, "--test-fraction", help="Share of test prompts."),
    test_size: int = typer.Option(None, "--test-size", help="Test prompts in all."),
) -> None:
    """Check a user suite; a missing column is named, a malformed record by line and field."""
    from bbi.app.cli.probe_import import split_spec
    from probes import suite_hash
    from probes.ingest import FieldMap, load_suite_mapped

    console = Console()
    fields = FieldMap(prompt=prompt_field, category=category_field, id=id_field)
    records, notes = load_suite_mapped(
        file, fields, split_spec(split_seed, test_fraction, test_size)
    )
    for note in notes:
        console.print(f"note: {note}")
    console.print(_counts_table(records, str(file)))
    console.print(f"ok: {len(records)} prompts, suite hash {suite_hash(records)}", soft_wrap=True)
