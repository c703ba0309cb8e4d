"""Adversaries that try to tell a student from its teacher, acquisition strategies that
spend an oracle-query budget, and the attack (budget sweep) orchestration.

Adversaries are registered in ``base.ADVERSARIES`` and strategies in
``acquisition.STRATEGIES`` (``bbi.registry``): built-ins as lazy ``module:attr`` entries,
plug-ins by entry point in the groups ``bbi.adversaries`` and ``bbi.strategies``.
"""

from __future__ import annotations

from discriminators.base import (
    ADVERSARIES,
    Adversary,
    accepts_context,
    adversary_class,
    check_params,
    get_adversary,
    known_adversaries,
)

__all__ = [
    "ADVERSARIES",
    "Adversary",
    "accepts_context",
    "adversary_class",
    "check_params",
    "get_adversary",
    "known_adversaries",
]
