"""Category builders: each module exposes ``generate(rng) -> Item`` for its category."""

from __future__ import annotations

from probes.builders._common import Item

__all__ = ["Item"]
