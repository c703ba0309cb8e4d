"""`bbi distill <method>`: build students that close the gap to the teacher.

The commands are generated from the distillation-method registry
(``distill.methods.METHODS``, plug-ins included): each method's run options (run
directory, alias, output, ...) and one option per field of its settings model
(``bbi.config``), with that model's defaults in the help, plus ``--config FILE`` (a YAML
of the settings; flags override it). The application layer supplies what a method
``needs`` from the sibling packages (attack-guided sample weights, the safety probe).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import typer
from pydantic import ValidationError

from bbi.app.cli.settings_options import (
    CONFIG_PARAM,
    config_parameter,
    load_settings,
    model_parameters,
    settings_parameters,
)
from bbi.config import format_error
from bbi.errors import BbiError

app = typer.Typer(
    help="Distil students from the teacher, one command per distillation method "
    "(`lora`, `kd`, `wda`, `bird`, `circuit`, and installed plug-ins).",
    no_args_is_help=True,
)


def _sample_weights(method: Any, settings: Any, options: Any) -> Any:
    from bbi.app.guide import guide_weights_for
    from bbi.runstore import RunDir

    run_dir = getattr(options, "run_dir", None) or getattr(options, "run", None)
    if run_dir is None or getattr(settings, "guide", "none") == "none":
        return None
    return guide_weights_for(RunDir(run_dir), settings, getattr(options, "student", None))


def _behaviour(method: Any, settings: Any, options: Any) -> Any:
    from probes import safety_behaviour

    return safety_behaviour


def _groups(method: Any, settings: Any, options: Any) -> Any:
    from probes import safety_groups

    return safety_groups()


# What the application layer can give a method (``DistillMethod.needs``).
NEEDS: dict[str, Callable[[Any, Any, Any], Any]] = {
    "sample_weights": _sample_weights,
    "behaviour": _behaviour,
    "groups": _groups,
}


def run_method(name: str, settings: Any, options: Any) -> Any:
    """Run method ``name`` with its needs supplied; print its output; return it."""
    from bbi.app.cli.outputs import check_output_dir
    from distill.methods import get_method

    method = get_method(name)
    check_output_dir(getattr(options, "out", None), "--out")  # before any training
    unknown = [n for n in method.needs if n not in NEEDS]
    if unknown:
        raise BbiError(
            f"distillation method {name!r} needs {', '.join(unknown)}, which bbi cannot give"
        )
    needs = {n: NEEDS[n](method, settings, options) for n in method.needs}
    output = method.run(settings, options, **needs)
    for line in output.notes:
        typer.echo(line, err=True)
    if output.stdout is not None:
        typer.echo(output.stdout)
    elif output.spec is not None:
        typer.echo(output.spec)
    return output


def make_command(name: str) -> Callable[..., None]:
    """The typer command of method ``name``: its options, its settings, ``--config``."""
    from distill.methods import get_method

    method = get_method(name)
    opt_params = model_parameters(method.options)
    set_params = settings_parameters(method.settings)
    clash = {p.name for p in opt_params} & ({p.name for p in set_params} | {CONFIG_PARAM})
    if clash:
        raise BbiError(
            f"distillation method {name!r}: options clash with settings: {sorted(clash)}"
        )
    opt_names = [p.name for p in opt_params]
    set_names = [p.name for p in set_params]

    def command(**kwargs: Any) -> None:
        settings = load_settings(
            method.settings, kwargs.get(CONFIG_PARAM), {n: kwargs[n] for n in set_names}
        )
        try:
            options = method.options(**{n: kwargs[n] for n in opt_names})
        except ValidationError as exc:
            raise BbiError(format_error(exc, "", flags=True)) from None
        run_method(name, settings, options)

    command.__name__ = f"distill_{name}"
    command.__doc__ = method.help + (f"\n\n{method.doc}" if method.doc else "")
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [*opt_params, config_parameter(method.settings, f"{name}'s settings"), *set_params]
    )
    return command


def register_methods(group: typer.Typer = app) -> None:
    """One command per registered method (built-ins first, then plug-ins); called again
    after a plug-in is installed in this process, it brings the commands up to date."""
    from distill.methods import METHODS

    group.registered_commands = []
    for name in METHODS.names():
        try:
            cmd = make_command(name)
        except BbiError as exc:  # a broken plug-in must not take the CLI down
            typer.echo(f"warning: {exc}", err=True)
            continue
        group.command(name)(cmd)


register_methods()
