"""The probe suite: 5,000 deterministic prompts in 10 behaviour categories.

Public API (docs/run-directory.md describes the record schema):
``CATEGORIES``, ``build_suite``, ``default_suite``, ``training_corpus``, ``suite_hash``,
``load_suite``, ``write_suite``; ``safety_behaviour`` / ``safety_groups`` build
behaviour sets for ``bbi distill bird``.
"""

from bbi.runstore import suite_hash
from probes.schema import FIELDS, SPLITS, load_suite, load_suite_with_notes, write_suite
from probes.suite import (
    CATEGORIES,
    DEFAULT_SUITE_HASH,
    build_suite,
    default_suite,
    safety_behaviour,
    safety_groups,
    training_corpus,
)

__all__ = [
    "CATEGORIES",
    "DEFAULT_SUITE_HASH",
    "FIELDS",
    "SPLITS",
    "build_suite",
    "default_suite",
    "load_suite",
    "load_suite_with_notes",
    "safety_behaviour",
    "safety_groups",
    "suite_hash",
    "training_corpus",
    "write_suite",
]
