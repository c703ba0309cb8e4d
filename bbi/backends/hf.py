"""Hugging Face transformers backend: batched, seeded, batch-independent generation.

Why the sampling looks unusual: each token is the argmax of warped logits (temperature,
top-p) plus Gumbel(0, 1) noise (``SeededSampler``), which is an exact sample from the
warped distribution (the Gumbel-max trick). The noise of row r at step t comes from a
counter-based stream keyed by (seed_r, t) only, so a response depends on its own request
seed and not on which other prompts shared its batch: that is what makes the response
cache sound.

The decode loop is our own (a few lines over the model's forward and its KV cache)
rather than ``model.generate``, for one reason: rows leave the batch, and the cache, as
soon as they hit EOS or a stop string, so one long answer does not make the whole
batch pay for every finished row. Prompts are left-padded and sorted by length before
batching (less padding, same outputs); position ids follow the attention mask, so a
row's logits do not depend on its padding. Greedy output equals per-prompt
``model.generate`` (tested).
"""

from __future__ import annotations

import hashlib
import math
import pickle
import re
from typing import Any

import torch
from transformers import LogitsProcessor

from bbi.backends.base import (
    Generation,
    PromptLogprobs,
    TokenScores,
    check_generate_args,
)
from bbi.backends.base import (
    GenerationConfig as BbiGenerationConfig,
)
from bbi.chat import PLAIN_FORMAT, format_prompt, response_suffix
from bbi.errors import BbiError
from bbi.hub import digest, dir_fingerprint, local_files_only, locate
from bbi.registry import hook
from bbi.specs import ModelSpec, parse_spec

# Architectures an upper layer adds to transformers' Auto classes (entry points of
# ``bbi.hf_architectures``: a callable with no arguments, called once before loading), so
# checkpoints of bbi's own architectures load without trust_remote_code.
ARCHITECTURES = hook("bbi.hf_architectures", "HF architecture registration")
_registered: set[str] = set()


def register_architectures() -> None:
    """Run every ``bbi.hf_architectures`` registration (each once per process)."""
    for name in ARCHITECTURES.names():
        if name in _registered:
            continue
        try:
            ARCHITECTURES.get(name)()
        except BbiError:  # the package that declares it is not importable here
            continue
        _registered.add(name)


# ----------------------------------------------------------------------------- sampling
def _signed64(c: int) -> int:
    return c - (1 << 64) if c >= 1 << 63 else c


_GOLDEN = _signed64(0x9E3779B97F4A7C15)
_MIX1 = _signed64(0xBF58476D1CE4E5B9)
_MIX2 = _signed64(0x94D049BB133111EB)


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    # Logical right shift on int64 (torch's >> is arithmetic).
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix_uniform(keys: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Uniform(0,1) float64 for each (key, index): element ``index`` of the SplitMix64
    stream seeded with ``key``. Counter-based, so any subset of a row's numbers can be
    drawn in any order, on any device, with the same result (int64 ops wrap mod 2^64)."""
    z = keys + (index + 1) * _GOLDEN
    z = (z ^ _shr(z, 30)) * _MIX1
    z = (z ^ _shr(z, 27)) * _MIX2
    z = z ^ _shr(z, 31)
    return (_shr(z, 11).double() + 0.5) * (2.0**-53)


class SeededSampler(LogitsProcessor):
    """Temperature + top-p + Gumbel-max sampling, one stream per row: (seed, step).

    ``generate`` runs greedy over the returned scores (0 for the sampled token, -inf
    elsewhere), so each row's token is argmax(logit/T + Gumbel) over its nucleus: an exact
    sample from the warped distribution that no other row can influence. The nucleus is
    found with a top-k pre-pass (exact: rows whose top-k mass is below top_p fall back to
    the full vocabulary), and Gumbel noise is drawn only for candidate tokens.

    Top-p keeps, in descending probability, every token whose preceding mass is < top_p
    (the smallest set reaching top_p, at least one token), as transformers does.
    """

    def __init__(
        self, temperature: float, top_p: float, seeds: list[int], prompt_len: int, k: int = 256
    ):
        self.temperature = float(temperature)
        self.top_p = float(top_p)
        self.seeds = [int(s) for s in seeds]
        self.prompt_len = prompt_len
        self.k = k

    @staticmethod
    def row_key(seed: int, step: int) -> int:
        # A fixed, platform-independent mix of (seed, step) into a 63-bit stream key.
        raw = hashlib.blake2b(f"{seed}:{step}".encode(), digest_size=8).digest()
        return int.from_bytes(raw, "little") & ((1 << 63) - 1)

    @staticmethod
    def _gumbel(keys: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        u = splitmix_uniform(keys, index)
        return -torch.log(-torch.log(u))

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        """LogitsProcessor form: 0 for the sampled token, -inf elsewhere."""
        token = self.sample(scores, self.seeds, input_ids.shape[1] - self.prompt_len)
        return torch.full_like(scores, -math.inf).scatter(1, token[:, None], 0.0)

    def sample(self, scores: torch.Tensor, seeds: list[int], step: int | list[int]) -> torch.Tensor:
        """One token per row of ``scores``; row r's draw depends on (seeds[r], step) only
        (``step`` may be one per row, for rows that entered the batch at different times)."""
        dev = scores.device
        steps = [step] * len(seeds) if isinstance(step, int) else step
        keys = torch.tensor(
            [self.row_key(s, t) for s, t in zip(seeds, steps, strict=True)],
            dtype=torch.long,
            device=dev,
        )[:, None]
        logits = scores.float() / self.temperature
        n_rows, vocab = logits.shape
        token = torch.empty((n_rows, 1), dtype=torch.long, device=dev)
        full_rows = torch.ones(n_rows, dtype=torch.bool, device=dev)
        if self.top_p < 1.0:
            vals, idx = logits.topk(min(self.k, vocab), dim=-1)
            probs = (vals - logits.logsumexp(-1, keepdim=True)).exp()
            keep = (probs.cumsum(-1) - probs) < self.top_p
            keep[:, 0] = True
            noisy = vals.double().masked_fill(~keep, -math.inf) + self._gumbel(keys, idx)
            token = idx.gather(1, noisy.argmax(-1, keepdim=True))
            full_rows = probs.sum(-1) < self.top_p  # the nucleus may reach past the top k
        if bool(full_rows.any()):
            rows = full_rows.nonzero()[:, 0]
            sub = logits[rows]
            allowed = torch.ones_like(sub, dtype=torch.bool)
            if self.top_p < 1.0:
                svals, sidx = sub.sort(-1, descending=True)
                sprobs = svals.softmax(-1)
                skeep = (sprobs.cumsum(-1) - sprobs) < self.top_p
                skeep[:, 0] = True
                allowed = torch.zeros_like(allowed).scatter(1, sidx, skeep)
            index = torch.arange(vocab, device=dev)[None, :]
            noisy = sub.double().masked_fill(~allowed, -math.inf) + self._gumbel(keys[rows], index)
            token[rows] = noisy.argmax(-1, keepdim=True)
        return token[:, 0]


# ----------------------------------------------------------------------------- loading
_DEVICE_RE = re.compile(r"^(cpu|cuda|mps)(?::(\d+))?$")


def resolve_device(device: str = "auto") -> torch.device:
    """``auto`` (CUDA, else MPS, else CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.

    Checked when the backend is created, before any weights load: torch accepts
    ``cuda`` on a CPU-only machine and fails only once a tensor is moved there.
    """
    if not isinstance(device, str) or not device.strip():
        raise BbiError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
    device = device.strip().lower()
    if device != "auto":
        m = _DEVICE_RE.match(device)
        if m is None:
            raise BbiError(f"unknown device {device!r}; use auto, cpu, cuda, cuda:N or mps")
        kind, index = m.group(1), m.group(2)
        if kind == "cuda":
            if not torch.cuda.is_available():
                raise BbiError(f"device {device!r} requested but CUDA is not available")
            count = torch.cuda.device_count()
            if index is not None and int(index) >= count:
                raise BbiError(
                    f"device {device!r} requested but only {count} CUDA device(s) are visible "
                    f"(cuda:0..cuda:{count - 1})"
                )
        elif kind == "mps":
            mps = getattr(torch.backends, "mps", None)
            if mps is None or not mps.is_available():
                raise BbiError(f"device {device!r} requested but MPS is not available")
            if index not in (None, "0"):
                raise BbiError(f"device {device!r}: there is only one MPS device (mps)")
        elif index is not None:
            raise BbiError(f"unknown device {device!r}; use cpu")
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """``auto`` (bf16/fp16 on CUDA, fp32 elsewhere) or an explicit float dtype."""
    if not isinstance(dtype, str):
        raise BbiError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    dtype = dtype.strip().lower()
    if dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "float16": torch.float16,
        "fp16": torch.float16,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
    }
    if dtype not in table:
        raise BbiError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16")
    return table[dtype]


PICKLE_HINT = (
    "if you trust its source, convert it to model.safetensors yourself "
    "(torch.load(path, weights_only=False), then safetensors.torch.save_file)"
)


def pickle_refusal(exc: BaseException, name: str, what: str = "model") -> BbiError | None:
    """The one-line error for pickled weights torch's safe loader refused, else None."""
    if not isinstance(exc, pickle.UnpicklingError):
        return None
    if "weights only load failed" in str(exc).lower():
        return BbiError(
            f"{what} {name!r}: refused to load pickled weights (pytorch_model.bin / *.bin) "
            "that hold more than tensors: unpickling them could run arbitrary code, and bbi "
            f"has no option to allow it; {PICKLE_HINT}"
        )
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return BbiError(f"{what} {name!r}: the pickled weights file is damaged ({first})")


def _wrap_load_error(exc: Exception, name: str, local: bool, local_only: bool) -> BbiError:
    refused = pickle_refusal(exc, name)
    if refused is not None:
        return refused
    msg = str(exc)
    if "trust_remote_code" in msg or "custom code" in msg:
        return BbiError(
            f"model {name!r} needs its own Python code to load; re-run with "
            "--trust-remote-code only if you trust it"
        )
    if not local and local_only:
        return BbiError(
            f"model {name!r} is not a local directory and is not in the Hugging Face "
            "cache; downloads are off (offline). Download it first or pass a path"
        )
    first = msg.strip().splitlines()[0] if msg.strip() else type(exc).__name__
    return BbiError(f"cannot load model {name!r}: {first}")


def load_hf_parts(
    spec: ModelSpec | str,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_download: bool = False,
    base_path: str | None = None,
    device_map: str | None = None,
    attn_implementation: str | None = None,
    quantization: str | None = None,
) -> tuple[Any, Any, torch.device, dict]:
    """Load (model, tokenizer, device, fingerprint parts) for an hf: spec (or a zoo base path).

    Local directories and hub ids are loaded with ``local_files_only`` unless downloads are
    allowed and HF_HUB_OFFLINE is unset. A LoRA adapter is merged into the base for speed.
    ``device_map`` (e.g. ``auto``) lets Accelerate place, and shard, the model instead of
    moving it to one device; ``quantization`` (``4bit``/``8bit``) loads it with bitsandbytes;
    ``attn_implementation`` picks the attention kernel (bbi.model_args).
    """
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    register_architectures()
    spec = parse_spec(spec)
    name = base_path or spec.name_or_path
    local = locate(name, "model")
    local_only = local_files_only(allow_download)
    dev = resolve_device(device)
    torch_dtype = resolve_dtype(dtype, dev)
    kw = dict(
        revision=spec.revision, local_files_only=local_only, trust_remote_code=trust_remote_code
    )
    from safetensors import SafetensorError

    try:
        cfg = AutoConfig.from_pretrained(name, **kw)
        tok_src = name
        if spec.adapter:
            adapter_dir = locate(spec.adapter, "adapter")
            if adapter_dir is not None and (adapter_dir / "tokenizer_config.json").exists():
                tok_src = str(adapter_dir)
        tokenizer = AutoTokenizer.from_pretrained(
            tok_src,
            **(
                kw
                if tok_src == name
                else dict(local_files_only=True, trust_remote_code=trust_remote_code)
            ),
        )
        model = AutoModelForCausalLM.from_pretrained(
            name,
            config=cfg,
            dtype=torch_dtype,
            **kw,
            **_placement(device_map, attn_implementation, quantization, torch_dtype),
        )
    except BbiError:
        raise
    except (OSError, ValueError, KeyError, ImportError, pickle.UnpicklingError) as exc:
        raise _wrap_load_error(exc, name, local is not None, local_only) from None
    except (RuntimeError, SafetensorError) as exc:  # a damaged archive or safetensors
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BbiError(f"cannot load model {name!r}: {first}") from None

    parts: dict[str, Any] = {}
    if local is not None:
        parts["files"] = dir_fingerprint(local)
    else:
        parts["hub"] = f"{name}@{getattr(cfg, '_commit_hash', None) or spec.revision or 'main'}"
    if spec.adapter:
        model, parts["adapter"] = _apply_adapter(model, spec.adapter, local_only)
    if device_map is None and quantization is None:
        model.to(dev)
    else:  # placed by Accelerate: inputs go where the embeddings are
        dev = model.get_input_embeddings().weight.device
    model.eval()
    return model, tokenizer, dev, parts


def _placement(
    device_map: str | None,
    attn_implementation: str | None,
    quantization: str | None,
    torch_dtype: torch.dtype,
) -> dict[str, Any]:
    """``from_pretrained`` keywords for per-model placement and kernels."""
    kw: dict[str, Any] = {}
    if device_map is not None:
        kw["device_map"] = device_map
    if attn_implementation is not None:
        kw["attn_implementation"] = attn_implementation
    if quantization is not None:
        import importlib.util

        if importlib.util.find_spec("bitsandbytes") is None or not torch.cuda.is_available():
            raise BbiError(
                f"quantization={quantization} needs bitsandbytes and a CUDA GPU "
                "(pip install bitsandbytes)"
            )
        from transformers import BitsAndBytesConfig

        kw["quantization_config"] = (
            BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch_dtype)
            if quantization == "4bit"
            else BitsAndBytesConfig(load_in_8bit=True)
        )
        kw.setdefault("device_map", "auto")
    return kw


def _apply_adapter(model: Any, adapter: str, local_only: bool) -> tuple[Any, Any]:
    from peft import PeftModel

    adapter_dir = locate(adapter, "adapter")
    try:
        peft_model = PeftModel.from_pretrained(model, adapter, local_files_only=local_only)
    except pickle.UnpicklingError as exc:
        raise pickle_refusal(exc, adapter, "LoRA adapter") from None
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BbiError(f"cannot load LoRA adapter {adapter!r}: {first}") from None
    merged = peft_model.merge_and_unload()
    fp = dir_fingerprint(adapter_dir) if adapter_dir is not None else {"hub": adapter}
    return merged, fp


# ----------------------------------------------------------------------------- finishing
class TokenFinisher:
    """Token ids to a :class:`Generation`: cut at the first EOS or stop string, decode, and
    count the tokens the way every bbi backend does. Shared by the backends that decode
    token ids themselves (``hf:``, ``zoo:``, ``ct2:``) so their answers are cut alike.

    Needs ``tokenizer``, ``eos_ids`` and ``chat_format`` on the instance.
    """

    tokenizer: Any
    eos_ids: list[int]
    chat_format: str

    def encode_prompt(self, prompt: str) -> list[int]:
        """Token ids of the formatted prompt (chat template text already holds BOS)."""
        text, fmt = format_prompt(self.tokenizer, prompt)
        return self.tokenizer(text, add_special_tokens=fmt == PLAIN_FORMAT)["input_ids"]

    def _in_batches(
        self,
        encoded: list[list[int]],
        config: BbiGenerationConfig,
        seeds: list[int],
        progress: bool,
        run_batch: Any,
    ) -> list[Generation]:
        """``run_batch(encoded, config, seeds) -> [Generation]`` over batches of
        ``config.batch_size``, longest prompts first (similar lengths share a batch, so
        little padding, and running out of memory shows early); results in prompt order."""
        from rich.progress import track

        order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
        step = config.batch_size
        batches = [order[i : i + step] for i in range(0, len(order), step)]
        results: list[Generation | None] = [None] * len(encoded)
        name = getattr(self, "name", "model")
        for batch in track(
            batches, description=f"generating {name}", disable=not progress, transient=True
        ):
            outs = run_batch([encoded[i] for i in batch], config, [seeds[i] for i in batch])
            for i, g in zip(batch, outs, strict=True):
                results[i] = g
        return results  # type: ignore[return-value]

    def _has_stop(self, row: list[int], stops: tuple[str, ...]) -> bool:
        text = self._decode(row)
        return any(s in text for s in stops)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _finish(self, row: list[int], config: BbiGenerationConfig) -> Generation:
        cut = next((k for k, t in enumerate(row) if t in self.eos_ids), len(row))
        body = row[:cut]
        if config.stop:
            k = self._first_stop_prefix(body, config.stop)
            if k is not None:
                text = self._decode(body[:k])
                pos = min(text.find(s) for s in config.stop if s in text)
                return Generation(self._clean(text[:pos]), k, "stop")
        if cut < len(row):
            return Generation(self._clean(self._decode(body)), cut + 1, "stop")
        return Generation(self._clean(self._decode(body)), len(body), "length")

    def _first_stop_prefix(self, body: list[int], stops: tuple[str, ...]) -> int | None:
        """Smallest k such that decode(body[:k]) contains a stop string (binary search:
        containment is monotone in k because decoded prefixes only grow)."""

        def hit(k: int) -> bool:
            text = self._decode(body[:k])
            return any(s in text for s in stops)

        if not body or not hit(len(body)):
            return None
        lo, hi = 1, len(body)
        while lo < hi:
            mid = (lo + hi) // 2
            if hit(mid):
                hi = mid
            else:
                lo = mid + 1
        return lo

    def _clean(self, text: str) -> str:
        # The plain format separates "Assistant:" from the answer with whitespace.
        return text.lstrip() if self.chat_format == PLAIN_FORMAT else text


# ----------------------------------------------------------------------------- backend
@torch.inference_mode()
def decode_rows(
    model: Any,
    encoded: list[list[int]],
    seeds: list[int],
    *,
    pad_id: int,
    eos_ids: list[int],
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    do_sample: bool = True,
    device: torch.device | None = None,
    keeps_logits: bool = False,
    stop: Any = None,
) -> list[list[int]]:
    """The new token ids of each prompt (EOS included when drawn): prefill left-padded
    prompts, then decode with the KV cache, dropping rows from the batch (and the cache)
    as soon as they hit EOS or ``stop(row)``. Row i depends only on (prompt i, seeds[i]):
    the generation path of ``HFBackend``, usable on a model being trained (on-policy
    distillation samples through it)."""
    from transformers import DynamicCache

    dev = device or next(model.parameters()).device
    kw = {"logits_to_keep": 1} if keeps_logits else {}

    def forward(ids: torch.Tensor, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        out = model(
            input_ids=ids,
            attention_mask=mask,
            position_ids=pos,
            past_key_values=cache,
            use_cache=True,
            **kw,
        )
        return out.logits[:, -1, :].float()

    width = max(len(e) for e in encoded)
    ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for r, e in enumerate(encoded):
        if e:
            ids[r, width - len(e) :] = torch.tensor(e, dtype=torch.long)
            mask[r, width - len(e) :] = 1
    ids, mask = ids.to(dev), mask.to(dev)
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache(config=model.config)
    logits = forward(ids, mask, pos)
    next_pos = pos[:, -1] + 1
    sampler = SeededSampler(temperature, top_p, seeds, width) if do_sample else None
    rows: list[list[int]] = [[] for _ in encoded]
    active = list(range(len(encoded)))  # original row of each batch row
    eos = set(eos_ids)
    for step in range(max_new_tokens):
        if sampler is not None:
            tok = sampler.sample(logits, [seeds[r] for r in active], step)
        else:
            tok = logits.argmax(-1)
        keep = []
        for j, (r, t) in enumerate(zip(active, tok.tolist(), strict=True)):
            rows[r].append(t)
            if t not in eos and not (stop is not None and stop(rows[r])):
                keep.append(j)
        if not keep or step == max_new_tokens - 1:
            break
        if len(keep) < len(active):
            sel = torch.tensor(keep, device=dev)
            cache.batch_select_indices(sel)
            mask, tok, next_pos = mask[sel], tok[sel], next_pos[sel]
            active = [active[j] for j in keep]
        mask = torch.cat([mask, mask.new_ones((len(active), 1))], dim=1)
        logits = forward(tok[:, None], mask, next_pos[:, None])
        next_pos = next_pos + 1
    return rows


class HFBackend(TokenFinisher):
    """A transformers causal LM behind the Backend protocol."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        name: str,
        fingerprint: str,
        device: torch.device | None = None,
    ):
        self.model = model
        self.tokenizer = tokenizer
        self.name = name
        self.fingerprint = fingerprint
        self.device = device or next(model.parameters()).device
        self.chat_format = format_prompt(tokenizer, "x")[1]
        if tokenizer.pad_token_id is None:
            if tokenizer.eos_token_id is None:
                raise BbiError(f"model {name!r}: tokenizer has neither a pad nor an EOS token")
            tokenizer.pad_token = tokenizer.eos_token
        tokenizer.padding_side = "left"
        self.pad_id = int(tokenizer.pad_token_id)
        eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        import inspect

        self._keeps_logits = "logits_to_keep" in inspect.signature(model.forward).parameters
        self.eos_ids = sorted(
            {int(e) for e in (eos if isinstance(eos, list | tuple) else [eos]) if e is not None}
        )

    @classmethod
    def load(
        cls,
        spec: ModelSpec,
        *,
        device: str = "auto",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        allow_download: bool = False,
        **placement: Any,
    ) -> HFBackend:
        model, tok, dev, parts = load_hf_parts(
            spec,
            device=device,
            dtype=dtype,
            trust_remote_code=trust_remote_code,
            allow_download=allow_download,
            **placement,
        )
        return cls(model, tok, name=str(spec), fingerprint=digest(parts), device=dev)

    # -- prompts
    def count_prompt_tokens(self, prompt: str) -> int:
        return len(self.encode_prompt(prompt))

    # -- generation
    def generate(
        self,
        prompts: list[str],
        config: BbiGenerationConfig,
        seeds: list[int],
        progress: bool = False,
    ) -> list[Generation]:
        """One generation per prompt; row i depends only on (prompt i, config, seeds[i])."""
        check_generate_args(prompts, seeds)
        if not prompts:
            return []
        encoded = [self.encode_prompt(p) for p in prompts]
        return self._in_batches(encoded, config, seeds, progress, self._generate_batch)

    def _generate_batch(
        self, encoded: list[list[int]], config: BbiGenerationConfig, seeds: list[int]
    ) -> list[Generation]:
        """Prefill left-padded prompts, then decode with the KV cache (``decode_rows``)."""
        return [self._finish(row, config) for row in self._decode_batch(encoded, config, seeds)]

    def generate_ids(
        self,
        encoded: list[list[int]],
        config: BbiGenerationConfig,
        seeds: list[int],
        progress: bool = False,
    ) -> list[tuple[Generation, list[int]]]:
        """Continue token-id prompts (no chat template: raw completions): each
        :class:`Generation` with the ids of its ``n_tokens`` generated tokens. Same decoding
        path, cut and seeds as :meth:`generate`, so a chat prompt's ``encode_prompt`` ids
        give exactly ``generate``'s answer."""
        if len(encoded) != len(seeds):
            raise BbiError(f"got {len(encoded)} prompts but {len(seeds)} seeds; need one each")
        if any(not e for e in encoded):
            raise BbiError("a prompt must hold at least one token")
        if not encoded:
            return []

        def run(batch: list[list[int]], cfg: BbiGenerationConfig, sds: list[int]) -> list:
            out = []
            for row in self._decode_batch(batch, cfg, sds):
                g = self._finish(row, cfg)
                out.append((g, row[: g.n_tokens]))
            return out

        return self._in_batches(encoded, config, seeds, progress, run)  # type: ignore[return-value]

    def _decode_batch(
        self, encoded: list[list[int]], config: BbiGenerationConfig, seeds: list[int]
    ) -> list[list[int]]:
        return decode_rows(
            self.model,
            encoded,
            seeds,
            pad_id=self.pad_id,
            eos_ids=self.eos_ids,
            max_new_tokens=config.max_new_tokens,
            temperature=config.temperature,
            top_p=config.top_p,
            do_sample=config.do_sample,
            device=self.device,
            keeps_logits=self._keeps_logits,
            stop=(lambda row: self._has_stop(row, config.stop)) if config.stop else None,
        )

    # -- scoring
    @torch.inference_mode()
    def score(self, prompts: list[str], texts: list[str], batch_size: int = 8) -> list[TokenScores]:
        """Teacher-forced logprob, entropy and rank of each response token given the prompt.

        The response is tokenised exactly as distillation trains on it (bbi.chat.response_suffix,
        without EOS), after the same prompt ids generation uses.
        """
        if len(prompts) != len(texts):
            raise BbiError(f"got {len(prompts)} prompts but {len(texts)} texts")
        items = []
        for p, t in zip(prompts, texts, strict=True):
            p_ids = self.encode_prompt(p)
            r_ids = (
                self.tokenizer(
                    response_suffix(self.chat_format, t, None), add_special_tokens=False
                )["input_ids"]
                if t
                else []
            )
            items.append((p_ids, r_ids))
        order = sorted(range(len(items)), key=lambda i: -sum(map(len, items[i])))
        results: list[TokenScores] = [TokenScores() for _ in items]
        for start in range(0, len(order), batch_size):
            batch = [i for i in order[start : start + batch_size] if items[i][1]]
            if not batch:
                continue
            width = max(len(items[i][0]) + len(items[i][1]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(batch):  # right padding: positions start at 0 as in training
                seq = items[i][0] + items[i][1]
                ids[r, : len(seq)] = torch.tensor(seq)
                mask[r, : len(seq)] = 1
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits
            for r, i in enumerate(batch):
                p_len, r_len = len(items[i][0]), len(items[i][1])
                lg = logits[r, p_len - 1 : p_len - 1 + r_len].float()
                logp = torch.log_softmax(lg, dim=-1)
                tgt = torch.tensor(items[i][1], device=lg.device)
                tok_lp = logp.gather(1, tgt[:, None])[:, 0]
                ent = -(logp.exp() * logp).sum(-1)
                rank = (lg > lg.gather(1, tgt[:, None])).sum(-1) + 1
                results[i] = TokenScores(tok_lp.tolist(), ent.tolist(), rank.tolist())
        return results

    # -- tokens and log-probabilities (bbi serve's /v1/completions and logprobs)
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of raw text (no chat template), with BOS etc. when asked."""
        return list(self.tokenizer(text, add_special_tokens=add_special_tokens)["input_ids"])

    def decode(self, ids: list[int]) -> str:
        """The text of token ids, special tokens kept (an echoed prompt reads as sent)."""
        return self.tokenizer.decode(ids)

    def token_strings(self, ids: list[int]) -> list[str]:
        """Each token's own text (what OpenAI-style log-probabilities call a token)."""
        return [self.tokenizer.decode([int(i)]) for i in ids]

    @property
    def vocab_size(self) -> int:
        """Rows of the output layer: token ids a request may hold are below it."""
        return int(self.model.get_output_embeddings().weight.shape[0])

    @torch.inference_mode()
    def prompt_logprobs(
        self, sequences: list[list[int]], k: int, batch_size: int = 8, batch_tokens: int = 8192
    ) -> list[PromptLogprobs]:
        """Top-``k`` log-probabilities at every position of token sequences, teacher
        forced: one forward pass per batch of right-padded sequences (positions from 0, as
        in training; at most ``batch_size`` sequences and, beyond one, ``batch_tokens``
        padded positions, since every position's logits are kept), log-softmax in float32
        over the whole output layer."""
        if k < 0:
            raise BbiError(f"k must be >= 0, got {k}")
        results: list[PromptLogprobs] = [PromptLogprobs() for _ in sequences]
        order = [
            i for i in sorted(range(len(sequences)), key=lambda i: -len(sequences[i]))
            if len(sequences[i]) > 1
        ]  # fmt: skip
        batches: list[list[int]] = []
        for i in order:  # longest first: a batch's width is its first sequence's length
            b = batches[-1] if batches else None
            if b and len(b) < batch_size and (len(b) + 1) * len(sequences[b[0]]) <= batch_tokens:
                b.append(i)
            else:
                batches.append([i])
        for batch in batches:
            width = max(len(sequences[i]) for i in batch)
            ids = torch.full((len(batch), width), self.pad_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for r, i in enumerate(batch):
                ids[r, : len(sequences[i])] = torch.tensor(sequences[i], dtype=torch.long)
                mask[r, : len(sequences[i])] = 1
            logits = self.model(
                input_ids=ids.to(self.device), attention_mask=mask.to(self.device)
            ).logits
            for r, i in enumerate(batch):
                n = len(sequences[i])
                lp = torch.log_softmax(logits[r, : n - 1].float(), dim=-1)
                tgt = ids[r, 1:n].to(lp.device)[:, None]
                tok = lp.gather(1, tgt)
                rank = (lp > tok).sum(-1) + 1
                values, top = lp.topk(min(k, lp.size(-1)), dim=-1)
                results[i] = PromptLogprobs(
                    top.tolist(), values.tolist(), tok[:, 0].tolist(), rank.tolist()
                )
        return results

    def close(self) -> None:
        self.model = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_hf_backend(
    spec: ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_download: bool = False,
    device_map: str | None = None,
    attn_implementation: str | None = None,
    quantization: str | None = None,
    **_: Any,
) -> HFBackend:
    """Registry entry for ``hf:`` specs."""
    return HFBackend.load(
        spec,
        device=device,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_download=allow_download,
        device_map=device_map,
        attn_implementation=attn_implementation,
        quantization=quantization,
    )


def load_hf_weights(
    spec: ModelSpec, *, device: str = "auto", dtype: str = "auto", **options: Any
) -> tuple[Any, Any, torch.device, str]:
    """The ``weights`` capability of ``hf:``: (model, tokenizer, device, fingerprint)."""
    model, tok, dev, parts = load_hf_parts(spec, device=device, dtype=dtype, **options)
    return model, tok, dev, digest(parts)


__all__ = [
    "decode_rows",
    "HFBackend",
    "SeededSampler",
    "TokenFinisher",
    "dir_fingerprint",
    "load_hf_backend",
    "load_hf_parts",
    "load_hf_weights",
    "register_architectures",
    "resolve_device",
    "resolve_dtype",
]
