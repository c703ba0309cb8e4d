"""Adversaries that try to tell a student from its teacher, acquisition strategies that
spend an oracle-query budget, and the attack (budget sweep) orchestration.

Importing the package registers every built-in adversary in ``base.REGISTRY``.
"""

from __future__ import annotations

import importlib

from discriminators.base import (
    REGISTRY,
    Adversary,
    adversary_class,
    get_adversary,
    known_adversaries,
    register,
)

_BUILTIN = ("surface", "tfidf", "embed", "pairwise", "encoder", "judge", "likelihood", "mmd")

for _mod in _BUILTIN:
    try:
        importlib.import_module(f"discriminators.{_mod}")
    except ModuleNotFoundError as _exc:  # a module not present in this tree is skipped
        if _exc.name != f"discriminators.{_mod}":
            raise

__all__ = [
    "REGISTRY",
    "Adversary",
    "adversary_class",
    "get_adversary",
    "known_adversaries",
    "register",
]
