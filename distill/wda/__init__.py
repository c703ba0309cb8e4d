"""Wave-Density Attention: a causal, sparse-routed, wave-kernel attention layer.

See ``distill.wda.attention`` for the math and the design decisions.
"""

from distill.wda.attention import WaveDensityAttention, WDACache, WDAConfig

__all__ = ["WDACache", "WDAConfig", "WaveDensityAttention"]
