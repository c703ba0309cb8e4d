"""CTranslate2 engine: ``ct2:zoo:smollm2``, ``ct2:hf:./dir``: an hf:/zoo: model, run by
CTranslate2's C++ decoder instead of transformers.

Why. On a CPU, bbi's generation time is the cost of every prompt in a run (four models
answer each one). CTranslate2 runs the same Llama/Qwen2/Mistral checkpoints with fused
C++ kernels, an int8 GEMM (weights quantised per output channel, activations per row)
and a KV cache it manages itself; benchmarks/bench_engine.py measures it against batched
``model.generate`` and checks, with bbi's own attack, that its samples come from the same
distribution as ``hf:``'s.

Spec. ``ct2:`` wraps any spec whose backend loads local weights (``hf:``, ``zoo:``, with
their ``@revision`` and ``+lora:`` parts): the wrapped model is converted once, on first
use, into ``$BBI_CACHE_DIR/ct2/<weights fingerprint>-<compute type>-<ctranslate2
version>/`` (atomic and locked, ``bbi.hub.locked_build``), so a changed checkpoint or
engine gets its own directory and nothing is ever converted twice.

Arguments: ``compute_type`` (``int8``, the default, or ``float32``, ``int8_float32``;
on CUDA also ``float16``, ``bfloat16``, ``int8_float16``), ``threads`` (CPU threads;
0 = CTranslate2's default), ``device`` (``auto``/``cpu``/``cuda``). The run's ``dtype``
does not apply: the precision is ``compute_type``, and it is part of the fingerprint, so
``ct2:`` answers never share cache entries with ``hf:``'s, nor int8 answers with float32's.

Prompts are formatted by bbi.chat exactly as ``hf:`` formats them and handed over as
token ids; answers are cut at EOS and stop strings by the same code as ``hf:``
(:class:`bbi.backends.hf.TokenFinisher`). Sampling is CTranslate2's (temperature, then
top-p over the full vocabulary).

Seeds. CTranslate2 has one random generator per process, not one per request, so a
sampled answer depends on its seed *and on its batch*: bbi seeds the generator from the
seeds of each batch (prompts sorted by length, then cut into ``batch_size`` chunks, as
``hf:`` does). The same prompts, seeds and batch size give the same answers; the same
prompt and seed in another batch gives another sample from the same distribution (the
caveat vLLM has on GPUs, and unlike ``hf:``, whose sampler is batch-independent).
Greedy decoding has no such caveat.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from bbi.backends.base import Generation, GenerationConfig, TokenScores, check_generate_args
from bbi.backends.hf import TokenFinisher
from bbi.backends.kinds import (
    CPU_COMPUTE_TYPES,
    CT2_COMPUTE_TYPES,
    CT2_DEFAULT_COMPUTE_TYPE,
    ct2_engine_version,
    ct2_fingerprint,
    ct2_inner,
)
from bbi.errors import BbiError
from bbi.hub import cache_root, locked_build
from bbi.specs import ModelSpec

INSTALL = "pip install bbi[ct2]"
RECORD = "bbi-ct2.json"
RECORD_VERSION = 1


# ----------------------------------------------------------------------------- conversion
def _import_ct2() -> Any:
    try:
        import ctranslate2
    except ImportError:
        raise BbiError(
            f"the ct2: backend needs CTranslate2 ({INSTALL}); or use the hf:/zoo: spec"
        ) from None
    return ctranslate2


def converted_dir(weights: str, compute_type: str) -> Path:
    """Where the converted model of these weights and precision lives (content-keyed)."""
    return cache_root() / "ct2" / f"{weights}-{compute_type}-{ct2_engine_version()}"


def convert(inner: ModelSpec, weights: str, compute_type: str, **load: Any) -> Path:
    """Convert the wrapped model once (atomic, locked); the directory of the result."""
    final = converted_dir(weights, compute_type)

    def build(tmp: Path) -> None:
        ctranslate2 = _import_ct2()
        model, tokenizer, _, fp = inner.backend.parts_loader()(
            inner, device="cpu", dtype="float32", **load
        )  # a LoRA adapter comes merged
        if fp != weights:  # the files changed between fingerprinting and loading
            raise BbiError(f"{inner}: its files changed while it was being converted; retry")
        src = tmp / "hf"
        model.save_pretrained(src)
        tokenizer.save_pretrained(src)
        out = tmp / "model"
        try:
            ctranslate2.converters.TransformersConverter(str(src), low_cpu_mem_usage=True).convert(
                str(out), quantization=compute_type
            )
        except (ValueError, NotImplementedError, KeyError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BbiError(f"CTranslate2 cannot convert {inner}: {first}") from None
        tokenizer.save_pretrained(out)
        _fill_special_tokens(out / "config.json", tokenizer)
        eos = getattr(model.generation_config, "eos_token_id", None)
        if eos is None:
            eos = tokenizer.eos_token_id
        eos_ids = sorted(
            {int(e) for e in (eos if isinstance(eos, list | tuple) else [eos]) if e is not None}
        )
        import shutil

        shutil.rmtree(src)
        record = {
            "version": RECORD_VERSION,
            "source": str(inner),
            "weights": weights,
            "compute_type": compute_type,
            "ctranslate2": ct2_engine_version(),
            "eos_ids": eos_ids,
        }
        (tmp / RECORD).write_text(json.dumps(record, indent=2) + "\n")

    return locked_build(final, lambda: (final / RECORD).is_file(), build)


def _fill_special_tokens(config: Path, tokenizer: Any) -> None:
    """CTranslate2 refuses a model config whose BOS/UNK token is null (a tokenizer without
    them, e.g. the zoo's); bbi hands it whole prompts, so the EOS token stands in."""
    data = json.loads(config.read_text())
    eos = data.get("eos_token") or tokenizer.eos_token
    for key in ("bos_token", "eos_token", "unk_token"):
        if data.get(key) is None:
            data[key] = eos
    config.write_text(json.dumps(data, indent=2) + "\n")


# ----------------------------------------------------------------------------- backend
def _batch_seed(seeds: list[int]) -> int:
    """The engine's seed for one batch: a stable mix of its requests' seeds."""
    raw = hashlib.blake2b(json.dumps(seeds).encode(), digest_size=4).digest()
    return int.from_bytes(raw, "little")


class CT2Backend(TokenFinisher):
    """A CTranslate2 ``Generator`` behind the Backend protocol (generation only)."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        device: str = "auto",
        compute_type: str = CT2_DEFAULT_COMPUTE_TYPE,
        threads: int = 0,
        trust_remote_code: bool = False,
        **load: Any,
    ):
        from transformers import AutoTokenizer

        from bbi.chat import format_prompt

        ctranslate2 = _import_ct2()
        self.ctranslate2 = ctranslate2
        self.name = str(spec)
        inner = ct2_inner(spec)
        dev = _ct2_device(device, ctranslate2)
        allowed = CT2_COMPUTE_TYPES if dev == "cuda" else CPU_COMPUTE_TYPES
        if compute_type not in allowed:
            raise BbiError(
                f"{self.name}: compute_type {compute_type!r} is not available on {dev} "
                f"(use one of {', '.join(allowed)})"
            )
        weights = inner.backend.fingerprint(inner, trust_remote_code=trust_remote_code)
        self.fingerprint = ct2_fingerprint(weights, compute_type)
        self.compute_type = compute_type
        if inner.kind == "zoo":
            load = {k: v for k, v in load.items() if k in ("zoo_config", "progress")}
        else:
            load = {k: v for k, v in load.items() if k == "allow_download"}
            load["trust_remote_code"] = trust_remote_code
        root = convert(inner, weights, compute_type, **load)
        record = json.loads((root / RECORD).read_text())
        self._engine_args = dict(
            model_path=str(root / "model"),
            device=dev,
            compute_type=compute_type,
            intra_threads=int(threads),
        )
        self.generator = self._new_generator()
        self.tokenizer = AutoTokenizer.from_pretrained(str(root / "model"))
        self.eos_ids = [int(e) for e in record["eos_ids"]]
        self.chat_format = format_prompt(self.tokenizer, "x")[1]

    def _new_generator(self) -> Any:
        try:
            return self.ctranslate2.Generator(**self._engine_args)
        except (RuntimeError, ValueError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BbiError(f"CTranslate2 cannot load {self.name}: {first}") from None

    def generate(
        self,
        prompts: list[str],
        config: GenerationConfig,
        seeds: list[int],
        progress: bool = False,
    ) -> list[Generation]:
        """One generation per prompt (batches of ``config.batch_size``, longest first)."""
        check_generate_args(prompts, seeds)
        if not prompts:
            return []
        if self.generator is None:
            raise BbiError(f"{self.name}: the CTranslate2 engine was closed")
        encoded = [self.encode_prompt(p) for p in prompts]

        def run_batch(enc: list[list[int]], cfg: Any, sd: list[int]) -> list[Generation]:
            return [self._finish(row, cfg) for row in self._generate_batch(enc, cfg, sd)]

        return self._in_batches(encoded, config, seeds, progress, run_batch)

    def _generate_batch(
        self, encoded: list[list[int]], config: GenerationConfig, seeds: list[int]
    ) -> list[list[int]]:
        """New token ids of each row, up to and including its EOS."""
        tokens = [self.tokenizer.convert_ids_to_tokens(e) for e in encoded]
        generator = self.generator
        if config.do_sample:
            # The engine's random generator is per worker thread, seeded once from the
            # process-wide seed when that thread first samples: a fresh engine (new worker
            # thread, the weights reloaded in well under a second) after set_random_seed is
            # the one way to make a batch's draws a function of its seeds.
            self.ctranslate2.set_random_seed(_batch_seed(seeds))
            generator = self._new_generator()
            sampling = dict(
                sampling_topk=0,  # the full vocabulary, cut by top-p
                sampling_topp=float(config.top_p),
                sampling_temperature=float(config.temperature),
            )
        else:
            sampling = dict(sampling_topk=1)
        try:
            out = generator.generate_batch(
                tokens,
                max_length=config.max_new_tokens,
                include_prompt_in_result=False,
                end_token=self.eos_ids,
                return_end_token=True,
                **sampling,
            )
        except RuntimeError as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise BbiError(f"{self.name}: CTranslate2 failed: {first}") from None
        return [list(r.sequences_ids[0])[: config.max_new_tokens] for r in out]

    def score(self, prompts: list[str], texts: list[str]) -> list[TokenScores]:
        raise BbiError(f"{self.name}: scoring is not supported on ct2:; use the wrapped spec")

    def close(self) -> None:
        generator, self.generator = getattr(self, "generator", None), None
        if generator is not None:
            del generator


def _ct2_device(device: str, ctranslate2: Any) -> str:
    device = (device or "auto").strip().lower()
    if device == "auto":
        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    if device in ("cpu", "cuda"):
        if device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
            raise BbiError("ct2: device 'cuda' requested but CTranslate2 sees no CUDA device")
        return device
    raise BbiError(f"ct2: unknown device {device!r}; use auto, cpu or cuda")


def load_ct2_backend(
    spec: ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    compute_type: str = CT2_DEFAULT_COMPUTE_TYPE,
    threads: int = 0,
    **load: Any,
) -> CT2Backend:
    """Registry entry for ``ct2:`` specs. ``dtype`` (the run's) is not used: the precision
    is ``compute_type``. Other keywords (e.g. ``zoo_config``) go to the wrapped loader."""
    return CT2Backend(
        spec,
        device=device,
        compute_type=compute_type,
        threads=threads,
        trust_remote_code=trust_remote_code,
        **load,
    )


__all__ = ["CT2Backend", "convert", "converted_dir", "load_ct2_backend"]
