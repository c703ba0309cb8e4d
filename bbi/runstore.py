"""The run directory: the one module that knows its layout (docs/run-directory.md).

Commands communicate only through these files, so a run produced on another machine
(or imported responses) can be attacked and reported on here.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from filelock import FileLock

from bbi.errors import BbiError

ROLES = ("teacher", "null", "student")
# The fields of a probe-suite record, in canonical order (docs/run-directory.md).
SUITE_FIELDS = (
    "id",
    "category",
    "subcategory",
    "prompt",
    "split",
    "reference",
    "source",
    "perturbation",
    "base_id",
)
ALIAS_RE = re.compile(r"^[A-Za-z0-9_.-]+$")
SCHEMA_VERSION = 1


def canonical_record(rec: dict) -> dict:
    """Standard suite fields first (in SUITE_FIELDS order), then extra fields sorted by name."""
    out = {k: rec.get(k) for k in SUITE_FIELDS}
    for k in sorted(set(rec) - set(SUITE_FIELDS)):
        out[k] = rec[k]
    return out


def _encode_utf8(text: str, where: str) -> bytes:
    """UTF-8 bytes of ``text``; a lone surrogate is a BbiError ``<where> <line>: ...``."""
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError as exc:
        line = text.count("\n", 0, exc.start) + 1
        raise BbiError(
            f"{where} {line}: text is not valid Unicode (lone surrogate {_escape(text[exc.start])})"
        ) from None


def suite_bytes(records: list[dict]) -> bytes:
    """The canonical JSONL bytes of a suite: what suite.jsonl holds and what is hashed."""
    lines = [json.dumps(canonical_record(r), ensure_ascii=False) for r in records]
    return _encode_utf8("\n".join(lines) + "\n" if lines else "", "suite record")


def suite_hash(records: list[dict]) -> str:
    """ "sha256:<hex>" of the canonical JSONL bytes; the one suite hash bbi records."""
    return "sha256:" + hashlib.sha256(suite_bytes(records)).hexdigest()


# ---- reading text and JSON ---------------------------------------------------------------
# Every way a file can be bad (bytes, syntax, nesting, Unicode, types) must surface as a
# one-line BbiError naming the file and, where it is cheap to know, the line.

# Deeper than any file bbi writes; also keeps json.dumps / yaml.safe_dump of what was read
# far from the interpreter's recursion limit.
MAX_NESTING = 100
# Nodes a YAML document may expand to (aliases can make a few lines expand exponentially).
MAX_YAML_NODES = 1_000_000
_BOM = b"\xef\xbb\xbf"
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]')


def _at(source: str | os.PathLike, line: int | None) -> str:
    return f"{source}:{line}" if line else f"{source}"


def _escape(ch: str) -> str:
    return ch.encode("unicode_escape").decode("ascii")


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise BbiError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise BbiError(f"{path}: is a directory, expected a file") from None
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise BbiError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc})") from None


def decode_text(data: bytes, source: str | os.PathLike) -> str:
    """UTF-8 text (one leading BOM allowed, as editors on Windows write it), else BbiError."""
    base = 0
    if data.startswith(_BOM):
        data, base = data[len(_BOM) :], len(_BOM)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = base + exc.start
        line = data.count(b"\n", 0, exc.start) + 1
        hint = ""
        if offset == 0 and data[:2] in (b"\xff\xfe", b"\xfe\xff"):
            hint = "; it looks like UTF-16, save it as UTF-8"
        raise BbiError(
            f"{source}:{line}: not UTF-8 text ({exc.reason} at byte {offset}{hint})"
        ) from None


def printable(text: str | os.PathLike) -> str:
    """A path (or name) as valid Unicode, to record in a run file: bytes of a file name
    that are not UTF-8 (which Python carries as lone surrogates) become ``\\xNN``."""
    text = os.fspath(text)
    if _is_valid_unicode(text):
        return text
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def read_text(path: str | os.PathLike) -> str:
    """A user or run file as text; unreadable or non-UTF-8 files are a BbiError."""
    path = Path(path)
    return decode_text(_read_bytes(path), path)


class _JsonSyntaxError(BbiError):
    """Text that is not JSON at all (as opposed to JSON bbi refuses)."""


class _DuplicateKey(Exception):
    def __init__(self, key: str):
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return obj


_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)  # built once: it is per-call cost


def _too_deep_line(text: str) -> int | None:
    """Line where the nesting first exceeds MAX_NESTING (strings skipped), for messages."""
    depth = 0
    for m in _JSON_TOKEN.finditer(text):
        tok = m.group()
        if tok in ("[", "{"):
            depth += 1
            if depth > MAX_NESTING:
                return text.count("\n", 0, m.start()) + 1
        elif tok in ("]", "}"):
            depth -= 1
    return None


def _lone_surrogate_line(text: str) -> int | None:
    """Line of the first \\uD800-\\uDFFF escape that is not half of a valid pair."""
    found = list(_SURROGATE_ESCAPE.finditer(text))
    i = 0
    while i < len(found):
        m = found[i]
        nxt = found[i + 1] if i + 1 < len(found) else None
        if (
            int(m.group()[2:], 16) < 0xDC00
            and nxt is not None
            and nxt.start() == m.end()
            and int(nxt.group()[2:], 16) >= 0xDC00
        ):
            i += 2  # a high half followed at once by a low half: a valid pair
            continue
        return text.count("\n", 0, m.start()) + 1
    return None


def _is_valid_unicode(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _check_tree(obj: Any, strings: bool, max_nodes: int | None = None) -> str | None:
    """What is wrong with a parsed value (too deep, too big, lone surrogates), or None."""
    stack: list[tuple[Any, int]] = [(obj, 0)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if max_nodes is not None and nodes > max_nodes:
            return f"more than {max_nodes:,} values (YAML aliases expanding, or self-referencing)"
        if isinstance(value, str):
            if strings and not _is_valid_unicode(value):
                bad = next(c for c in value if not _is_valid_unicode(c))
                return (
                    f"a string holds a lone surrogate ({_escape(bad)}), which is not valid Unicode"
                )
        elif isinstance(value, dict):
            if depth >= MAX_NESTING:
                return _too_deep(max_nodes is not None)
            stack.extend((k, depth + 1) for k in value)
            stack.extend((v, depth + 1) for v in value.values())
        elif isinstance(value, (list, tuple, set)):
            if depth >= MAX_NESTING:
                return _too_deep(max_nodes is not None)
            stack.extend((v, depth + 1) for v in value)
    return None


def _too_deep(yaml_aliases: bool) -> str:
    extra = " (or an alias that contains itself)" if yaml_aliases else ""
    return f"nested deeper than {MAX_NESTING} levels{extra}"


def parse_json(text: str, source: str | os.PathLike, line: int | None = None) -> Any:
    """json.loads for file contents: any problem is a BbiError naming source (and line).

    ``line`` is the line the text came from (JSONL); without it the line is worked out
    from the error where that is cheap. Besides syntax, refuses duplicate keys, nesting
    deeper than MAX_NESTING and strings with lone surrogates (``"\\ud800"``), which could
    never be written back as UTF-8.
    """
    try:
        obj = _DECODER.decode(text)
    except json.JSONDecodeError as exc:
        raise _JsonSyntaxError(
            f"{_at(source, line or exc.lineno)}: invalid JSON ({exc.msg})"
        ) from None
    except _DuplicateKey as exc:
        raise BbiError(f"{_at(source, line)}: invalid JSON (duplicate key {exc.key!r})") from None
    except RecursionError:
        raise BbiError(
            f"{_at(source, line or _too_deep_line(text))}: invalid JSON "
            f"(nested deeper than {MAX_NESTING} levels)"
        ) from None
    except ValueError as exc:  # e.g. an integer with more digits than Python converts
        what = "a number is too long" if "digits" in str(exc) else str(exc).splitlines()[0]
        raise BbiError(f"{_at(source, line)}: invalid JSON ({what})") from None
    has_escapes = _SURROGATE_ESCAPE.search(text) is not None
    if has_escapes or text.count("[") + text.count("{") > MAX_NESTING:
        problem = _check_tree(obj, strings=has_escapes)
        if problem is not None:
            if line is None:
                line = (
                    _lone_surrogate_line(text) if "surrogate" in problem else _too_deep_line(text)
                )
            raise BbiError(f"{_at(source, line)}: invalid JSON ({problem})")
    return obj


# The container shape of the sections bbi's commands walk: "map" = an object, "maps" = an
# object whose values are objects. A damaged or hand-edited file fails here, with its name,
# instead of deep inside a command.
MANIFEST_SHAPE = {"models": "maps", "timings": "map", "pipeline": "maps", "versions": "map"}
# run.yaml's ``models`` is checked in detail by RunDir._configured_models.
CONFIG_SHAPE = {"generation": "map", "suite": "map", "seeds": "map", "pipeline": "map"}
RESULTS_SHAPE = {
    "suite": "map",
    "models": "maps",
    "similarity": "maps",
    "distill": "maps",
    "attack": {"comparisons": "maps", "config": "map"},
}


def check_shape(obj: dict, shape: dict, where: str | os.PathLike, prefix: str = "") -> dict:
    """Check the container types of known keys (unknown keys pass); BbiError names the key."""
    for key, want in shape.items():
        if key not in obj or obj[key] is None:
            continue
        value = obj[key]
        name = f"{prefix}{key}"
        if not isinstance(value, dict):
            raise BbiError(f"{where}: {name!r} must be an object, got {_json_type(value)}")
        if want == "maps":
            for k, v in value.items():
                if not isinstance(v, dict):
                    raise BbiError(f"{where}: {name}.{k} must be an object, got {_json_type(v)}")
        elif isinstance(want, dict):
            check_shape(value, want, where, prefix=f"{name}.")
    return obj


def read_json_object(path: str | os.PathLike) -> dict:
    """A JSON file whose top level must be an object (manifest.json, results.json)."""
    path = Path(path)
    text = read_text(path)
    if not text.strip():
        raise BbiError(f"{path}: empty file, expected a JSON object")
    obj = parse_json(text, path)
    if not isinstance(obj, dict):
        raise BbiError(f"{path}: expected a JSON object, got {_json_type(obj)}")
    return obj


def _json_type(obj: Any) -> str:
    names = {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}
    for typ, name in names.items():
        if isinstance(obj, typ):
            return name
    return "a number" if isinstance(obj, (int, float)) else type(obj).__name__


def read_yaml_mapping(path: str | os.PathLike) -> dict:
    """A YAML file whose top level is a mapping; every problem is a one-line BbiError."""
    path = Path(path)
    if path.is_dir():
        raise BbiError(f"{path}: is a directory, expected a YAML file")
    if not path.is_file():
        raise BbiError(f"config not found: {path}")
    text = read_text(path)
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        what = exc.problem or exc.context or "syntax error"
        raise BbiError(
            f"{_at(path, mark.line + 1 if mark else None)}: invalid YAML ({what})"
        ) from None
    except yaml.YAMLError as exc:
        raise BbiError(f"{path}: invalid YAML ({(str(exc).splitlines() or [''])[0]})") from None
    except RecursionError:
        raise BbiError(f"{path}: invalid YAML (nested too deeply)") from None
    # e.g. a date like 2024-13-01; PyYAML's int/float constructors index an empty string
    # for "!!float _" (IndexError).
    except (ValueError, TypeError, OverflowError, IndexError) as exc:
        raise BbiError(
            f"{path}: invalid YAML value ({(str(exc).splitlines() or [''])[0]})"
        ) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise BbiError(f"{path}: expected a mapping at the top level")
    problem = _check_tree(data, strings=True, max_nodes=MAX_YAML_NODES)
    if problem is not None:
        raise BbiError(f"{path}: invalid YAML ({problem})")
    return data


def check_alias(alias: str) -> str:
    """Aliases become file names; refuse anything that is not file-name safe, and names
    of the backups bbi keeps beside a model's responses (``ALIAS.stale-TIME``)."""
    if not isinstance(alias, str) or not ALIAS_RE.match(alias) or alias in {".", ".."}:
        raise BbiError(f"invalid model alias {alias!r}: use letters, digits, '_', '-', '.'")
    if BACKUP_RE.search(alias):
        raise BbiError(
            f"invalid model alias {alias!r}: names ending in .stale-N or .replaced-N are "
            "the backups bbi keeps of old responses"
        )
    return alias


MAX_MODEL_NAME = 200
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def check_model_name(name: str) -> str:
    """A model name as users write it (``openai/gpt-4o``, ``Llama 3 8B``): any printable
    text, kept verbatim in run.yaml; its file name is ``alias_file_stem(name)``."""
    if not isinstance(name, str) or not name.strip():
        raise BbiError(f"invalid model alias {name!r}: empty")
    if len(name) > MAX_MODEL_NAME:
        raise BbiError(f"invalid model alias {name[:40]!r}...: longer than {MAX_MODEL_NAME}")
    if not name.isprintable() or not _is_valid_unicode(name):
        raise BbiError(f"invalid model alias {name!r}: control characters or invalid Unicode")
    if any(part in {".", ".."} for part in re.split(r"[/\\]", name)):
        raise BbiError(f"invalid model alias {name!r}: a path ('.' or '..' between slashes)")
    alias_file_stem(name)
    return name


def alias_file_stem(alias: str) -> str:
    """The file-name form of a model alias (responses/<stem>.jsonl, embeddings, attack/):
    the alias itself when it is file-name safe, else every run of other characters
    replaced by '_' (``openai/gpt-4o`` -> ``openai_gpt-4o``). Two aliases of one run may
    not share a stem (RunDir refuses it)."""
    if isinstance(alias, str) and ALIAS_RE.match(alias) and alias not in {".", ".."}:
        return check_alias(alias)
    if not isinstance(alias, str):
        raise BbiError(f"invalid model alias {alias!r}")
    stem = _UNSAFE_IN_FILE_NAME.sub("_", alias).lstrip(".") or "_"
    return check_alias(stem)


# responses/ALIAS.stale-TIME.jsonl (settings changed) and ALIAS.replaced-TIME.jsonl
# (`bbi probe import --replace`) keep old responses; they are not models of the run.
BACKUP_RE = re.compile(r"\.(stale|replaced)-\d+(-\d+)?$")


def backup_path(path: Path, kind: str) -> Path:
    """A new, unused ``ALIAS.<kind>-<time>[-N].jsonl`` beside ``path`` (never an old
    backup: two in the same second must not overwrite each other)."""
    path = Path(path)
    stamp = int(time.time())
    target = path.with_name(f"{path.stem}.{kind}-{stamp}{path.suffix}")
    i = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.{kind}-{stamp}-{i}{path.suffix}")
        i += 1
    return target


# ---- writing -----------------------------------------------------------------------------


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + rename so a crash never leaves a half-written file.

    The file gets the mode ``open()`` would give a new file (0o666 less the umask), so a
    report or results file is as readable as anything else the user writes. Text that is
    not valid Unicode (lone surrogates) is a BbiError and nothing is written; the temp
    file never outlives a failure.
    """
    path = Path(path)
    data = _encode_utf8(text, f"{path}: cannot write line")
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, flags, 0o666)
            break
        except FileExistsError:
            continue
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    """Pretty JSON, atomically (see atomic_write_text)."""
    atomic_write_text(
        Path(path), json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n"
    )


def _json_default(obj: Any) -> Any:
    # numpy scalars / arrays and Paths show up in results; serialise them plainly.
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# ---- JSONL -------------------------------------------------------------------------------


def iter_jsonl(
    path: str | os.PathLike, *, allow_torn_tail: bool = False
) -> Iterator[tuple[int, dict]]:
    """Yield (line number, record) of a JSONL file; every bad line is a BbiError (file:line).

    Lines end at "\\n" only (a "\\r" before it is fine; U+2028 and friends inside a
    record are text, not line breaks). ``allow_torn_tail=True`` is for bbi's own
    append-only files: an unterminated, unparsable last line is what a crash mid-append
    leaves, and is skipped. User files keep the default, so a truncated file is an error
    rather than a silently shorter one.
    """
    path = Path(path)
    data = _read_bytes(path)
    pos = 0
    if data.startswith(_BOM):
        pos = len(_BOM)
    lines = data[pos:].split(b"\n")
    for i, raw in enumerate(lines, 1):
        start, pos = pos, pos + len(raw) + 1
        if not raw.strip():
            continue
        torn = i == len(lines)  # the last piece had no "\n" after it
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            if torn and allow_torn_tail:
                return  # torn tail of an interrupted append (cut inside a character)
            raise BbiError(
                f"{path}:{i}: not UTF-8 text ({exc.reason} at byte {start + exc.start})"
            ) from None
        try:
            rec = parse_json(text, path, i)
        except BbiError as exc:
            if torn and allow_torn_tail:
                return  # torn tail of an interrupted append
            if torn and isinstance(exc, _JsonSyntaxError):
                raise BbiError(f"{exc}; the last line is unterminated (truncated file?)") from None
            raise
        if not isinstance(rec, dict):
            raise BbiError(f"{path}:{i}: expected a JSON object, got {_json_type(rec)}")
        yield i, rec


def read_jsonl(path: Path, *, allow_torn_tail: bool = False) -> Iterator[dict]:
    """Yield the records of a JSONL file (see iter_jsonl; strict unless allow_torn_tail)."""
    for _, rec in iter_jsonl(path, allow_torn_tail=allow_torn_tail):
        yield rec


def append_jsonl(path: Path, records: Iterable[dict]) -> int:
    """Append records and flush+fsync, so what was written survives a kill."""
    path = Path(path)
    lines = [json.dumps(rec, ensure_ascii=False, default=_json_default) + "\n" for rec in records]
    data = _encode_utf8("".join(lines), f"{path}: cannot append record")
    path.parent.mkdir(parents=True, exist_ok=True)
    # Repair a torn tail first so the next record starts on its own line.
    if path.exists() and path.stat().st_size > 0:
        with path.open("rb") as fh:
            fh.seek(-1, os.SEEK_END)
            last = fh.read(1)
        if last != b"\n":
            _repair_tail(path)
    with path.open("ab") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    return len(lines)


def _repair_tail(path: Path) -> None:
    """End the file with "\\n": keep a complete last record, cut an unparsable one."""
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    try:
        complete = isinstance(json.loads(data[cut:].decode("utf-8")), dict)
    except (ValueError, RecursionError):
        complete = False
    with path.open("r+b") as fh:
        if complete:
            fh.seek(0, os.SEEK_END)
            fh.write(b"\n")
        else:
            fh.truncate(cut)


class RunDir:
    """Accessors for one run directory (see docs/run-directory.md)."""

    def __init__(
        self, path: str | os.PathLike, create: bool = False, must_exist: bool = True
    ) -> None:
        # must_exist=False: a run about to be created, once there is something to write.
        self.path = Path(path)
        if create:
            self.path.mkdir(parents=True, exist_ok=True)
        elif must_exist and not self.path.is_dir():
            if self.path.exists():
                raise BbiError(f"{self.path}: is a file, expected a run directory")
            raise BbiError(f"run directory not found: {self.path}")
        self._suite: pd.DataFrame | None = None
        if self.path.is_dir():
            self.check_layout()

    # Where bbi keeps what: a file where a directory belongs (or the reverse) would
    # otherwise fail deep inside a command, possibly after it has written something.
    FILES = ("run.yaml", "manifest.json", "suite.jsonl", "results.json", "similarity.jsonl")
    DIRS = ("responses", "attack", "adapters", "models", "embeddings")

    def check_layout(self) -> None:
        """Each of the run's files and directories, where present, has the right kind."""
        for name in self.FILES:
            p = self.path / name
            if p.is_dir():
                raise BbiError(f"{p}: is a directory, expected the run's {name} file")
        for name in self.DIRS:
            p = self.path / name
            if p.exists() and not p.is_dir():
                raise BbiError(f"{p}: is a file, expected the run's {name}/ directory")

    def check_files(self) -> None:
        """Read every file a command updates at its end (run.yaml, manifest.json,
        results.json, similarity.jsonl): a damaged one fails before any work or write."""
        self.config()
        self.manifest()
        self.read_results()
        if self.similarity_path.exists():
            for _ in read_jsonl(self.similarity_path, allow_torn_tail=True):
                pass

    def owns(self, path: str | os.PathLike) -> bool:
        """Whether ``path`` is one of the run's own data files (never an output target)."""
        try:
            target, root = Path(path).resolve(), self.path.resolve()
        except (OSError, RuntimeError):
            return False
        if not target.is_relative_to(root) or target == root:
            return False
        first = target.relative_to(root).parts
        return (len(first) == 1 and first[0] in self.FILES) or first[0] in self.DIRS

    # ---- paths -------------------------------------------------------------------
    @property
    def name(self) -> str:
        return printable(self.path.resolve().name)

    @property
    def config_path(self) -> Path:
        return self.path / "run.yaml"

    @property
    def manifest_path(self) -> Path:
        return self.path / "manifest.json"

    @property
    def suite_path(self) -> Path:
        return self.path / "suite.jsonl"

    @property
    def results_path(self) -> Path:
        return self.path / "results.json"

    @property
    def similarity_path(self) -> Path:
        return self.path / "similarity.jsonl"

    @property
    def attack_dir(self) -> Path:
        return self.path / "attack"

    def responses_path(self, alias: str) -> Path:
        return self.path / "responses" / f"{alias_file_stem(alias)}.jsonl"

    @staticmethod
    def attack_point_name(adversary: str, strategy: Any, budget: Any, seed: Any) -> str:
        """File name of one sweep point: ``<adversary>__<strategy>__q<budget>__s<seed>.json``
        (the one place the pattern is spelt; a staging directory uses the same names)."""
        return f"{adversary}__{strategy}__q{budget}__s{seed}.json"

    def attack_point_path(
        self, comparison: str, adversary: str, strategy: Any, budget: Any, seed: Any
    ) -> Path:
        """``attack/<comparison>/<adversary>__<strategy>__q<budget>__s<seed>.json``."""
        return (
            self.attack_dir / comparison / self.attack_point_name(adversary, strategy, budget, seed)
        )

    def attack_points(self, comparison: str) -> list[Path]:
        """The point files of one comparison, sorted by name."""
        return sorted((self.attack_dir / comparison).glob("*__*__q*__s*.json"))

    # ---- locking -----------------------------------------------------------------
    @contextmanager
    def locked(self, path: Path) -> Iterator[None]:
        """Hold the run's lock on ``path`` (a hidden ``.<name>.lock`` beside it) for a
        read-modify-write: two commands updating one shared file (results.json,
        manifest.json) each see the other's change instead of overwriting it. The write
        itself stays atomic (temp file + rename), so readers never need the lock."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(path.parent / f".{path.name}.lock")):
            yield

    # ---- config / manifest -------------------------------------------------------
    def config(self) -> dict:
        """run.yaml as a mapping ({} before the first command wrote one); the sections
        commands read (``generation``, ``suite``...) must be mappings."""
        if not self.config_path.exists():
            return {}
        return check_shape(read_yaml_mapping(self.config_path), CONFIG_SHAPE, self.config_path)

    def write_config(self, cfg: dict) -> None:
        atomic_write_text(
            self.config_path, yaml.safe_dump(cfg, sort_keys=False, allow_unicode=True)
        )

    def manifest(self) -> dict:
        """manifest.json ({} if absent); a damaged one is a BbiError, never overwritten."""
        if not self.manifest_path.exists():
            return {}
        return check_shape(read_json_object(self.manifest_path), MANIFEST_SHAPE, self.manifest_path)

    def update_manifest(self, **fields: Any) -> dict:
        """Merge ``fields`` into manifest.json (dicts one level deep), under its lock."""
        with self.locked(self.manifest_path):
            man = self.manifest()
            for key, value in fields.items():
                if isinstance(value, dict) and isinstance(man.get(key), dict):
                    man[key] = {**man[key], **value}
                else:
                    man[key] = value
            write_json(self.manifest_path, man)
        return man

    # ---- models ------------------------------------------------------------------
    def models(self) -> dict[str, dict]:
        """alias -> {"spec": str, "role": str}, from run.yaml, else inferred from responses/."""
        models = self._configured_models()
        stems = {alias_file_stem(a) for a in models}
        for p in sorted((self.path / "responses").glob("*.jsonl")):
            alias = p.stem
            if alias.startswith(".") or BACKUP_RE.search(alias):
                continue  # a temp file or a backup of old responses, not a model
            if not ALIAS_RE.match(alias):
                raise BbiError(
                    f"{p}: not a model's responses (file names in responses/ are model "
                    "aliases: letters, digits, '_', '-', '.'); move it out of the run"
                )
            if alias not in stems:
                role = (
                    "teacher"
                    if alias == "teacher"
                    else "null"
                    if alias == "teacher_null"
                    else "student"
                )
                models[alias] = {"spec": None, "role": role}
        return models

    def _configured_models(self) -> dict[str, dict]:
        """run.yaml's ``models``, checked: every consumer relies on its shape."""
        raw = self.config().get("models")
        if raw is None:
            return {}
        where = self.config_path
        if not isinstance(raw, dict):
            raise BbiError(f"{where}: 'models' must be a mapping of alias -> {{spec, role}}")
        models: dict[str, dict] = {}
        stems: dict[str, str] = {}
        for alias, entry in raw.items():
            try:
                stem = alias_file_stem(check_model_name(alias))
            except BbiError as exc:
                raise BbiError(f"{where}: models: {exc}") from None
            if stem in stems:
                raise BbiError(
                    f"{where}: models {stems[stem]!r} and {alias!r} would share the file "
                    f"responses/{stem}.jsonl; rename one"
                )
            stems[stem] = alias
            if not isinstance(entry, dict):
                raise BbiError(f"{where}: models.{alias} must be a mapping with 'spec' and 'role'")
            spec = entry.get("spec")
            if spec is not None and not isinstance(spec, str):
                raise BbiError(f"{where}: models.{alias}.spec must be a string")
            role = entry.get("role")
            if role not in ROLES:
                raise BbiError(
                    f"{where}: models.{alias}.role: unknown role {role!r} "
                    f"(use one of {', '.join(ROLES)})"
                )
            models[alias] = dict(entry)
        return models

    def aliases(self, role: str | None = None) -> list[str]:
        return [a for a, m in self.models().items() if role is None or m.get("role") == role]

    def teacher_alias(self) -> str:
        teachers = self.aliases("teacher")
        if len(teachers) != 1:
            raise BbiError(
                f"{self.path}: expected exactly one teacher model, found {len(teachers)}"
            )
        return teachers[0]

    # ---- suite / responses -------------------------------------------------------
    def suite(self) -> pd.DataFrame:
        """suite.jsonl as a DataFrame indexed by id; every record is checked (file:line)."""
        if self._suite is None:
            if not self.suite_path.exists():
                raise BbiError(
                    f"{self.path}: no suite.jsonl (run `bbi probe run` or `bbi probe import` first)"
                )
            # suite.jsonl is written atomically, never appended: a torn line is damage.
            records = []
            seen: dict[str, int] = {}
            for i, rec in iter_jsonl(self.suite_path):
                records.append(_check_suite_record(rec, f"{self.suite_path}:{i}", seen, i))
            if not records:
                raise BbiError(f"{self.suite_path}: empty suite")
            df = pd.DataFrame(records)
            self._suite = df.set_index("id", drop=False)
        return self._suite

    def responses(self, alias: str) -> pd.DataFrame:
        """responses/<alias>.jsonl as a DataFrame; a crash-torn last line is skipped."""
        path = self.responses_path(alias)
        if not path.exists():
            raise BbiError(f"{self.path}: no responses for model {alias!r}")
        rows = [
            _check_response(rec, f"{path}:{i}") for i, rec in iter_jsonl(path, allow_torn_tail=True)
        ]
        df = pd.DataFrame(rows)
        if df.empty:
            return pd.DataFrame(
                columns=["prompt_id", "sample", "text", "n_tokens", "finish_reason"]
            )
        # Last write wins if a line was ever duplicated by an interrupted run.
        return df.drop_duplicates(["prompt_id", "sample"], keep="last").reset_index(drop=True)

    def paired(self, other: str, sample: int = 0, reference: str | None = None) -> pd.DataFrame:
        """One row per prompt answered by both the reference (teacher) and ``other``.

        Columns: id, category, subcategory, split, prompt, teacher, other (response texts),
        teacher_tokens, other_tokens.
        """
        reference = reference or self.teacher_alias()
        suite = self.suite()
        ref = self.responses(reference)
        oth = self.responses(other)
        in_suite = set(suite.index)
        ref = ref[(ref["sample"] == sample) & ref["prompt_id"].isin(in_suite)].set_index(
            "prompt_id"
        )
        oth = oth[(oth["sample"] == sample) & oth["prompt_id"].isin(in_suite)].set_index(
            "prompt_id"
        )
        missing = set(ref.index) ^ set(oth.index)
        if missing:
            raise BbiError(
                f"{self.path}: models {reference!r} and {other!r} answered different prompt sets "
                f"({len(missing)} prompt ids differ, e.g. {sorted(missing)[0]!r})"
            )
        ids = [i for i in suite.index if i in ref.index]
        if not ids:
            raise BbiError(f"{self.path}: no responses match the suite's prompt ids")
        out = suite.loc[ids, ["id", "category", "subcategory", "split", "prompt"]].copy()
        out["teacher"] = ref.loc[ids, "text"].astype(str).values
        out["other"] = oth.loc[ids, "text"].astype(str).values
        out["teacher_tokens"] = ref.loc[ids, "n_tokens"].values if "n_tokens" in ref else None
        out["other_tokens"] = oth.loc[ids, "n_tokens"].values if "n_tokens" in oth else None
        return out.reset_index(drop=True)

    # ---- results -----------------------------------------------------------------
    def read_results(self) -> dict:
        """results.json (a fresh skeleton if absent); a damaged one is a BbiError."""
        if not self.results_path.exists():
            return {"schema_version": SCHEMA_VERSION, "run": self.name}
        res = check_shape(read_json_object(self.results_path), RESULTS_SHAPE, self.results_path)
        version = res.get("schema_version", SCHEMA_VERSION)
        if type(version) is not int or version != SCHEMA_VERSION:
            hint = (
                "it was written by a newer bbi: upgrade bbi to read it"
                if type(version) is int and version > SCHEMA_VERSION
                else "move it aside and rerun the commands that write it (bbi probe run, "
                "bbi attack)"
            )
            raise BbiError(
                f"{self.results_path}: schema_version {version!r} is not the one this bbi "
                f"reads ({SCHEMA_VERSION}); {hint}"
            )
        return res

    def update_results(self, key: str, value: Any) -> dict:
        """Replace one top-level key of results.json atomically, keeping the others (under
        the results lock, so a concurrent command's section is never lost)."""
        with self.locked(self.results_path):
            return self._set_results(self.read_results(), key, value)

    def _set_results(self, res: dict, key: str, value: Any) -> dict:
        res["schema_version"] = SCHEMA_VERSION
        res["run"] = self.name
        res[key] = value
        write_json(self.results_path, res)
        return res

    def update_results_entry(self, section: str, name: str, value: Any) -> dict:
        """Set ``results.json[section][name]`` keeping the section's other entries (e.g.
        ``distill.<alias>``: two distillations into one run both stay recorded)."""
        with self.locked(self.results_path):
            res = self.read_results()
            current = res.get(section)
            entries = dict(current) if isinstance(current, dict) else {}
            entries[name] = value
            return self._set_results(res, section, entries)

    def write_json(self, relpath: str, obj: Any) -> Path:
        path = self.path / relpath
        write_json(path, obj)
        return path


_INT64_MAX = 2**63 - 1
_SUITE_OPTIONAL = ("subcategory", "reference", "source", "perturbation", "base_id")


def _check_suite_record(rec: dict, where: str, seen: dict[str, int], line: int) -> dict:
    """A suite.jsonl record with the fields the commands rely on, optional ones filled."""
    rid = rec.get("id")
    if not isinstance(rid, str) or not rid:
        raise BbiError(f"{where}: field 'id' is missing or not a string")
    if rid in seen:
        raise BbiError(f"{where}: duplicate id {rid!r} (first at line {seen[rid]})")
    seen[rid] = line
    for key in ("prompt", "category"):
        if not isinstance(rec.get(key), str):
            raise BbiError(f"{where}: field {key!r} is missing or not a string")
    if rec.get("split") not in ("train", "test"):
        raise BbiError(f"{where}: field 'split' must be 'train' or 'test'")
    for key in _SUITE_OPTIONAL:
        if rec.get(key) is not None and not isinstance(rec[key], str):
            raise BbiError(f"{where}: field {key!r} must be a string or null")
    return canonical_record(rec)


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= _INT64_MAX


def _check_response(rec: dict, where: str) -> dict:
    """A responses line with the fields readers use, of the types they assume."""
    if not isinstance(rec.get("prompt_id"), str):
        raise BbiError(f"{where}: field 'prompt_id' is missing or not a string")
    if not isinstance(rec.get("text"), str):
        raise BbiError(f"{where}: field 'text' is missing or not a string")
    rec.setdefault("sample", 0)
    if not _is_count(rec["sample"]):
        raise BbiError(f"{where}: field 'sample' must be a non-negative integer")
    if rec.get("n_tokens") is not None and not _is_count(rec["n_tokens"]):
        raise BbiError(f"{where}: field 'n_tokens' must be a non-negative integer")
    if rec.get("finish_reason") is not None and not isinstance(rec["finish_reason"], str):
        raise BbiError(f"{where}: field 'finish_reason' must be a string")
    return rec
