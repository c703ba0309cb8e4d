"""vLLM offline engine (optional extra; GPU, or its CPU build): ``vllm:org/name[@revision]`` or ``vllm:./dir``.

Prompts are formatted by bbi.chat exactly as the HF backend does and passed as token
ids, so the two backends see the same inputs.

Fingerprint. vLLM loads the same Hugging Face checkpoint format as ``hf:``, so the
fingerprint is computed from the same things, without an engine
(``bbi.backends.kinds.fingerprint_vllm``): the weight/config/tokenizer file hashes of a
local directory, or ``id@commit`` of a snapshot already in the Hugging Face cache. It is
the hf: fingerprint of the same checkpoint tagged with the backend
(``vllm_fingerprint(hf_fp)``): vLLM samples with its own RNG and kernels, so its answers
are never served from, or into, the hf: cache entries of the same weights.

Downloads. Like every bbi backend, vLLM downloads nothing unless ``allow_download=True``:
otherwise a hub id must already be in the Hugging Face cache (a one-line error if not),
the engine is given the local snapshot directory, and ``HF_HUB_OFFLINE=1`` is set while
it starts. With ``allow_download=True`` vLLM fetches what is missing (HF_HUB_OFFLINE
set by the user still wins).

Engine options (``load_backend(spec, **opts)`` / ``--teacher-args``): ``dtype``,
``tensor_parallel_size``, ``gpu_memory_utilization``, ``kv_cache_memory_bytes``,
``max_model_len``, ``max_num_batched_tokens``, ``max_num_seqs``,
``enable_chunked_prefill``, ``quantization``, ``enforce_eager``, ``seed``; they go to
``vllm.LLM(...)`` as given. Anything else is a one-line error listing these.

vLLM's CPU build (``vllm.platforms.current_platform.is_cpu()``) gets defaults that make it
work out of the box and agree with ``hf:`` (:func:`cpu_engine_options`): float32 for
``dtype auto``, ``enforce_eager``, no chunked prefill (with per-request seeds it fails on
CPU), and a KV cache sized in bytes (``gpu_memory_utilization`` would mean a share of host
RAM there, so it is refused). An engine that fails to start, or dies while generating, is
a one-line error, and its worker processes are reaped.

Seeded sampling and its limits. Each request carries its own seed,
``SamplingParams(seed=request_seed)`` (None for greedy), so the random draws of a
response do not depend on the other requests in the engine's batch. The *logits* they
are drawn from still can: on a GPU, vLLM's kernels (matmul/attention reduction order,
chunked prefill, prefix caching, CUDA graphs per batch size) give slightly different
numbers for different batch compositions, and a near-tie can then flip a token. vLLM is
batch-invariant only with its batch-invariant kernels (``VLLM_BATCH_INVARIANT=1``, a
beta feature that needs a recent GPU). bbi's response cache key does not include the
batch size or the other prompts, so without those kernels a regenerated vLLM response
may differ from a cached one in rare tokens; the hf: backend has no such caveat on one
device (its sampler and padding are batch-independent by construction).

Lifecycle. One engine per spec and options per ``bbi probe run`` (bbi.probe_run shares
it between, e.g., the teacher and its A/A resample). ``close()`` frees the GPU: it shuts
the engine down, drops it, runs vLLM's distributed cleanup, ``gc.collect()`` and
``torch.cuda.empty_cache()``, then waits for the engine's worker processes to exit
(terminating them if they do not), so none is left as a zombie.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bbi.backends.base import Generation, GenerationConfig, TokenScores, check_generate_args
from bbi.chat import PLAIN_FORMAT, format_prompt
from bbi.errors import BbiError
from bbi.specs import ModelSpec

# Options a caller may pass on to vllm.LLM(...), with their types.
ENGINE_OPTIONS: dict[str, type] = {
    "dtype": str,
    "enable_chunked_prefill": bool,
    "enforce_eager": bool,
    "gpu_memory_utilization": float,
    "kv_cache_memory_bytes": int,
    "max_model_len": int,
    "max_num_batched_tokens": int,
    "max_num_seqs": int,
    "quantization": str,
    "seed": int,
    "tensor_parallel_size": int,
}
# vLLM's CPU build: the KV cache it reserves when none is given (gpu_memory_utilization
# would mean a share of host RAM there), at most a quarter of the machine's memory.
CPU_KV_CACHE_BYTES = 4 << 30
VLLM_DTYPES = ("auto", "half", "float16", "bfloat16", "float", "float32")
_OFFLINE_VARS = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
# Exceptions vLLM raises from generate when its engine process is gone.
ENGINE_FAILURES = ("EngineDeadError", "EngineGenerateError")


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise BbiError("the vllm: backend needs vLLM: install bbi[vllm] on a GPU machine") from None
    return vllm


def check_engine_options(opts: dict[str, Any]) -> dict[str, Any]:
    """``opts`` validated against ENGINE_OPTIONS (ints accepted for floats); BbiError else."""
    allowed = ", ".join(sorted(ENGINE_OPTIONS))
    out: dict[str, Any] = {}
    for key, value in opts.items():
        want = ENGINE_OPTIONS.get(key)
        if want is None:
            raise BbiError(f"vllm: unknown engine option {key!r} (allowed: {allowed})")
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, want) or (want is not bool and isinstance(value, bool)):
            raise BbiError(f"vllm: {key} must be a {want.__name__}, got {value!r}")
        out[key] = value
    if out.get("dtype", "auto").lower() not in VLLM_DTYPES:
        raise BbiError(f"vllm: unknown dtype {out['dtype']!r}; use one of {', '.join(VLLM_DTYPES)}")
    if out.get("tensor_parallel_size", 1) < 1:
        raise BbiError("vllm: tensor_parallel_size must be >= 1")
    if not 0.0 < out.get("gpu_memory_utilization", 0.9) <= 1.0:
        raise BbiError("vllm: gpu_memory_utilization must be in (0, 1]")
    for key in ("max_model_len", "max_num_batched_tokens", "max_num_seqs", "kv_cache_memory_bytes"):
        if out.get(key, 1) < 1:
            raise BbiError(f"vllm: {key} must be >= 1")
    if out.get("seed", 0) < 0:
        raise BbiError("vllm: seed must be >= 0")
    return out


def on_cpu(vllm: Any) -> bool:
    """Whether this vLLM is its CPU build (``vllm.platforms.current_platform``)."""
    try:
        from vllm.platforms import current_platform
    except ImportError:
        return False
    is_cpu = getattr(current_platform, "is_cpu", None)
    return bool(is_cpu()) if callable(is_cpu) else False


def host_memory_bytes() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def cpu_engine_options(opts: dict[str, Any]) -> dict[str, Any]:
    """vLLM's CPU build, made to work out of the box and to match ``hf:``:

    - ``dtype auto`` is float32 (``hf:``'s on CPU; vLLM's auto is bfloat16 there);
    - ``enforce_eager`` (no minutes of compilation per start for a few percent);
    - no chunked prefill: with per-request seeds it fails on CPU ("CPU Generator does
      not use offset"), and bbi seeds every sampled request;
    - the KV cache is sized in bytes (``kv_cache_memory_bytes``): ``gpu_memory_utilization``
      would reserve that share of host RAM, so it is refused.
    Options the caller gave win, except ``gpu_memory_utilization``."""
    if "gpu_memory_utilization" in opts:
        raise BbiError(
            "vllm: on vLLM's CPU build gpu_memory_utilization is a share of host RAM; "
            "size the KV cache with kv_cache_memory_bytes instead"
        )
    out = dict(opts)
    if out.get("dtype", "auto").lower() == "auto":
        out["dtype"] = "float32"
    out.setdefault("enforce_eager", True)
    out.setdefault("enable_chunked_prefill", False)
    if "kv_cache_memory_bytes" not in out:
        total = host_memory_bytes()
        out["kv_cache_memory_bytes"] = min(CPU_KV_CACHE_BYTES, total // 4 if total else 1 << 62)
    return out


def one_line(exc: BaseException) -> str:
    """An exception as one line: its last non-empty line (where tracebacks put the
    cause), else its type's name."""
    lines = [ln.strip() for ln in str(exc).strip().splitlines() if ln.strip()]
    return f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__


def _children() -> set[Any]:
    import multiprocessing

    return set(multiprocessing.active_children())


def reap(processes: set[Any], timeout: float = 10.0) -> None:
    """Wait for an engine's worker processes to exit (then terminate, then kill): no
    zombie and no orphan is left after close()."""
    for proc in processes:
        with contextlib.suppress(Exception):
            proc.join(timeout)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout)


@contextlib.contextmanager
def _hub_offline(offline: bool) -> Iterator[None]:
    """HF_HUB_OFFLINE=1 (and TRANSFORMERS_OFFLINE=1) while the engine starts, then restored.

    Set before vLLM starts its engine processes, so they inherit it."""
    if not offline:
        yield
        return
    saved = {k: os.environ.get(k) for k in _OFFLINE_VARS}
    os.environ.update({k: "1" for k in _OFFLINE_VARS})
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _cached_snapshot(spec: ModelSpec) -> Path:
    """The local snapshot directory of a hub id in the Hugging Face cache (no network)."""
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(spec.name_or_path, revision=spec.revision, local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - any lookup failure means "not cached"
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BbiError(
            f"model {spec.name_or_path!r} is not a local directory and is not in the Hugging "
            f"Face cache ({first}); download it, or pass allow_download=true"
        ) from None
    return Path(path)


class VLLMBackend:
    """Backend over ``vllm.LLM``; generation only (scoring: use an hf: spec)."""

    def __init__(
        self,
        spec: ModelSpec,
        *,
        dtype: str = "auto",
        trust_remote_code: bool = False,
        allow_download: bool = False,
        **engine_opts: Any,
    ):
        from bbi.backends.kinds import fingerprint_vllm
        from bbi.hub import local_files_only, locate

        vllm = _import_vllm()
        self.vllm = vllm
        self.name = str(spec)
        self.engine_options = check_engine_options({"dtype": dtype, **engine_opts})
        if on_cpu(vllm):
            self.engine_options = cpu_engine_options(self.engine_options)
        self._processes: set[Any] = set()
        # From the files, before any engine starts: an unavailable model fails here, fast.
        self.fingerprint = fingerprint_vllm(
            spec, trust_remote_code=trust_remote_code, allow_download=allow_download
        )
        local = locate(spec.name_or_path, "model")
        offline = local_files_only(allow_download)
        if local is not None:
            model, revision = str(local), None
        elif offline:
            model, revision = str(_cached_snapshot(spec)), None
        else:
            model, revision = spec.name_or_path, spec.revision
        before = _children()
        self.llm = None
        try:
            with _hub_offline(not allow_download):
                self.llm = vllm.LLM(
                    model=model,
                    revision=revision,
                    tokenizer_revision=revision,
                    trust_remote_code=trust_remote_code,
                    **self.engine_options,
                )
        except (KeyboardInterrupt, SystemExit):
            reap(_children() - before, timeout=2.0)
            raise
        except Exception as exc:  # noqa: BLE001 - vLLM's start fails in many types
            # (RuntimeError "Engine core initialization failed", ValueError, OSError, ...):
            # one line, not the engine processes' tracebacks, and no process left behind.
            reap(_children() - before, timeout=2.0)
            raise BbiError(f"vLLM cannot start {spec.name_or_path!r}: {one_line(exc)}") from None
        self._processes = _children() - before
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_format = format_prompt(self.tokenizer, "x")[1]

    def generate(
        self, prompts: list[str], config: GenerationConfig, seeds: list[int], progress: bool = False
    ) -> list[Generation]:
        check_generate_args(prompts, seeds)
        if not prompts:
            return []
        if self.llm is None:
            raise BbiError(f"{self.name}: the vLLM engine was closed")
        inputs = []
        for p in prompts:
            text, fmt = format_prompt(self.tokenizer, p)
            ids = self.tokenizer(text, add_special_tokens=fmt == PLAIN_FORMAT)["input_ids"]
            inputs.append({"prompt_token_ids": ids})
        params = [
            self.vllm.SamplingParams(
                n=1,
                temperature=float(config.temperature),
                top_p=float(config.top_p) if config.do_sample else 1.0,
                max_tokens=config.max_new_tokens,
                stop=list(config.stop) or None,
                # Per-request seed: the draws of a response do not depend on its batch.
                seed=int(s) if config.do_sample else None,
            )
            for s in seeds
        ]
        try:
            outs = self.llm.generate(inputs, params, use_tqdm=progress)
        except Exception as exc:  # noqa: BLE001 - EngineDeadError and its kin
            if type(exc).__name__ not in ENGINE_FAILURES and not isinstance(exc, RuntimeError):
                raise
            raise BbiError(f"{self.name}: the vLLM engine failed: {one_line(exc)}") from None
        result = []
        for out in outs:
            c = out.outputs[0]
            text = c.text.lstrip() if self.chat_format == PLAIN_FORMAT else c.text
            finish = "length" if c.finish_reason == "length" else "stop"
            result.append(Generation(text, len(c.token_ids), finish))
        return result

    def score(self, prompts: list[str], texts: list[str]) -> list[TokenScores]:
        raise BbiError(f"{self.name}: scoring is not supported on vllm:; use the hf: spec")

    def close(self) -> None:
        """Free the engine and its GPU memory (idempotent)."""
        llm, self.llm = getattr(self, "llm", None), None
        if llm is None:
            return
        # vLLM V1: the engine core runs in its own process; stop it before dropping it.
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        shutdown = getattr(core, "shutdown", None)
        if callable(shutdown):
            with contextlib.suppress(Exception):
                shutdown()
        del llm, core, shutdown
        self.tokenizer = None
        gc.collect()
        release_vllm_memory()
        processes, self._processes = getattr(self, "_processes", set()), set()
        reap(processes)


def release_vllm_memory() -> None:
    """vLLM's documented cleanup after an engine is dropped, then gc and the CUDA cache.

    ``cleanup_dist_env_and_memory`` where this vLLM has it (it tears down model-parallel
    groups and the distributed environment), else ``destroy_model_parallel`` and
    ``destroy_distributed_environment`` one by one. Every step is best effort."""
    try:
        from vllm.distributed import parallel_state
    except ImportError:
        parallel_state = None
    cleanup = getattr(parallel_state, "cleanup_dist_env_and_memory", None)
    steps = (
        [cleanup]
        if callable(cleanup)
        else [
            getattr(parallel_state, name, None)
            for name in ("destroy_model_parallel", "destroy_distributed_environment")
        ]
    )
    for step in steps:
        if callable(step):
            with contextlib.suppress(Exception):
                step()
    gc.collect()
    with contextlib.suppress(Exception):
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def load_vllm_backend(
    spec: ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    allow_download: bool = False,
    **opts: Any,
) -> VLLMBackend:
    """Registry entry for ``vllm:`` specs; ``opts`` are engine options (ENGINE_OPTIONS).

    ``device`` is not a vLLM option: pick GPUs with CUDA_VISIBLE_DEVICES and
    ``tensor_parallel_size``."""
    if not isinstance(allow_download, bool):
        raise BbiError(f"vllm: allow_download must be a bool, got {allow_download!r}")
    return VLLMBackend(
        spec,
        dtype=dtype,
        trust_remote_code=trust_remote_code,
        allow_download=allow_download,
        **check_engine_options(opts),
    )
