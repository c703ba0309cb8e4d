"""Model files on disk and in the Hugging Face cache: where a model is, what it hashes to.

Shared by every backend's fingerprint, the zoo builds and the distillers, and free of
torch and transformers, so a fingerprint or a spec check never imports a deep-learning
framework. ``locked_build`` is the one atomic, locked build of a cached artifact (the zoo
pair, the SmolLM2 pair).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from bbi.errors import BbiError

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
_FINGERPRINT_FILES = re.compile(
    r"(\.safetensors|\.bin|\.pt|\.pth|\.gguf|config\.json|tokenizer\.json|tokenizer_config\.json"
    r"|special_tokens_map\.json|vocab\.json|vocab\.txt|merges\.txt|tokenizer\.model"
    r"|chat_template\.jinja|chat_template\.json|added_tokens\.json)$"
)


def digest(obj: Any) -> str:
    """A short, stable hash of a JSON-able object (fingerprints are made of these)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def local_files_only(allow_download: bool) -> bool:
    """True unless downloads are allowed and HF_HUB_OFFLINE is unset."""
    offline = os.environ.get("HF_HUB_OFFLINE", "").lower() in {"1", "true", "yes", "on"}
    return offline or not allow_download


def locate(name_or_path: str, what: str) -> Path | None:
    """A local directory, or None for something that can only be a hub id."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise BbiError(f"{what} {name_or_path!r} is a file; expected a model directory")
        return p
    if name_or_path.startswith((".", "/", "~")) or not _HUB_ID_RE.match(name_or_path):
        raise BbiError(f"{what} directory {name_or_path!r} does not exist")
    return None


@lru_cache(maxsize=256)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    """sha256 of a file, memoised per (path, size, mtime) within the process."""
    st = path.stat()
    return _file_sha256(str(path.resolve()), st.st_size, st.st_mtime_ns)


def dir_fingerprint(path: Path) -> dict[str, str]:
    """Hashes of the files that decide a model's outputs (weights, config, tokenizer)."""
    out = {}
    for f in sorted(path.rglob("*")):
        if f.is_file() and _FINGERPRINT_FILES.search(f.name) and "/." not in f.as_posix():
            out[f.relative_to(path).as_posix()] = file_sha256(f)
    return out


def cache_root() -> Path:
    """``$BBI_CACHE_DIR`` (default ``~/.cache/bbi``): the zoo, embedders, generations."""
    return Path(os.environ.get("BBI_CACHE_DIR") or Path.home() / ".cache" / "bbi").expanduser()


def check_build_record(path: Path, names: tuple[str, ...], rebuild: str) -> dict:
    """A build record (zoo.json, smollm2.json) whose ``models.<name>.fingerprint`` are strings;
    a damaged one is a one-line error that says how to rebuild."""
    from bbi.runstore import read_json_object

    try:
        info = read_json_object(path)
        models = info.get("models")
        if not isinstance(models, dict) or not all(
            isinstance(models.get(n), dict) and isinstance(models[n].get("fingerprint"), str)
            for n in names
        ):
            raise BbiError(f"{path}: expected models.<name>.fingerprint for {', '.join(names)}")
    except BbiError as exc:
        raise BbiError(f"damaged zoo build record ({exc}); rebuild with `{rebuild}`") from None
    return info


def locked_build(
    final: Path, is_done: Callable[[], bool], build_into: Callable[[Path], None]
) -> Path:
    """Build ``final`` once: under a file lock beside it, into a temp dir renamed into place.

    Concurrent processes wait on the lock and find the work done (``is_done``); a failed or
    interrupted build leaves no temp dir and the previous ``final`` (if any) untouched until
    the new one is complete.
    """
    from filelock import FileLock

    final.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(final.parent / f".{final.name}.lock")):
        if is_done():
            return final
        tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
        try:
            build_into(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return final


__all__ = [
    "cache_root",
    "check_build_record",
    "digest",
    "dir_fingerprint",
    "file_sha256",
    "local_files_only",
    "locate",
    "locked_build",
]
