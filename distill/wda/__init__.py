"""Wave-Density Attention: a causal, sparse-routed, wave-kernel attention layer.

See ``distill.wda.attention`` for the math and the design decisions, and
``distill.wda.student`` for the transplanted student (its names load lazily here, so the
attention layer alone does not import transformers).
"""

from typing import Any

from distill.wda.attention import WaveDensityAttention, WDACache, WDAConfig

_STUDENT = (
    "FusedWDAAttention",
    "WDALlamaConfig",
    "WDALlamaForCausalLM",
    "WDAQwen2Config",
    "WDAQwen2ForCausalLM",
    "drop_teacher",
    "freeze_teacher",
    "load_wda_student",
    "register_wda",
    "residual_stream",
    "routing_stats",
    "set_teacher_scale",
    "set_temperature",
    "set_wda_scale",
    "transplant",
)


def __getattr__(name: str) -> Any:
    if name in _STUDENT:
        from distill.wda import student

        return getattr(student, name)
    raise AttributeError(f"module 'distill.wda' has no attribute {name!r}")


__all__ = ["WDACache", "WDAConfig", "WaveDensityAttention", *_STUDENT]
