"""Command-line options generated from settings models (as TRL's parser builds argparse
from its config dataclasses).

A settings model (``bbi.config``) states each field's type, default, bounds and
description once; :func:`with_settings` turns a command function ``f(settings, ...)``
into a typer command with one option per field (help = the field's description and THAT
model's default, so ``bbi distill wda --help`` shows WDA's own learning rate), plus
``--config FILE`` (a YAML of that settings section; flags override it). Option values
default to None ("not given") and are applied onto the section with
``Section.updated``, so a bad value is one ``--flag: message`` line (exit 2).

Lists are given comma-separated (``--seeds 0,1,2``) and parsed by :func:`split_list`,
the one list parser of the CLI; booleans are ``--name/--no-name``.
"""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo

from bbi.app.cli.params import path_value, text_value
from bbi.config import Section
from bbi.errors import BbiError

CONFIG_PARAM = "config"
SETTINGS_PANEL = "Settings (also keys of --config)"


def flag_name(model: type[BaseModel], field: str) -> str:
    """The command-line flag of ``field``: ``--`` + the name with dashes, unless the
    model's ``FLAG_NAMES`` names it otherwise."""
    names = getattr(model, "FLAG_NAMES", {}) or {}
    return names.get(field, "--" + field.replace("_", "-"))


def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(the annotation without ``| None``, whether None was allowed)."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def _is_list(annotation: Any) -> bool:
    return typing.get_origin(_unwrap(annotation)[0]) in (list, tuple)


def _element(annotation: Any) -> Any:
    args = typing.get_args(_unwrap(annotation)[0])
    return args[0] if args else str


def _scalar(annotation: Any) -> Any:
    """The Python type typer parses a scalar field's value as."""
    ann = _unwrap(annotation)[0]
    if ann in (bool, int, float, str, Path):
        return ann
    if typing.get_origin(ann) is Literal:
        values = typing.get_args(ann)
        return type(values[0]) if values else str
    return str


def split_list(text: str | None, flag: str, element: Any = str) -> list[Any] | None:
    """The one list parser: ``a,b,c`` -> a list of ``element`` (None: the flag was not
    given). Blank items are an error, not skipped: ``--seeds 1,,2`` is a typo."""
    if text is None:
        return None
    items = [x.strip() for x in str(text).split(",")]
    if not any(items):
        raise BbiError(f"{flag}: give at least one value, got {text!r}")
    if not all(items):
        raise BbiError(f"{flag}: empty item in {text!r}")
    kind = _scalar(element)
    if kind in (int, float):
        try:
            return [kind(x) for x in items]
        except ValueError:
            noun = "integers" if kind is int else "numbers"
            raise BbiError(f"{flag}: expected comma-separated {noun}, got {text!r}") from None
    return items


def _description(model: type[BaseModel], field: str) -> str:
    """The field's description, from the nearest class that states one (a method that
    re-declares a field for its own default need not restate what the field means)."""
    for cls in model.__mro__:
        info = getattr(cls, "model_fields", {}).get(field) if isinstance(cls, type) else None
        if info is not None and info.description:
            return info.description
    return field.replace("_", " ").capitalize() + "."


def _shown(value: Any) -> str:
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def field_help(model: type[BaseModel], field: str, info: FieldInfo) -> str:
    """Help text: the description and the default of THIS model."""
    text = _description(model, field).rstrip()
    if _is_list(info.annotation):
        text += " Comma-separated."
    default = info.get_default(call_default_factory=True)
    if default is None or default == [] or default == {}:
        return text
    if isinstance(default, bool):
        return text
    return f"{text} (default {_shown(default)})"


def settings_parameters(
    model: type[BaseModel],
    *,
    skip: Iterable[str] = (),
    panel: str | None = SETTINGS_PANEL,
) -> list[inspect.Parameter]:
    """One keyword parameter (a typer option defaulting to None) per field of ``model``."""
    out = []
    for field, info in model.model_fields.items():
        if field in skip:
            continue
        flag = flag_name(model, field)
        help_text = field_help(model, field, info)
        if _is_list(info.annotation):
            kind: Any = str
        else:
            kind = _scalar(info.annotation)
        decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
        extra: dict[str, Any] = {}
        if kind is str:
            extra["parser"] = text_value
        elif kind is Path:
            extra["parser"] = path_value
        if kind is bool:
            default = info.get_default(call_default_factory=True)
            help_text += f" (default {'on' if default else 'off'})"
        option = typer.Option(None, *decls, help=help_text, rich_help_panel=panel, **extra)
        out.append(
            inspect.Parameter(
                field, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=kind | None
            )
        )
    return out


def config_parameter(model: type[BaseModel], what: str = "") -> inspect.Parameter:
    """``--config/-c FILE``: a YAML mapping of ``model``'s fields; flags override it."""
    where = what or model.__name__
    return inspect.Parameter(
        CONFIG_PARAM,
        inspect.Parameter.KEYWORD_ONLY,
        default=typer.Option(
            None,
            "--config",
            "-c",
            help=f"YAML with the settings ({where}, bbi/config.py); flags override it.",
            parser=path_value,
        ),
        annotation=Path | None,
    )


def flag_values(model: type[BaseModel], values: dict[str, Any]) -> dict[str, Any]:
    """Command-line values (None: not given) as the field values ``Section.updated``
    takes: comma-separated lists parsed."""
    out = {}
    for field, value in values.items():
        info = model.model_fields[field]
        if value is not None and _is_list(info.annotation):
            value = split_list(value, flag_name(model, field), _element(info.annotation))
        out[field] = value
    return out


def load_settings(
    model: type[Section], config: Path | None, values: dict[str, Any], base: Section | None = None
) -> Section:
    """``base`` (else the model's defaults), overlaid by the YAML ``config`` (if any),
    overlaid by the flags given."""
    from bbi.runstore import read_yaml_mapping

    settings = base if base is not None else model()
    if config is not None:
        raw = read_yaml_mapping(config)
        settings = model.parse({**settings.model_dump(), **raw}, str(config))
    return settings.updated(**flag_values(model, values))


def with_settings(
    model: type[Section],
    *,
    skip: Iterable[str] = (),
    param: str = "settings",
    base: Callable[[], Section] | None = None,
    config: bool = True,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorate a command ``f(..., settings)``: its signature gains one option per field of
    ``model`` (except ``skip``) and ``--config``; the wrapper builds the settings (defaults
    or ``base()``, then the file, then the flags) and calls ``f(..., settings=...)``."""
    skip = set(skip)

    def deco(f: Callable[..., Any]) -> Callable[..., Any]:
        sig = inspect.signature(f)
        own = [p for name, p in sig.parameters.items() if name != param]
        fields = settings_parameters(model, skip=skip)
        clash = {p.name for p in own} & ({p.name for p in fields} | {CONFIG_PARAM})
        if clash:
            raise ValueError(f"{f.__name__}: parameters {sorted(clash)} clash with settings fields")
        extra = [config_parameter(model)] if config else []
        names = [p.name for p in fields]

        @functools.wraps(f)
        def wrapper(**kwargs: Any) -> Any:
            values = {n: kwargs.pop(n) for n in names}
            cfg_path = kwargs.pop(CONFIG_PARAM, None)
            settings = load_settings(model, cfg_path, values, base() if base else None)
            return f(**kwargs, **{param: settings})

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
        wrapper.__signature__ = sig.replace(parameters=[*params, *extra, *fields])  # type: ignore[attr-defined]
        return wrapper

    return deco


def model_parameters(model: type[BaseModel], panel: str | None = None) -> list[inspect.Parameter]:
    """Parameters for a plain options model (``distill.methods``' run options): an
    ``argument`` field is positional, the rest options with their model defaults."""
    out = []
    for field, info in model.model_fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        kind = _scalar(info.annotation)
        help_text = _description(model, field)
        parser = {str: text_value, Path: path_value}.get(kind)
        kw: dict[str, Any] = {"help": help_text}
        if parser is not None:
            kw["parser"] = parser
        if info.is_required():
            default: Any = ...
        else:
            default = info.get_default(call_default_factory=True)
        if extra.get("argument"):
            spec = typer.Argument(default, **kw)
        else:
            flag = "--" + str(extra.get("flag", field)).replace("_", "-")
            decls = [f"{flag}/--no-{flag[2:]}"] if kind is bool else [flag]
            spec = typer.Option(default, *decls, rich_help_panel=panel, **kw)
        optional = not info.is_required() and default is None
        out.append(
            inspect.Parameter(
                field,
                inspect.Parameter.KEYWORD_ONLY,
                default=spec,
                annotation=kind | None if optional else kind,
            )
        )
    return out


__all__ = [
    "config_parameter",
    "field_help",
    "flag_name",
    "flag_values",
    "load_settings",
    "model_parameters",
    "settings_parameters",
    "split_list",
    "with_settings",
]
