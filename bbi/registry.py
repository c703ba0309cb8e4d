"""One registry mechanism for every extension point.

An extension point (adversaries, acquisition strategies, backends, distillation methods,
report sections, and the core's own hooks) is one :class:`Registry`. Each registry is
owned by the layer that uses it (``discriminators`` owns adversaries and strategies,
``distill`` owns methods, ``reports`` owns sections, the core owns backends and hooks), so
no layer imports a layer above it to find its plug-ins.

Entries are added three ways, all equivalent:

- a lazy ``"module:attr"`` string, imported on first use (built-ins are declared this way
  beside the registry, so ``bbi --help`` does not import torch for an adversary it lists);
- an object, directly or with :meth:`Registry.register` as a decorator;
- a Python entry point in the registry's group (``[project.entry-points."bbi.adversaries"]
  myadv = "mypkg.adv:MyAdversary"``), the way lm-evaluation-harness and pytest find
  plug-ins: a package outside this repository adds an item by being installed.

Every registry can carry a ``check`` that an item must pass when it loads (the
protocol's shape); the conformance tests run the same check, and more, on every
registered item, built-in or not.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any, Generic, TypeVar

from bbi.errors import BbiError

T = TypeVar("T")

_ALL: dict[str, Registry[Any]] = {}


def load_target(target: str) -> Any:
    """Import ``"package.module:attr.sub"`` and return the attribute."""
    module, sep, attr = target.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"a lazy registry entry is 'module:attr', got {target!r}")
    obj: Any = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


class Registry(Generic[T]):
    """Name -> item, loaded lazily; entry points of ``group`` are discovered on demand.

    ``kind`` is the word used in messages ("adversary", "backend"); ``check(name, item)``
    raises ``TypeError``/``ValueError`` for an item that does not fit the protocol.
    """

    def __init__(
        self,
        kind: str,
        group: str,
        *,
        builtins: dict[str, str | T] | None = None,
        check: Callable[[str, T], None] | None = None,
    ) -> None:
        self.kind = kind
        self.group = group
        self._check = check
        self._entries: dict[str, str | T] = {}
        self._loaded: dict[str, T] = {}
        self._origin: dict[str, str] = {}
        self._discovered = False
        self._lock = threading.RLock()
        for name, target in (builtins or {}).items():
            self.register(name, target, origin="builtin")
        if group in _ALL:
            raise ValueError(f"registry group {group!r} is declared twice")
        _ALL[group] = self

    # ---- adding -----------------------------------------------------------------------

    def register(
        self,
        name: str,
        target: str | T | None = None,
        *,
        replace: bool = False,
        origin: str = "runtime",
    ) -> Any:
        """Add ``name``; with no ``target``, a decorator that registers what it decorates.

        A name registered twice is an error unless ``replace`` is given (a plug-in cannot
        shadow a built-in by accident).
        """
        if target is None:

            def deco(obj: T) -> T:
                self.register(name, obj, replace=replace, origin=origin)
                return obj

            return deco
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"a {self.kind} name must be a non-empty string")
        with self._lock:
            if name in self._entries and not replace:
                old = self._entries[name]
                if old is target:
                    return target
                raise ValueError(
                    f"{self.kind} {name!r} is already registered ({self._origin[name]}); "
                    "pass replace=True to replace it"
                )
            self._entries[name] = target
            self._origin[name] = origin
            self._loaded.pop(name, None)
        return target

    def unregister(self, name: str) -> None:
        """Remove ``name`` (tests use it to undo a registration)."""
        with self._lock:
            self._entries.pop(name, None)
            self._loaded.pop(name, None)
            self._origin.pop(name, None)

    def _discover(self) -> None:
        """Add this group's installed entry points (once; built-ins keep their names)."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            for ep in _entry_points(self.group):
                if ep.name not in self._entries:
                    self._entries[ep.name] = ep.value
                    dist = getattr(getattr(ep, "dist", None), "name", None)
                    self._origin[ep.name] = f"entry point of {dist or 'an installed package'}"

    def refresh(self) -> None:
        """Look for entry points again (after installing a plug-in in this process)."""
        with self._lock:
            self._discovered = False
        self._discover()

    # ---- reading ----------------------------------------------------------------------

    def names(self) -> list[str]:
        """Every registered name, built-ins first in their declared order."""
        self._discover()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._discover()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def origin(self, name: str) -> str:
        """Where ``name`` came from: builtin, runtime, or the entry point's package."""
        self._discover()
        return self._origin[name]

    def target(self, name: str) -> str | None:
        """The lazy ``module:attr`` of ``name`` (None when it was registered as an object)."""
        self._discover()
        t = self._entries.get(name)
        return t if isinstance(t, str) else None

    def get(self, name: str) -> T:
        """The item ``name``, imported on first use; an unknown name is a BbiError that
        lists the known ones."""
        self._discover()
        with self._lock:
            if name in self._loaded:
                return self._loaded[name]
            if name not in self._entries:
                known = ", ".join(self._entries) or "none"
                raise BbiError(f"unknown {self.kind} {name!r}; known: {known}")
            target = self._entries[name]
        if isinstance(target, str):
            try:
                item = load_target(target)
            except (ImportError, AttributeError) as exc:
                missing = getattr(exc, "name", None)
                hint = f" (missing module {missing})" if missing else ""
                raise BbiError(
                    f"{self.kind} {name!r} cannot be loaded from {target}{hint}: "
                    f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                ) from None
        else:
            item = target
        if self._check is not None:
            try:
                self._check(name, item)
            except (TypeError, ValueError) as exc:
                raise BbiError(f"{self.kind} {name!r} ({self._origin[name]}): {exc}") from None
        with self._lock:
            self._loaded[name] = item
        return item

    def items(self) -> list[tuple[str, T]]:
        """(name, item) for every entry, loading each."""
        return [(n, self.get(n)) for n in self.names()]

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, group={self.group!r}, names={self.names()!r})"


def _entry_points(group: str) -> list[metadata.EntryPoint]:
    try:
        return list(metadata.entry_points(group=group))
    except Exception:  # pragma: no cover - a broken installed distribution
        return []


def registries() -> dict[str, Registry[Any]]:
    """Every registry created so far, by entry-point group (docs and conformance tests)."""
    return dict(_ALL)


def hook(group: str, kind: str) -> Registry[Any]:
    """The registry of a core hook (created on first use): the core declares the hook,
    an upper layer fills it by entry point, so the core never imports that layer."""
    if group in _ALL:
        return _ALL[group]
    return Registry(kind, group)
