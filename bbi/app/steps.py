"""Cached steps of the application layer: a step records a key of its inputs in the run's
manifest (``pipeline.<step>``); a rerun whose inputs are unchanged skips it."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any

from bbi.runstore import RunDir


def key_of(*parts: Any) -> str:
    """A short digest of a step's inputs (JSON, keys sorted)."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


def file_key(path: Path) -> str:
    """A short digest of a file's bytes ("missing" when there is none)."""
    if not path.exists():
        return "missing"
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:20]


def step_done(run: RunDir, step: str, key: str) -> bool:
    """Whether ``step`` last ran on inputs with this key."""
    return (run.manifest().get("pipeline") or {}).get(step, {}).get("key") == key


def mark(run: RunDir, step: str, key: str, started: float, **extra: Any) -> None:
    """Record that ``step`` ran on inputs with this key (and its wall time)."""
    run.update_manifest(
        pipeline={step: {"key": key, "wall_s": round(time.perf_counter() - started, 3), **extra}}
    )


__all__ = ["file_key", "key_of", "mark", "step_done"]
