"""vLLM offline engine (optional extra, GPU): ``vllm:org/name[@revision]``.

Prompts are formatted by bbi.chat exactly as the HF backend does and passed as token
ids, so the two backends see the same inputs. vLLM's per-request ``seed`` keeps samples
independent of batching.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bbi.backends.base import Generation, GenerationConfig, TokenScores, check_generate_args
from bbi.chat import PLAIN_FORMAT, format_prompt
from bbi.errors import BbiError
from bbi.specs import ModelSpec


def _import_vllm() -> Any:
    try:
        import vllm
    except ImportError:
        raise BbiError("the vllm: backend needs vLLM: install bbi[vllm] on a GPU machine") from None
    return vllm


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
        from bbi.backends.hf import _digest, _locate, dir_fingerprint

        vllm = _import_vllm()
        self.vllm = vllm
        self.name = str(spec)
        local = _locate(spec.name_or_path, "model")
        try:
            self.llm = vllm.LLM(
                model=spec.name_or_path,
                revision=spec.revision,
                dtype=dtype,
                trust_remote_code=trust_remote_code,
                **engine_opts,
            )
        except (OSError, ValueError) as exc:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise BbiError(f"vLLM cannot load {spec.name_or_path!r}: {msg}") from None
        self.tokenizer = self.llm.get_tokenizer()
        self.chat_format = format_prompt(self.tokenizer, "x")[1]
        if local is not None:
            parts: dict = {"files": dir_fingerprint(local)}
        else:
            parts = {"hub": f"{spec.name_or_path}@{_hub_commit(spec) or spec.revision or 'main'}"}
        self.fingerprint = _digest(parts)

    def generate(
        self, prompts: list[str], config: GenerationConfig, seeds: list[int], progress: bool = False
    ) -> list[Generation]:
        check_generate_args(prompts, seeds)
        if not prompts:
            return []
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
                seed=int(s) if config.do_sample else None,
            )
            for s in seeds
        ]
        outs = self.llm.generate(inputs, params, use_tqdm=progress)
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
        self.llm = None


def _hub_commit(spec: ModelSpec) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache

        path = try_to_load_from_cache(spec.name_or_path, "config.json", revision=spec.revision)
    except Exception:  # noqa: BLE001 - best effort: the fingerprint falls back to the revision
        return None
    if isinstance(path, str):
        parts = Path(path).parts
        if "snapshots" in parts:
            return parts[parts.index("snapshots") + 1]
    return None


def load_vllm_backend(
    spec: ModelSpec,
    *,
    device: str = "auto",
    dtype: str = "auto",
    trust_remote_code: bool = False,
    **opts: Any,
) -> VLLMBackend:
    """Registry entry for ``vllm:`` specs; engine options pass through (e.g. max_model_len)."""
    engine = {
        k: v
        for k, v in opts.items()
        if k in {"gpu_memory_utilization", "max_model_len", "tensor_parallel_size", "seed"}
    }
    return VLLMBackend(spec, dtype=dtype, trust_remote_code=trust_remote_code, **engine)
