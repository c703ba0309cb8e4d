"""`bbi zoo` commands: build, list and locate the embedded offline model pair."""

from __future__ import annotations

import typer

from bbi import zoo
from bbi.errors import BbiError

app = typer.Typer(
    help="The embedded offline teacher/student pair (zoo:teacher, zoo:student).",
    no_args_is_help=True,
)


def _probes_corpus(seed: int, per_category: int) -> list[dict]:
    """The probes package's training corpus (seeds disjoint from the probe suite)."""
    try:
        from probes import training_corpus
    except ImportError as exc:
        raise BbiError(
            f"cannot build the zoo: the probes package has no training corpus ({exc})"
        ) from None
    return training_corpus(seed=seed, per_category=per_category)


# Core may not import probes, so the composition root wires the zoo to its corpus.
if not zoo.has_corpus_provider():
    zoo.set_corpus_provider(_probes_corpus)

_CONFIG_HELP = "Zoo config: default or micro (default: $BBI_ZOO_CONFIG, else default)."


@app.command("build")
def build(
    config: str = typer.Option(None, "--config", help=_CONFIG_HELP),
    force: bool = typer.Option(False, "--force", help="Rebuild even if cached."),
) -> None:
    """Train and cache the zoo pair (a few minutes on 2 CPU cores; once)."""
    cfg = zoo.get_config(config)
    if zoo.is_built(cfg) and not force:
        typer.echo(f"already built: {zoo.zoo_dir(cfg)}")
        return
    path = zoo.build_zoo(cfg, force=force, progress=True)
    info = zoo.read_info(cfg)
    for name, m in info["models"].items():
        typer.echo(
            f"{name}: {m['arch']} {m['params'] / 1e6:.2f}M params, {m['steps']} steps, "
            f"eval loss {m['eval_loss']:.3f}"
        )
    typer.echo(f"built in {info['build_seconds']:.0f}s: {path}")


@app.command("list")
def list_models() -> None:
    """Show each zoo config, whether it is built, and its models."""
    from rich.console import Console
    from rich.table import Table

    table = Table("config", "model", "arch", "params", "steps", "eval loss", "fingerprint", "path")
    for name in zoo.CONFIGS:
        if not zoo.is_built(name):
            table.add_row(name, "-", "-", "-", "-", "-", "-", f"(not built) {zoo.zoo_dir(name)}")
            continue
        info = zoo.read_info(name)
        for model, m in info["models"].items():
            table.add_row(
                name,
                model,
                m["arch"],
                f"{m['params'] / 1e6:.2f}M",
                str(m["steps"]),
                f"{m['eval_loss']:.3f}",
                m["fingerprint"],
                str(zoo.zoo_dir(name) / model),
            )
    Console(width=200).print(table)


@app.command("path")
def path(
    model: str = typer.Argument(None, help="teacher or student (default: the zoo directory)."),
    config: str = typer.Option(None, "--config", help=_CONFIG_HELP),
) -> None:
    """Print where a zoo model lives (it must be built)."""
    cfg = zoo.get_config(config)
    if model is None:
        if not zoo.is_built(cfg):
            raise BbiError(f"the zoo ({cfg.name}) is not built; run `bbi zoo build`")
        typer.echo(str(zoo.zoo_dir(cfg)))
        return
    typer.echo(str(zoo.model_path(model, cfg, build=False)))
