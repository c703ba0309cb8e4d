"""`bbi probe run`: generate every model's responses to a suite into a run directory.

Resumable and incremental by construction: each response line carries a cache key
derived from (model fingerprint, prompt hash, generation config, seed, sample index).
A rerun reuses every line whose key still matches, asks the model only for what is
missing, and appends+fsyncs per chunk, so a kill at any moment loses at most the chunk
in flight and never duplicates a line. A second, global content cache under
``$BBI_CACHE_DIR/generations`` lets other runs reuse the same model's answers.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn

from bbi.backends.base import GenerationConfig
from bbi.config import GenerationSettings
from bbi.console import Progress
from bbi.errors import BbiError
from bbi.hub import cache_root
from bbi.results_schema import validated_models, validated_suite
from bbi.runstore import (
    ROLES,
    RunDir,
    append_jsonl,
    atomic_write_text,
    backup_path,
    check_alias,
    read_jsonl,
    suite_bytes,
    suite_hash,
)
from bbi.specs import ModelSpec, parse_spec

NULL_ALIAS = "teacher_null"
NULL_SEED_OFFSET = 1_000_003  # the A/A resample draws from an independent seed stream


@dataclass
class ModelEntry:
    """One model of a run: its alias, spec, role (teacher / null / student) and its own
    arguments (bbi.model_args: placement, kernels, API limits; validated for its kind).

    ``spec`` is recorded as given; ``model`` is that spec parsed, once, here: the
    fingerprint, the backend pool and the loader all take it, so a probe never re-parses.
    """

    alias: str
    spec: str
    role: str = "student"
    args: dict = field(default_factory=dict)
    model: ModelSpec = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_alias(self.alias)
        if self.role not in ROLES:
            raise BbiError(
                f"unknown role {self.role!r} for {self.alias!r} (use one of {', '.join(ROLES)})"
            )
        self.model = parse_spec(self.spec)  # syntax, kind and zoo names: pure string work


def with_load_args(fingerprint: str, args: dict) -> str:
    """A model's cache identity: its weights' fingerprint, plus the arguments that change
    its outputs (dtype, quantization, attention kernel), so responses made under other
    settings are never served from the cache."""
    from bbi.model_args import output_identity

    ident = output_identity(args)
    if not ident:
        return fingerprint
    blob = json.dumps({"weights": fingerprint, "load": ident}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


# Generation settings (and their defaults) live in the one config layer.
ProbeSettings = GenerationSettings


def backend_options(entry: ModelEntry, settings: ProbeSettings) -> dict[str, Any]:
    """The keywords a model's backend is created with: the run's device, dtype and
    trust_remote_code, the model's own arguments winning (bbi.model_args.load_options)."""
    from bbi.model_args import load_options, run_defaults

    return load_options(entry.args, run_defaults(settings))


def model_fingerprint(entry: ModelEntry, settings: ProbeSettings) -> str:
    """A model's cache identity, from its files (no weights loaded, no engine started)."""
    from bbi.fingerprint import spec_fingerprint

    fp = spec_fingerprint(
        entry.model,
        trust_remote_code=settings.trust_remote_code,
        allow_download=entry.args.get("allow_download") is True,
    )
    return with_load_args(fp, entry.args)


class BackendPool:
    """One backend per (spec, options) for a whole run.

    Models whose spec and backend options are equal (the teacher and its A/A resample, a
    student that is the teacher) share one loaded model: it is created when the first of
    them has something to generate and closed once, right after the last of them (from
    ``reserve``) is released, so a vLLM engine or a large checkpoint is loaded once per run.
    """

    def __init__(self, factory: Callable[..., Any] | None = None):
        self._factory = factory
        self._live: dict[str, Any] = {}
        self._users: dict[str, int] = {}

    @staticmethod
    def key(spec: str | ModelSpec, options: dict[str, Any]) -> str:
        try:
            canonical = str(parse_spec(spec))
        except BbiError:
            canonical = str(spec)
        return json.dumps([canonical, options], sort_keys=True, default=repr)

    def reserve(self, spec: str | ModelSpec, options: dict[str, Any]) -> None:
        """Announce one more model that will use (and then release) this backend."""
        k = self.key(spec, options)
        self._users[k] = self._users.get(k, 0) + 1

    def get(self, spec: str | ModelSpec, options: dict[str, Any]) -> Any:
        k = self.key(spec, options)
        if k not in self._live:
            if self._factory is not None:
                factory = self._factory
            else:
                from bbi.backends import load_backend as factory
            self._live[k] = factory(spec, **options)
        return self._live[k]

    def release(self, spec: str | ModelSpec, options: dict[str, Any]) -> None:
        """One user is done; the backend is closed after its last reserved user."""
        k = self.key(spec, options)
        self._users[k] = self._users.get(k, 1) - 1
        if self._users[k] <= 0:
            self._users.pop(k, None)
            _close(self._live.pop(k, None))

    def close_all(self) -> None:
        self._users.clear()
        while self._live:
            _close(self._live.popitem()[1])


def _close(backend: Any) -> None:
    close = getattr(backend, "close", None)
    if close:
        close()


def prompt_hash(prompt: str) -> str:
    return hashlib.sha256(prompt.encode("utf-8")).hexdigest()[:16]


def request_seed(base_seed: int, prompt_id: str, sample: int) -> int:
    """Per-request seed: a response depends on its own seed only, never on batching."""
    digest = hashlib.sha256(f"{base_seed}:{prompt_id}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def cache_key(fingerprint: str, gen_key: str, prompt: str, seed: int, sample: int) -> str:
    raw = f"{fingerprint}|{gen_key}|{prompt_hash(prompt)}|{seed}|{sample}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


def select_limit(records: list[dict], limit: int | None) -> list[dict]:
    """A deterministic stratified subset: categories round-robin, splits in proportion.

    Within a category, items are interleaved so that any prefix keeps the suite's
    train/test ratio; categories then take turns, so ``--limit 120`` on the default suite
    gives 12 prompts per category, about 20% of them test. When the suite has both splits
    and the limit leaves room for two prompts, the subset holds at least one of each (an
    attack needs train prompts to buy and test prompts to evaluate on): the last pick of
    a category that has the missing split is swapped for that category's first such item.
    """
    if limit is None or limit >= len(records):
        return list(records)
    if limit <= 0:
        raise BbiError("--limit must be positive")
    by_cat: dict[object, list[dict]] = {}
    for rec in records:
        by_cat.setdefault(rec.get("category"), []).append(rec)
    ordered: list[list[dict]] = []
    for items in by_cat.values():
        sizes: dict[object, int] = {}
        for rec in items:
            sizes[rec.get("split")] = sizes.get(rec.get("split"), 0) + 1
        seen: dict[object, int] = {}
        keyed = []
        for i, rec in enumerate(items):
            sp = rec.get("split")
            keyed.append(((seen.get(sp, 0) + 0.5) / sizes[sp], i, rec))
            seen[sp] = seen.get(sp, 0) + 1
        ordered.append([rec for _, _, rec in sorted(keyed, key=lambda t: (t[0], t[1]))])
    picks: list[tuple[int, dict]] = []  # (category index, record) in round-robin order
    depth = 0
    while len(picks) < limit:
        for c, items in enumerate(ordered):
            if depth < len(items) and len(picks) < limit:
                picks.append((c, items[depth]))
        depth += 1
    if limit >= 2:
        in_suite = {rec.get("split") for rec in records}
        for need in ("test", "train"):
            if need not in in_suite or any(rec.get("split") == need for _, rec in picks):
                continue
            chosen = {id(rec) for _, rec in picks}
            for k in range(len(picks) - 1, -1, -1):  # latest pick first
                c = picks[k][0]
                spare = next(
                    (r for r in ordered[c] if r.get("split") == need and id(r) not in chosen),
                    None,
                )
                if spare is not None:
                    picks[k] = (c, spare)
                    break
    chosen_ids = {rec["id"] for _, rec in picks}
    return [r for r in records if r["id"] in chosen_ids]


def write_suite(run: RunDir, records: Sequence[dict]) -> None:
    text = suite_bytes(list(records)).decode("utf-8")
    if not run.suite_path.exists() or run.suite_path.read_text(encoding="utf-8") != text:
        atomic_write_text(run.suite_path, text)
    run._suite = None


class GlobalCache:
    """Append-only per-model content cache shared across runs."""

    def __init__(self, fingerprint: str, gen_key: str):
        self.path = cache_root() / "generations" / fingerprint[:24] / f"{gen_key[:16]}.jsonl"
        self._data: dict[str, dict] | None = None

    def get_all(self) -> dict[str, dict]:
        if self._data is None:
            self._data = {}
            if self.path.exists():
                try:
                    for rec in read_jsonl(self.path, allow_torn_tail=True):
                        if isinstance(rec.get("cache_key"), str):
                            self._data[rec["cache_key"]] = rec
                except (BbiError, KeyError):
                    self._data = {}  # a damaged cache is only a cache
        return self._data

    def add(self, records: list[dict]) -> None:
        try:
            append_jsonl(self.path, records)
        except OSError:
            return  # read-only cache dir: the run dir still has everything
        self.get_all().update({r["cache_key"]: r for r in records})


def _expected(
    entry: ModelEntry, records: list[dict], settings: ProbeSettings
) -> list[tuple[dict, int, int]]:
    base = settings.seed + (NULL_SEED_OFFSET if entry.role == "null" else 0)
    return [
        (rec, s, request_seed(base, rec["id"], s))
        for rec in records
        for s in range(settings.samples)
    ]


def probe_model(
    run: RunDir,
    entry: ModelEntry,
    records: list[dict],
    settings: ProbeSettings,
    progress: Progress | None = None,
    backend_factory: Callable[..., Any] | None = None,
    chunk: int | None = None,
    *,
    fingerprint: str | None = None,
    before_write: Callable[[], None] | None = None,
    backends: BackendPool | None = None,
) -> dict:
    """Generate what is missing for one model; return timing/cache statistics.

    ``before_write`` is called once, right before the first change to the run directory
    (a stale backup or the first appended line), so a caller can lay out suite.jsonl and
    run.yaml only once there is something to keep. With ``backends`` the backend comes
    from (and stays in) that pool; without, it is loaded here and closed on return.
    """
    from bbi.backends import load_backend

    started = time.perf_counter()
    if fingerprint is None:
        fingerprint = model_fingerprint(entry, settings)
    written = False

    def write(lines: list[dict]) -> None:
        nonlocal written
        if not written and before_write is not None:
            before_write()
        written = True
        append_jsonl(path, lines)

    base_seed = settings.seed + (NULL_SEED_OFFSET if entry.role == "null" else 0)
    gen = GenerationConfig.of(settings, seed=base_seed)
    gen_key = gen.cache_key()
    wanted = _expected(entry, records, settings)
    keyed = [
        (rec, s, seed, cache_key(fingerprint, gen_key, rec["prompt"], seed, s))
        for rec, s, seed in wanted
    ]

    path = run.responses_path(entry.alias)
    have: dict[tuple[str, int], str] = {}
    if path.exists():
        # RunDir.responses validates every line's fields and types.
        for _, row in run.responses(entry.alias).iterrows():
            key = row.get("cache_key")
            have[(row["prompt_id"], int(row["sample"]))] = key if isinstance(key, str) else ""
    gcache = GlobalCache(fingerprint, gen_key)
    stale = [k for k in keyed if have.get((k[0]["id"], k[1])) not in (None, k[3])]
    if stale:
        # Settings or weights changed: the old lines no longer answer this config. Keep them
        # in a backup rather than losing data, and start this alias afresh.
        if before_write is not None:
            before_write()
        written = True
        backup = backup_path(path, "stale")
        os.replace(path, backup)
        have = {}
    todo = [k for k in keyed if have.get((k[0]["id"], k[1])) != k[3]]
    from_global = [k for k in todo if k[3] in gcache.get_all()]
    if from_global:
        cached = gcache.get_all()
        write([_line(k, cached[k[3]]) for k in from_global])
        done_keys = {k[3] for k in from_global}
        todo = [k for k in todo if k[3] not in done_keys]

    stats = {
        "alias": entry.alias,
        "spec": entry.spec,
        "role": entry.role,
        "fingerprint": fingerprint,
        "requests": len(keyed),
        "cached": len(keyed) - len(todo),
        "generated": 0,
        "new_tokens": 0,
        "seed": base_seed,
        "generation": {**settings.model_dump(), "cache_key": gen_key},
    }
    backend = None
    if todo:
        options = backend_options(entry, settings)
        if backends is not None:
            backend = backends.get(entry.model, options)
        else:
            backend = (backend_factory or load_backend)(entry.model, **options)
        usage_before = getattr(backend, "usage", None)
        usage_before = dict(usage_before) if isinstance(usage_before, dict) else {}
        stats["chat_format"] = getattr(backend, "chat_format", None)
        task = progress.add_task(f"{entry.alias}", total=len(todo)) if progress else None
        step = chunk or max(settings.batch_size * 4, 64)
        gen_started = time.perf_counter()
        try:
            for i in range(0, len(todo), step):
                part = todo[i : i + step]
                outs = backend.generate([k[0]["prompt"] for k in part], gen, [k[2] for k in part])
                if len(outs) != len(part):
                    raise RuntimeError(
                        f"backend returned {len(outs)} generations for {len(part)} prompts"
                    )
                lines = [
                    _line(
                        k,
                        {"text": o.text, "n_tokens": o.n_tokens, "finish_reason": o.finish_reason},
                    )
                    for k, o in zip(part, outs, strict=True)
                ]
                write(lines)
                gcache.add(lines)
                stats["generated"] += len(part)
                stats["new_tokens"] += sum(o.n_tokens for o in outs)
                if task is not None:
                    progress.advance(task, len(part))
        finally:
            usage = getattr(backend, "usage", None)
            if isinstance(usage, dict):  # an API backend's request and token counts
                # this model's own share when the backend is shared
                stats["api_usage"] = {
                    k: v - usage_before.get(k, 0) if isinstance(v, int | float) else v
                    for k, v in usage.items()
                }
            if backends is None:
                _close(backend)
        gen_s = time.perf_counter() - gen_started
        stats["generate_s"] = round(gen_s, 3)
        stats["tokens_per_s"] = round(stats["new_tokens"] / gen_s, 2) if gen_s > 0 else None
    else:
        old = run.manifest().get("models", {}) if run.path.is_dir() else {}
        stats["chat_format"] = (old.get(entry.alias) or {}).get("chat_format")
    stats["wall_s"] = round(time.perf_counter() - started, 3)
    return stats


def _line(k: tuple, out: dict) -> dict:
    rec, sample, _seed, key = k
    return {
        "prompt_id": rec["id"],
        "sample": sample,
        "text": out["text"],
        "n_tokens": int(out["n_tokens"]),
        "finish_reason": out["finish_reason"],
        "cache_key": key,
    }


def environment_info() -> dict:
    """Versions and the source revision, for the manifest (never secrets)."""
    import importlib.metadata as md

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in (
        "bbi",
        "torch",
        "transformers",
        "peft",
        "scikit-learn",
        "sentence-transformers",
        "numpy",
        "pandas",
    ):
        try:
            versions[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            versions[pkg] = None
    sha = None
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        sha = (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                cwd=Path(__file__).resolve().parent,
                capture_output=True,
                text=True,
                timeout=5,
                check=False,
            ).stdout.strip()
            or None
        )
    return {"versions": versions, "git_sha": sha}


def _same_spec(a: str | None, b: ModelSpec) -> bool:
    if not a:
        return False
    try:
        return str(parse_spec(a)) == str(b)
    except BbiError:
        return False


def fresh_hint(path: Path) -> str:
    return f"another --run, or --fresh to start {path} over (the old one is kept beside it)"


def check_run_conflicts(run: RunDir, models: list[ModelEntry], digest: str, n: int) -> None:
    """Refuse to mix a new suite or a new model into what an existing run already holds."""
    if run.suite_path.exists():
        have = "sha256:" + hashlib.sha256(run.suite_path.read_bytes()).hexdigest()
        if have != digest:
            raise BbiError(
                f"{run.path} already holds a different suite ({have[:19]}...) than this command "
                f"asks for ({n} prompts, {digest[:19]}...): use the same --suite and --limit, "
                + fresh_hint(run.path)
            )
    existing = run.models()
    old_teachers = [a for a, m in existing.items() if m.get("role") == "teacher"]
    for entry in models:
        old = existing.get(entry.alias)
        if entry.role == "teacher" and old_teachers and entry.alias not in old_teachers:
            raise BbiError(
                f"{run.path} already has the teacher {old_teachers[0]!r}; a run has one teacher: "
                + fresh_hint(run.path)
            )
        if old is None:
            continue
        if old.get("role") != entry.role or not _same_spec(old.get("spec"), entry.model):
            raise BbiError(
                f"alias {entry.alias!r} in {run.path} already holds {old.get('role')} responses "
                f"of {old.get('spec') or 'an unknown model'}, not {entry.spec}: name the model "
                "another alias (--student NAME=SPEC), or use " + fresh_hint(run.path)
            )


def move_aside(path: Path) -> Path:
    """Start a run over without losing it: rename it to ``NAME.old-<timestamp>``."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}.old-{stamp}")
    i = 1
    while target.exists():
        target = path.with_name(f"{path.name}.old-{stamp}-{i}")
        i += 1
    os.replace(path, target)
    return target


def check_probe(
    run_path: str | os.PathLike,
    models: list[ModelEntry],
    suite_records: list[dict],
    settings: GenerationSettings | dict,
    *,
    fresh: bool = False,
) -> tuple[GenerationSettings, list[dict], str]:
    """The checks ``run_probe`` makes before it asks anything of a model; cheap (no
    weights, no network), so ``bbi run`` calls it before its first step too.

    Settings, specs, aliases, the suite (and ``--limit``), the run directory's files and
    conflicts with what it already holds. Returns (settings, the records to probe,
    their suite hash).
    """
    settings = GenerationSettings.parse(
        settings.model_dump() if isinstance(settings, GenerationSettings) else settings,
        "generation",
    )
    teachers = [m for m in models if m.role == "teacher"]
    if len(teachers) != 1:
        raise BbiError("a run needs exactly one teacher model")
    aliases = [m.alias for m in models]
    if len(set(aliases)) != len(aliases):
        raise BbiError(f"duplicate model aliases: {aliases}")
    records = select_limit(suite_records, settings.limit)
    if not records:
        raise BbiError("the suite is empty")
    digest = suite_hash(records)
    path = Path(run_path)
    if not str(run_path).strip():
        raise BbiError("--run: empty path")
    if path.exists() and not path.is_dir():
        raise BbiError(f"--run {path}: exists and is not a directory")
    if path.is_dir() and not fresh:
        existing = RunDir(path)
        existing.check_files()  # some are written last: fail before the models run
        check_run_conflicts(existing, models, digest, len(records))
    return settings, records, digest


def models_of_run(
    run_path: str | os.PathLike,
) -> tuple[list[ModelEntry], list[dict], str, GenerationSettings]:
    """What an existing run asks to be probed: every model in run.yaml that has a
    generating spec (students registered by ``bbi distill`` included; imported responses
    are left as they are), its suite and its generation settings."""
    from bbi.model_args import check_model_args
    from bbi.specs import is_imported

    run = RunDir(run_path, must_exist=True)
    cfg = run.config()
    models = []
    for alias, m in run.models().items():
        if not m.get("spec") or is_imported(str(m["spec"])):
            continue
        entry = ModelEntry(alias, str(m["spec"]), str(m.get("role") or "student"))
        where = f"{run.config_path}: models.{alias}.args"
        entry.args = check_model_args(entry.model, m.get("args"), where)
        models.append(entry)
    if not any(m.role == "teacher" for m in models):
        raise BbiError(f"{run.config_path}: no teacher with a model spec; pass --teacher SPEC")
    gen = GenerationSettings.parse(cfg.get("generation") or {}, f"{run.config_path}: generation")
    suite_name = str((cfg.get("suite") or {}).get("name") or "default")
    return models, list(read_jsonl(run.suite_path)), suite_name, gen


def run_probe(
    run_path: str | os.PathLike,
    models: list[ModelEntry],
    suite_records: list[dict],
    settings: GenerationSettings,
    *,
    suite_name: str = "default",
    progress: bool = True,
    similarity: bool = True,
    fresh: bool = False,
) -> dict:
    """Probe every model on the suite, write the run directory, return the manifest.

    Everything is validated first (settings, specs, aliases, the suite, conflicts with what
    the run already holds, model fingerprints) and nothing in the run directory changes
    until the first response is about to be written, so a command that fails on bad input
    or an unreachable model leaves an existing run byte-identical. ``fresh`` moves an
    existing run aside (``NAME.old-<timestamp>``) and starts a new one.

    Models that share a spec and backend options share one backend (``BackendPool``),
    loaded once and closed after the last of them; they are probed one after another.
    """
    settings, records, digest = check_probe(run_path, models, suite_records, settings, fresh=fresh)
    path = Path(run_path)
    existing = RunDir(path) if path.is_dir() and not fresh else None
    cfg: dict[str, Any] = existing.config() if existing is not None else {}
    old_manifest: dict[str, Any] = existing.manifest() if existing is not None else {}
    fingerprints = {m.alias: model_fingerprint(m, settings) for m in models}
    if fresh and path.is_dir():
        console_note(f"--fresh: moved the old run to {move_aside(path)}")

    run = RunDir(path, create=False, must_exist=False)
    started = time.perf_counter()
    # Keep models a previous command added (e.g. a distilled student) unless redefined.
    merged = {
        **(cfg.get("models") or {}),
        **{
            m.alias: {"spec": m.spec, "role": m.role, **({"args": m.args} if m.args else {})}
            for m in models
        },
    }
    new_cfg = {
        **cfg,
        "name": run.name,
        "models": merged,
        "suite": {"name": suite_name, "hash": digest, "n": len(records), "limit": settings.limit},
        "generation": settings.model_dump(exclude={"limit"}),
        "seeds": {"generation": settings.seed, "null_offset": NULL_SEED_OFFSET},
    }
    laid_out = False

    def lay_out() -> None:
        nonlocal laid_out
        if laid_out:
            return
        run.path.mkdir(parents=True, exist_ok=True)
        write_suite(run, records)
        if run.config() != new_cfg:
            run.write_config(new_cfg)
        laid_out = True

    env = environment_info()
    man_models: dict[str, dict] = dict(old_manifest.get("models", {}))
    timings: dict[str, Any] = dict(old_manifest.get("timings", {}))

    columns = [
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
    ]
    pool = BackendPool()
    order = _backend_order(models, settings)
    for entry in order:
        pool.reserve(entry.model, backend_options(entry, settings))
    with Progress(*columns, disable=not progress, transient=False) as bar:
        try:
            for entry in order:
                try:
                    st = probe_model(
                        run,
                        entry,
                        records,
                        settings,
                        progress=bar,
                        fingerprint=fingerprints[entry.alias],
                        before_write=lay_out,
                        backends=pool,
                    )
                finally:
                    pool.release(entry.model, backend_options(entry, settings))
                lay_out()
                man_models[entry.alias] = {
                    k: st[k] for k in ("spec", "role", "fingerprint", "chat_format", "seed")
                }
                timings[f"generate:{entry.alias}"] = {
                    k: st.get(k)
                    for k in (
                        "requests",
                        "cached",
                        "generated",
                        "new_tokens",
                        "generate_s",
                        "tokens_per_s",
                        "wall_s",
                    )
                }
                if st.get("api_usage"):
                    timings[f"generate:{entry.alias}"]["api_usage"] = st["api_usage"]
                run.update_manifest(models=man_models, timings=timings, **env)
        finally:
            pool.close_all()

    if similarity:
        t0 = time.perf_counter()
        summarize_similarity(
            run, [m.alias for m in models if m.role != "teacher"], progress=progress
        )
        timings["similarity"] = {"wall_s": round(time.perf_counter() - t0, 3)}
    timings["probe_total_s"] = round(time.perf_counter() - started, 3)
    run.update_results(
        "suite", validated_suite(suite_summary(records, digest, suite_name, of=len(suite_records)))
    )
    run.update_results(
        "models",
        validated_models(
            {
                a: {**m, "fingerprint": man_models.get(a, {}).get("fingerprint")}
                for a, m in merged.items()
            }
        ),
    )
    return run.update_manifest(
        models=man_models,
        timings=timings,
        suite={"name": suite_name, "hash": digest, "n": len(records)},
    )


def _backend_order(models: list[ModelEntry], settings: ProbeSettings) -> list[ModelEntry]:
    """The models in their order, except that models sharing a backend follow the first of
    them: a shared backend is then never held while another model is loaded."""
    groups: dict[str, list[ModelEntry]] = {}
    for m in models:
        groups.setdefault(BackendPool.key(m.model, backend_options(m, settings)), []).append(m)
    return [m for group in groups.values() for m in group]


def console_note(text: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[yellow]note:[/] {text}", highlight=False)


def suite_summary(records: Sequence[dict], digest: str, name: str, of: int | None = None) -> dict:
    cats: list[str] = []
    for r in records:
        if r.get("category") not in cats:
            cats.append(r.get("category"))
    return {
        "name": name,
        "hash": digest,
        "n": len(records),
        "n_train": sum(r.get("split") == "train" for r in records),
        "n_test": sum(r.get("split") == "test" for r in records),
        "categories": cats,
        # A stratified --limit subset of a larger suite: its size, so reports can say so.
        "subset_of": of if of is not None and of > len(records) else None,
    }


def summarize_similarity(run: RunDir, others: list[str], progress: bool = False) -> dict:
    """Compute per-prompt cosine for each non-teacher model; store means with CIs."""
    import pandas as pd

    from bbi.similarity import compute_similarity, embedding_backend
    from bbi.stats import mean_ci

    res = run.read_results().get("similarity", {})
    for alias in others:
        df = pd.DataFrame(compute_similarity(run, alias, progress=progress))
        entry = {
            "overall": mean_ci(df["cosine"].to_numpy()),
            "per_category": {},
            "embedding_backend": embedding_backend(),
        }
        for split in ("train", "test"):
            part = df[df["split"] == split]
            if len(part):
                entry[split] = mean_ci(part["cosine"].to_numpy())
        for cat, part in df.groupby("category", sort=False):
            entry["per_category"][str(cat)] = mean_ci(part["cosine"].to_numpy())
        res[alias] = entry
    run.update_results("similarity", res)
    return res
