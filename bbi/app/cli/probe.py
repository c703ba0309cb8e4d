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
) -> None:
    """Build the deterministic 5,000-prompt suite and write it as JSONL."""
    from bbi.app.cli.outputs import check_output_file
    from probes import build_suite, suite_hash, write_suite

    check_output_file(output, "-o", "suite.jsonl")
    console = Console()
    with console.status("building the probe suite..."):
        records = build_suite(seed)
    try:
        write_suite(records, output)
    except OSError as exc:
        raise BbiError(f"-o {output}: cannot write ({exc.strerror or exc})") from None
    console.print(_counts_table(records, f"probe suite (seed {seed})"))
    console.print(f"wrote {len(records)} prompts to {output}")
    console.print(f"suite hash: {suite_hash(records)}", soft_wrap=True)


@app.command("show")
def show(
    file: Path = typer.Argument(
        ..., help="Suite file (JSONL, CSV, or a datasets directory).", parser=path_value
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
        ..., help="Suite file (JSONL, CSV, or a datasets directory).", parser=path_value
    ),
) -> None:
    """Check a user suite; a malformed file fails with one line naming the line and field."""
    from probes import load_suite_with_notes, suite_hash

    console = Console()
    records, notes = load_suite_with_notes(file)
    for note in notes:
        console.print(f"note: {note}")
    console.print(_counts_table(records, str(file)))
    console.print(f"ok: {len(records)} prompts, suite hash {suite_hash(records)}", soft_wrap=True)
