"""The WDA student: a copy of a Llama (or Qwen2) teacher whose attention is Wave-Density.

``transplant(teacher)`` copies every teacher weight (embeddings, norms, MLPs, lm_head) and
wraps each decoder layer's attention as a ``FusedWDAAttention``:

    mixed = (ts * A_teacher(x) + s * A_wda(x)) / sqrt(ts^2 + s^2)

so the teacher's attention can be faded out (teacher scale ts -> 0) during detachment.
Both branches read the same input: the layer's ``input_layernorm`` output (the
pre-norm decoder's attention input). A branch whose scale is 0 is not computed at all,
so ts = 1, s = 0 is the teacher bit for bit, and ts = 0 never touches the teacher's weights.

Decisions:

- Saved students are ordinary ``save_pretrained`` directories of model type
  ``bbi_wda_llama`` / ``bbi_wda_qwen2``. ``register_wda()`` (called by bbi's HF backend
  before it loads an ``hf:`` spec) registers them with transformers' Auto classes, so
  ``AutoModelForCausalLM.from_pretrained(dir)`` and ``bbi ... --student hf:DIR`` load them
  without ``trust_remote_code``.
- Teacher weights when ts == 0: the config field ``has_teacher`` decides whether the
  teacher branch exists. ``transplant(..., teacher_scale=0)`` builds without it (the
  published recipe runs ts = 0 from step 0, where the branch is dead weight); a student
  transplanted with ts > 0 keeps it (and saves it) until ``drop_teacher(model)`` removes
  it, which needs ts == 0 and sets ``has_teacher = False``. Either way the saved files and
  the config agree, so strict loading works.
- Scales live in the config (``teacher_scale``, ``wda_scale``) and every fused layer
  reads them at each forward pass: ``set_teacher_scale`` changes the running model and
  what ``save_pretrained`` writes.
- The 2-D padding mask: the decoder model (``model.model``) carries a forward pre-hook
  that stores the 2-D ``attention_mask`` it receives ([B, S] or [B, past + S], 1 = real
  token; None = all real) where every fused layer reads it. The decoder layers themselves
  only see HF's 4-D causal mask. The hook overwrites the mask on every decoder call and
  does not clear it afterwards, because gradient checkpointing re-runs the layers during
  backward, after the forward pass has returned. A 4-D mask given by the caller is refused.
- Generation and caching: WDA keeps its own incremental ``WDACache`` per layer, stored in
  the HF ``DynamicCache`` layer object of that layer (whose class is swapped, in place, for
  a subclass that also selects/reorders/repeats/resets the WDA state). That is what makes
  both HF ``generate`` and bbi's own decode loop (which drops finished rows with
  ``cache.batch_select_indices``) correct: a new token costs O(T) for the WDA branch, no
  recomputation of the prefix. The decode path sums directly where the prefill uses an FFT,
  so logits agree with a full forward pass to fp32 round-off (~1e-6), not bit for bit.
  Cropping a WDA cache (assisted decoding) is refused; static caches are refused.
- Strict loading: ``from_pretrained`` of a WDA student always asks transformers for its
  loading info and raises a one-line ``BbiError`` naming the first missing, unexpected or
  shape-mismatched tensor (transformers would warn and re-initialise it; the reference
  silently dropped mismatched tensors). ``ignore_mismatched_sizes`` is refused.
- Initialisation: WDA modules use attention.py's own init (transformers' generic
  ``_init_weights`` would redraw their Linear layers as N(0, 0.02)); ``transplant`` draws
  everything under ``torch.manual_seed(seed)`` inside a forked RNG, so equal seeds give
  equal students and the caller's RNG state is untouched.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import Tensor, nn
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.cache_utils import Cache, DynamicLayer

from bbi.errors import BbiError
from distill.wda.attention import WaveDensityAttention, WDACache, WDAConfig

WDA_LLAMA = "bbi_wda_llama"
WDA_QWEN2 = "bbi_wda_qwen2"
_TEACHER_ATTN = re.compile(r"^(.*\.layers\.\d+\.self_attn\.)(.+)$")


# ------------------------------------------------------------------------------ configs
def _check_scales(config: Any) -> None:
    """Scales are non-negative, not both 0; ts > 0 needs the teacher branch."""
    ts, s = config.teacher_scale, config.wda_scale
    if ts < 0 or s < 0 or ts == s == 0:
        raise ValueError(f"teacher_scale {ts} and wda_scale {s} must be >= 0 and not both 0")
    if ts and not config.has_teacher:
        raise ValueError(f"teacher_scale {ts} > 0 but the student has no teacher branch")


@strict
class WDALlamaConfig(LlamaConfig):
    """LlamaConfig plus the WDA settings (``wda``: WDAConfig fields) and the two scales."""

    model_type = WDA_LLAMA
    wda: dict | None = None
    teacher_scale: float = 1.0
    wda_scale: float = 1.0
    has_teacher: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        _check_scales(self)


@strict
class WDAQwen2Config(Qwen2Config):
    """Qwen2Config plus the WDA settings (``wda``: WDAConfig fields) and the two scales."""

    model_type = WDA_QWEN2
    wda: dict | None = None
    teacher_scale: float = 1.0
    wda_scale: float = 1.0
    has_teacher: bool = True

    def __post_init__(self, **kwargs: Any) -> None:
        super().__post_init__(**kwargs)
        _check_scales(self)


def wda_config_of(config: Any) -> WDAConfig:
    """The WDAConfig a student config describes (hidden size and heads default to the model's)."""
    fields = dict(config.wda or {})
    fields.setdefault("hidden_size", config.hidden_size)
    fields.setdefault("num_heads", config.num_attention_heads)
    if fields["hidden_size"] != config.hidden_size:
        raise ValueError(
            f"WDA hidden_size {fields['hidden_size']} != the model's hidden_size "
            f"{config.hidden_size} (WDA writes into the residual stream)"
        )
    known = {f.name for f in dataclasses.fields(WDAConfig)}
    if unknown := sorted(set(fields) - known):
        raise ValueError(f"unknown WDA settings {unknown}")
    return WDAConfig(**fields)


# ------------------------------------------------------------------------- the 2-D mask
class _PaddingMask:
    """The decoder's forward pre-hook: keeps the 2-D padding mask for the WDA branches."""

    def __init__(self) -> None:
        self.mask: Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple, kwargs: dict) -> None:
        # LlamaModel/Qwen2Model.forward(input_ids, attention_mask, ...)
        mask = kwargs["attention_mask"] if "attention_mask" in kwargs else (args[1:2] or [None])[0]
        if mask is not None and (not isinstance(mask, Tensor) or mask.dim() != 2):
            raise ValueError("a WDA student needs a 2-D padding attention_mask [batch, seq]")
        self.mask = mask


# ------------------------------------------------------------------------ cache layers
_STATE_FIELDS = tuple(f.name for f in dataclasses.fields(WDACache) if f.name != "bank")


def _map_state(state: WDACache | None, fn: Any) -> WDACache | None:
    """Apply ``fn`` to the batch dimension of every per-row tensor of a WDA cache."""
    if state is None:
        return None
    changes = {n: fn(getattr(state, n)) for n in _STATE_FIELDS if getattr(state, n) is not None}
    return dataclasses.replace(state, **changes)


def _wda_layer_class(base: type) -> type:
    """A subclass of cache layer class ``base`` that also carries the WDA decoding state.

    A real subclass (not a mixin), so an existing layer object can switch to it in place
    with ``__class__`` assignment; built once per base class.
    """

    class WDALayer(base):  # type: ignore[valid-type,misc]
        """``base`` plus the WDA branch's decoding state, following its batch edits."""

        bbi_wda_layer = True
        wda_state: WDACache | None = None
        is_croppable = False
        _layer_type = None  # never register in transformers' layer-type mappings

        def _has_kv(self) -> bool:
            keys = getattr(self, "keys", None)
            return bool(self.is_initialized and keys is not None and keys.numel())

        def get_seq_length(self) -> int:
            n = super().get_seq_length()
            return n if n or self.wda_state is None else self.wda_state.seen

        def reset(self) -> None:
            super().reset()
            self.wda_state = None

        def reorder_cache(self, beam_idx: torch.LongTensor) -> None:
            if self._has_kv():
                super().reorder_cache(beam_idx)
            self.wda_state = _map_state(
                self.wda_state, lambda t: t.index_select(0, beam_idx.to(t.device))
            )

        def batch_select_indices(self, indices: Tensor) -> None:
            if self._has_kv():
                super().batch_select_indices(indices)
            self.wda_state = _map_state(self.wda_state, lambda t: t[indices.to(t.device)])

        def batch_repeat_interleave(self, repeats: int) -> None:
            if self._has_kv():
                super().batch_repeat_interleave(repeats)
            self.wda_state = _map_state(self.wda_state, lambda t: t.repeat_interleave(repeats, 0))

        def crop(self, tokens_to_remove: int) -> None:
            if tokens_to_remove and self.wda_state is not None:
                raise NotImplementedError("a WDA decoding state cannot be cropped (no rollback)")
            super().crop(tokens_to_remove)

    WDALayer.__name__ = WDALayer.__qualname__ = f"WDA{base.__name__}"
    return WDALayer


_LAYER_CLASSES: dict[type, type] = {}


def wda_cache_layer(cache: Cache, layer_idx: int) -> Any:
    """The cache layer ``layer_idx``, upgraded in place to carry a WDA decoding state."""
    layers = cache.layers
    if layer_idx >= len(layers):
        if cache.layer_class_to_replicate is None:
            raise BbiError(f"the cache has {len(layers)} layers; layer {layer_idx} is missing")
        while len(layers) <= layer_idx:
            layers.append(cache.layer_class_to_replicate())
    layer = layers[layer_idx]
    if getattr(layer, "bbi_wda_layer", False):
        return layer
    base = type(layer)
    if not isinstance(layer, DynamicLayer):
        raise BbiError(f"a WDA student decodes with a DynamicCache, not {base.__name__} layers")
    if base not in _LAYER_CLASSES:
        _LAYER_CLASSES[base] = _wda_layer_class(base)
    layer.__class__ = _LAYER_CLASSES[base]
    layer.wda_state = None
    return layer


# ------------------------------------------------------------------ fused attention
class FusedWDAAttention(nn.Module):
    """(ts * teacher attention + s * WDA) / sqrt(ts^2 + s^2), as a drop-in ``self_attn``."""

    def __init__(
        self,
        teacher: nn.Module | None,
        wda: WaveDensityAttention,
        layer_idx: int,
        config: Any,
        padding: _PaddingMask,
    ) -> None:
        super().__init__()
        self.teacher = teacher
        self.wda = wda
        self.layer_idx = layer_idx
        self.config = config  # the model's config: scales are read at every call
        self._padding = padding

    def forward(
        self,
        hidden_states: Tensor,
        position_embeddings: tuple[Tensor, Tensor] | None = None,
        attention_mask: Tensor | None = None,
        cache: Cache | None = None,
        **kwargs: Any,
    ) -> tuple[Tensor, Tensor | None]:
        """The decoder layer's ``self_attn`` call; returns (output, teacher attention weights)."""
        past = kwargs.pop("past_key_values", None)
        cache = cache if cache is not None else past
        ts, s = float(self.config.teacher_scale), float(self.config.wda_scale)
        out: Tensor | None = None
        weights = None
        if ts:
            if self.teacher is None:
                raise BbiError("teacher_scale > 0 but this WDA student has no teacher branch")
            a, weights = self.teacher(
                hidden_states,
                position_embeddings=position_embeddings,
                attention_mask=attention_mask,
                cache=cache,
                **kwargs,
            )
            out = ts * a
        if s:
            w = s * self._wda(hidden_states, cache)
            out = w if out is None else out + w
        assert out is not None  # _check_scales: not both 0
        return out / math.hypot(ts, s), weights

    def _wda(self, x: Tensor, cache: Cache | None) -> Tensor:
        mask = self._padding.mask
        if cache is None:
            return self.wda(x, mask)  # type: ignore[return-value]
        layer = wda_cache_layer(cache, self.layer_idx)
        out, layer.wda_state = self.wda(x, mask, cache=layer.wda_state, return_cache=True)
        if not layer.is_initialized:  # no teacher KV: mark the layer live (empty keys)
            empty = x.new_zeros(0)
            layer.lazy_initialization(empty, empty)
        return out


# ------------------------------------------------------------------------- the models
class _WDAStudentMixin:
    """What both WDA families add to their HF causal LM: fused layers, mask hook, strict loading."""

    config: Any
    model: Any

    def _install_wda(self) -> None:
        config = self.config
        wcfg = wda_config_of(config)
        self._wda_padding = padding = _PaddingMask()
        for i, layer in enumerate(self.model.layers):
            teacher = layer.self_attn if config.has_teacher else None
            wda = WaveDensityAttention(wcfg)
            for sub in wda.modules():  # WDA's own init stands: HF's would redraw its Linears
                sub._is_hf_initialized = True
            layer.self_attn = FusedWDAAttention(teacher, wda, i, config, padding)
        self.model.register_forward_pre_hook(padding, with_kwargs=True)
        self.post_init()  # type: ignore[attr-defined]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: Any, *args: Any, **kwargs: Any) -> Any:
        """HF ``from_pretrained``, strict: any missing/unexpected/mismatched tensor is an error."""
        if kwargs.pop("ignore_mismatched_sizes", False):
            raise BbiError("WDA students load strictly: ignore_mismatched_sizes is not supported")
        want_info = kwargs.pop("output_loading_info", False)
        name = str(pretrained_model_name_or_path)
        # transformers raises on a shape mismatch without naming the tensor; let it report
        # the mismatch in the loading info instead, and refuse below
        model, info = super().from_pretrained(  # type: ignore[misc]
            pretrained_model_name_or_path,
            *args,
            output_loading_info=True,
            ignore_mismatched_sizes=True,
            **kwargs,
        )
        check_loading_info(info, name)
        return (model, info) if want_info else model


class WDALlamaForCausalLM(_WDAStudentMixin, LlamaForCausalLM):
    """A Llama whose every ``self_attn`` is a ``FusedWDAAttention``."""

    config_class = WDALlamaConfig
    config: WDALlamaConfig

    def __init__(self, config: WDALlamaConfig) -> None:
        super().__init__(config)
        self._install_wda()


class WDAQwen2ForCausalLM(_WDAStudentMixin, Qwen2ForCausalLM):
    """A Qwen2 whose every ``self_attn`` is a ``FusedWDAAttention``."""

    config_class = WDAQwen2Config
    config: WDAQwen2Config

    def __init__(self, config: WDAQwen2Config) -> None:
        super().__init__(config)
        self._install_wda()


# teacher model_type -> (student config class, student model class)
FAMILIES: dict[str, tuple[type, type]] = {
    "llama": (WDALlamaConfig, WDALlamaForCausalLM),
    "qwen2": (WDAQwen2Config, WDAQwen2ForCausalLM),
}
_registered = False


def register_wda() -> None:
    """Make the WDA students known to AutoConfig / AutoModelForCausalLM (idempotent)."""
    global _registered
    if _registered:
        return
    from transformers import AutoConfig, AutoModelForCausalLM

    for cfg_cls, model_cls in FAMILIES.values():
        AutoConfig.register(cfg_cls.model_type, cfg_cls, exist_ok=True)
        AutoModelForCausalLM.register(cfg_cls, model_cls, exist_ok=True)
    _registered = True


def check_loading_info(info: dict, name: str) -> None:
    """One-line BbiError for the first missing, unexpected or shape-mismatched tensor."""
    problems = [
        ("missing tensor", sorted(info.get("missing_keys") or [])),
        ("unexpected tensor", sorted(info.get("unexpected_keys") or [])),
        ("shape-mismatched tensor", sorted(info.get("mismatched_keys") or [], key=str)),
    ]
    for what, keys in problems:
        if keys:
            first = keys[0]
            if isinstance(first, tuple | list):  # (key, shape in file, shape in model)
                key, *shapes = first
                detail = (
                    f" (file {tuple(shapes[0])}, model {tuple(shapes[1])})"
                    if len(shapes) == 2
                    else ""
                )
                first = f"{key}{detail}"
            more = f" and {len(keys) - 1} more" if len(keys) > 1 else ""
            raise BbiError(f"WDA student {name!r}: {what} {first}{more}; refusing to load")
    if errors := info.get("error_msgs"):
        first = (str(errors[0]).strip().splitlines() or ["error"])[0]
        raise BbiError(f"WDA student {name!r}: {first}")


def load_wda_student(path: Any, dtype: torch.dtype | None = None) -> PreTrainedModel:
    """Load a saved WDA student strictly (local files only); errors are one-line BbiErrors."""
    from transformers import AutoConfig, AutoModelForCausalLM

    register_wda()
    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise BbiError(f"cannot load WDA student {str(path)!r}: {first}") from None
    if config.model_type not in (WDA_LLAMA, WDA_QWEN2):
        raise BbiError(f"{str(path)!r} is a {config.model_type!r} model, not a WDA student")
    kw = {"dtype": dtype} if dtype is not None else {}
    return AutoModelForCausalLM.from_pretrained(path, config=config, local_files_only=True, **kw)


# ------------------------------------------------------------------------- transplant
def transplant(
    teacher: PreTrainedModel,
    wda: WDAConfig | dict | None = None,
    teacher_scale: float = 1.0,
    wda_scale: float = 1.0,
    seed: int = 0,
    keep_teacher: bool | None = None,
) -> PreTrainedModel:
    """A WDA student of ``teacher``: every teacher weight copied, WDA layers seeded.

    ``wda`` overrides WDAConfig fields (hidden size and heads default to the teacher's).
    ``keep_teacher`` (default: teacher_scale > 0) decides whether the teacher attention
    branch exists; without it, ts must stay 0. The student is float32 (WDA's working
    precision; cast it yourself), on the teacher's device, in the teacher's train/eval mode.
    """
    register_wda()
    model_type = teacher.config.model_type
    if model_type not in FAMILIES:
        raise BbiError(
            f"cannot transplant a {model_type!r} teacher; WDA students exist for "
            + ", ".join(sorted(FAMILIES))
        )
    cfg_cls, model_cls = FAMILIES[model_type]
    wda_fields = dataclasses.asdict(wda) if isinstance(wda, WDAConfig) else dict(wda or {})
    keep = teacher_scale > 0 if keep_teacher is None else bool(keep_teacher)
    fields = teacher.config.to_dict()
    for key in ("model_type", "architectures", "transformers_version", "_name_or_path", "auto_map"):
        fields.pop(key, None)
    fields.update(
        wda=wda_fields,
        teacher_scale=float(teacher_scale),
        wda_scale=float(wda_scale),
        has_teacher=keep,
    )
    try:
        config = cfg_cls(**fields)
        fields["wda"] = dataclasses.asdict(wda_config_of(config))  # store every setting
        config = cfg_cls(**fields)
    except (ValueError, TypeError) as exc:
        raise BbiError(f"bad WDA student settings: {str(exc).splitlines()[0]}") from None
    config._attn_implementation = teacher.config._attn_implementation
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        student = model_cls(config)

    state = {}
    for key, tensor in teacher.state_dict().items():
        m = _TEACHER_ATTN.match(key)
        if m is None:
            state[key] = tensor
        elif keep:
            state[f"{m.group(1)}teacher.{m.group(2)}"] = tensor
    missing, unexpected = student.load_state_dict(state, strict=False)
    missing = [k for k in missing if ".self_attn.wda." not in k]
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        raise BbiError(f"transplant of a {model_type!r} teacher: {what}")
    student.generation_config = copy.deepcopy(teacher.generation_config)
    student.to(next(teacher.parameters()).device)
    student.train(teacher.training)
    return student


# ------------------------------------------------------------------------------ helpers
def fused_layers(model: nn.Module) -> list[FusedWDAAttention]:
    """The fused attention modules of a WDA student, in layer order."""
    layers = [m for m in model.modules() if isinstance(m, FusedWDAAttention)]
    if not layers:
        raise BbiError("not a WDA student: no FusedWDAAttention layers")
    return layers


def set_teacher_scale(model: PreTrainedModel, teacher_scale: float) -> None:
    """Set ts for every layer from the next forward pass on (saved with the config)."""
    config = model.config
    old = config.teacher_scale
    config.teacher_scale = float(teacher_scale)
    try:
        _check_scales(config)
    except ValueError as exc:
        config.teacher_scale = old
        raise BbiError(str(exc)) from None


def set_wda_scale(model: PreTrainedModel, wda_scale: float) -> None:
    """Set s for every layer from the next forward pass on (saved with the config)."""
    config = model.config
    old = config.wda_scale
    config.wda_scale = float(wda_scale)
    try:
        _check_scales(config)
    except ValueError as exc:
        config.wda_scale = old
        raise BbiError(str(exc)) from None


def drop_teacher(model: PreTrainedModel) -> None:
    """Delete the teacher attention branch (needs ts == 0): smaller, teacher-free saves."""
    if model.config.teacher_scale:
        raise BbiError("set the teacher scale to 0 before dropping the teacher branch")
    for layer in fused_layers(model):
        layer.teacher = None
    model.config.has_teacher = False


def freeze_teacher(model: PreTrainedModel) -> int:
    """Stop gradients into the teacher attention branch; returns the number of tensors frozen."""
    frozen = 0
    for layer in fused_layers(model):
        if layer.teacher is not None:
            for p in layer.teacher.parameters():
                p.requires_grad_(False)
                frozen += 1
    return frozen


def set_temperature(model: PreTrainedModel, temperature: float) -> None:
    """Set the gate temperature of every WDA layer (the buffer, and the config for the record)."""
    for layer in fused_layers(model):
        layer.wda.set_temperature(temperature)
    model.config.wda = {**(model.config.wda or {}), "temperature": float(temperature)}


def routing_stats(model: PreTrainedModel) -> dict[str, Any]:
    """Each layer's ``routing_stats()`` of the last forward pass, and their means.

    Returns the per-layer means of every statistic plus ``layers`` (the per-layer dicts)
    and ``max_dense_entropy_norm`` (the layer closest to uniform, collapsed routing).
    """
    per_layer = [layer.wda.routing_stats() for layer in fused_layers(model)]
    out: dict[str, Any] = {
        key: sum(d[key] for d in per_layer) / len(per_layer) for key in per_layer[0]
    }
    out["max_dense_entropy_norm"] = max(d["dense_entropy_norm"] for d in per_layer)
    out["layers"] = per_layer
    return out


def residual_stream(
    model: PreTrainedModel, input_ids: Tensor, attention_mask: Tensor | None = None
) -> list[Tensor]:
    """Pre-norm residual stream h_0 .. h_L of a decoder-only Llama/Qwen2 model (teacher or
    WDA): h_l enters decoder layer l (h_0 = the token embeddings) and h_L is the last
    layer's output BEFORE the final norm, so h_{l+1} - h_l is exactly layer l's residual
    update (``distill.objectives.energy.residual_streams``, the one definition). Gradients
    flow. Returns L + 1 tensors [B, S, D]."""
    from distill.objectives.energy import residual_streams

    mask = torch.ones_like(input_ids) if attention_mask is None else attention_mask
    return residual_streams(model, {"input_ids": input_ids, "attention_mask": mask})[1]


__all__ = [
    "FAMILIES",
    "WDA_LLAMA",
    "WDA_QWEN2",
    "FusedWDAAttention",
    "WDALlamaConfig",
    "WDALlamaForCausalLM",
    "WDAQwen2Config",
    "WDAQwen2ForCausalLM",
    "check_loading_info",
    "drop_teacher",
    "freeze_teacher",
    "fused_layers",
    "load_wda_student",
    "register_wda",
    "residual_stream",
    "routing_stats",
    "set_teacher_scale",
    "set_temperature",
    "set_wda_scale",
    "transplant",
    "wda_cache_layer",
    "wda_config_of",
]
