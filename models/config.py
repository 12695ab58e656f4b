"""Model hyper-parameters, read from a Hugging Face ``config.json`` or built by hand.

Notation used across the project: K = KV heads, G = query heads per KV head,
N = K * G query heads, D = head dim, M = d_model, F = MLP width, V = vocab.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

ROPE_KINDS = ("default", "linear", "dynamic", "llama3")
ACTIVATIONS = ("silu", "gelu_tanh")
"""Gated-MLP activations: ``silu`` (SwiGLU, Llama / Qwen2 / InternLM2) and ``gelu_tanh`` (GeGLU, Gemma)."""
LAYER_TYPES = ("full_attention", "sliding_attention")
"""Per-layer attention kinds, named as in HF's ``layer_types``: full causal, or causal within ``sliding_window``."""


class ConfigError(ValueError):
    """A configuration that this project cannot turn into a model."""


def is_whole_number(value) -> bool:
    """An ``int`` (not a bool, not a float that happens to be whole): how counts must be written in configs."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_positive_number(value) -> bool:
    """A finite number above zero (not a bool): how epsilons, RoPE bases and factors must be written."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value > 0


@dataclasses.dataclass(frozen=True)
class RopeScaling:
    """RoPE frequency scaling, as in HF's ``rope_scaling`` / ``rope_parameters``.

    ``kind``: ``default`` (none), ``linear`` (positions / factor), ``dynamic``
    (NTK base rescaling once the sequence exceeds ``max_position_embeddings``)
    or ``llama3`` (per-frequency interpolation of Llama 3.1).
    """

    kind: str = "default"
    factor: float = 1.0
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    original_max_position_embeddings: int = 8192

    def __post_init__(self):
        if self.kind not in ROPE_KINDS:
            raise ConfigError(
                f"RoPE scaling type {self.kind!r} is not supported; supported types: "
                f"{', '.join(ROPE_KINDS)}. Convert the checkpoint with one of these or open an issue."
            )
        bad = [f"{name} {getattr(self, name)!r}" for name in ("factor", "low_freq_factor", "high_freq_factor")
               if not is_positive_number(getattr(self, name))]
        if not (is_whole_number(self.original_max_position_embeddings) and self.original_max_position_embeddings > 0):
            bad.append(f"original_max_position_embeddings {self.original_max_position_embeddings!r}")
        if bad:
            raise ConfigError(f"invalid RoPE scaling: {', '.join(bad)} must be positive")


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """The optional parts of a decoder block: what varies between model families, declared once
    (the families' values are in :data:`circuits.models.layout.FAMILY_BLOCKS`).

    qkv_bias: q / k / v projections carry biases (Qwen2).
    qk_norm: RMSNorm over each head's query and key, before RoPE (Gemma 3).
    post_norms: RMSNorm on the attention and MLP outputs before they join the residual (Gemma 3).
    norm_offset: every RMSNorm multiplies by ``norm_offset + w`` (1 for Gemma, whose stored gains are offsets).
    activation: the gated MLP's activation (one of :data:`ACTIVATIONS`).
    embed_scale: token embeddings are multiplied by sqrt(d_model) (Gemma).
    """

    qkv_bias: bool = False
    qk_norm: bool = False
    post_norms: bool = False
    norm_offset: float = 0.0
    activation: str = "silu"
    embed_scale: bool = False

    def __post_init__(self):
        if self.activation not in ACTIVATIONS:
            raise ConfigError(f"MLP activation {self.activation!r} is not supported; supported: {', '.join(ACTIVATIONS)}")
        if self.norm_offset not in (0.0, 1.0):
            raise ConfigError(f"norm_offset must be 0 or 1, got {self.norm_offset!r}")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Shapes and constants of a decoder-only transformer with grouped-query attention.

    ``d_mlp == 0`` gives the attention-only variant (no MLP, no MLP norm).
    ``rope_freq_factors`` (D/2 values, as GGUF's ``rope_freqs`` tensor stores them) divide the
    rotary inverse frequencies after any ``rope_scaling``.

    ``block``: the block's optional parts (:class:`BlockSpec`). ``query_pre_attn_scalar``: attention logits
    are scaled by its inverse square root (None: by 1 / sqrt(head_dim)). ``layer_types``: each layer's
    attention kind (:data:`LAYER_TYPES`; None: all full); ``sliding_window`` keys a sliding layer's query
    sees (itself included); sliding layers use RoPE base ``local_rope_theta`` with ``local_rope_scaling``
    (None: the same RoPE as full layers).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    head_dim: int
    d_mlp: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    rope_scaling: RopeScaling = RopeScaling()
    max_position_embeddings: int = 2048
    tie_embeddings: bool = False
    architecture: str = "llama"
    bos_token_id: int | None = None
    rope_freq_factors: tuple[float, ...] | None = None
    block: BlockSpec = BlockSpec()
    query_pre_attn_scalar: float | None = None
    layer_types: tuple[str, ...] | None = None
    sliding_window: int | None = None
    local_rope_theta: float | None = None
    local_rope_scaling: RopeScaling | None = None

    def __post_init__(self):
        problems = []
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "n_kv_heads", "head_dim", "d_mlp", "max_position_embeddings"):
            value = getattr(self, name)
            if not is_whole_number(value):
                problems.append(f"{name} must be a whole number, got {value!r}")
            elif value <= 0 and not (name == "d_mlp" and value == 0):
                problems.append(f"{name} must be positive, got {value}")
        for name in ("rms_norm_eps", "rope_theta"):
            if not is_positive_number(getattr(self, name)):
                problems.append(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if self.bos_token_id is not None and not (is_whole_number(self.bos_token_id) and 0 <= self.bos_token_id):
            problems.append(f"bos_token_id must be a token id, got {self.bos_token_id!r}")
        for name in ("query_pre_attn_scalar", "local_rope_theta"):
            if getattr(self, name) is not None and not is_positive_number(getattr(self, name)):
                problems.append(f"{name} must be a positive number, got {getattr(self, name)!r}")
        problems += self._layer_type_problems()
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))
        if self.n_heads % self.n_kv_heads:
            problems.append(
                f"n_heads={self.n_heads} is not a multiple of n_kv_heads={self.n_kv_heads}; "
                "grouped-query attention needs every KV head to serve the same number of query heads"
            )
        if self.head_dim % 2:
            problems.append(f"head_dim={self.head_dim} must be even for rotary embeddings")
        if self.rope_freq_factors is not None and len(self.rope_freq_factors) != self.head_dim // 2:
            problems.append(f"rope_freq_factors has {len(self.rope_freq_factors)} values, expected head_dim / 2 = {self.head_dim // 2}")
        if problems:
            raise ConfigError("invalid model config: " + "; ".join(problems))

    def _layer_type_problems(self) -> list[str]:
        if self.layer_types is None:
            return []
        if not isinstance(self.layer_types, tuple) or not all(isinstance(kind, str) for kind in self.layer_types):
            return [f"layer_types must be a list of names, got {self.layer_types!r}"]
        problems = []
        if len(self.layer_types) != self.n_layers:
            problems.append(f"layer_types lists {len(self.layer_types)} layers, but the model has n_layers={self.n_layers}")
        unknown = sorted(set(self.layer_types) - set(LAYER_TYPES))
        if unknown:
            problems.append(f"layer_types names unknown attention kinds {unknown}; known: {', '.join(LAYER_TYPES)}")
        if "sliding_attention" in self.layer_types and not (is_whole_number(self.sliding_window) and self.sliding_window > 0):
            problems.append(f"layer_types has sliding_attention layers, but sliding_window is {self.sliding_window!r}, not a positive whole number")
        return problems

    @property
    def layer_kinds(self) -> tuple[str, ...]:
        """Each layer's attention kind (one of :data:`LAYER_TYPES`)."""
        return self.layer_types if self.layer_types is not None else ("full_attention",) * self.n_layers

    @property
    def has_sliding_layers(self) -> bool:
        return "sliding_attention" in self.layer_kinds

    def rope_of(self, layer_type: str) -> tuple[float, RopeScaling]:
        """(RoPE base, scaling) of layers of kind ``layer_type``."""
        if layer_type == "sliding_attention" and self.local_rope_theta is not None:
            return self.local_rope_theta, self.local_rope_scaling or RopeScaling()
        return self.rope_theta, self.rope_scaling

    @property
    def attention_scale(self) -> float:
        """The factor on every attention logit q . k: ``query_pre_attn_scalar ** -0.5``, else ``head_dim ** -0.5``."""
        return (self.query_pre_attn_scalar or self.head_dim) ** -0.5

    @property
    def q_per_kv(self) -> int:
        """G: query heads that share one KV head."""
        return self.n_heads // self.n_kv_heads

    @property
    def attention_only(self) -> bool:
        return self.d_mlp == 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ModelConfig":
        """Inverse of :meth:`to_dict`."""
        data = dict(data)
        data["rope_scaling"] = RopeScaling(**data.get("rope_scaling", {}))
        if data.get("local_rope_scaling") is not None:
            data["local_rope_scaling"] = RopeScaling(**data["local_rope_scaling"])
        data["block"] = BlockSpec(**data.get("block", {}))
        for name in ("rope_freq_factors", "layer_types"):
            if data.get(name) is not None:
                data[name] = tuple(data[name])
        return cls(**data)


def rope_from_hf(hf: dict[str, Any]) -> tuple[float, RopeScaling]:
    """(rope_theta, RopeScaling) from either ``rope_scaling`` (transformers < 5) or ``rope_parameters``."""
    params = hf.get("rope_parameters") or {}
    scaling = hf.get("rope_scaling") or {}
    merged = {**params, **scaling}
    theta = float(merged.get("rope_theta", hf.get("rope_theta", 10000.0)))
    kind = merged.get("rope_type", merged.get("type", "default")) or "default"
    fields = {
        "kind": kind,
        "factor": float(merged.get("factor", 1.0) or 1.0),
        "low_freq_factor": float(merged.get("low_freq_factor", 1.0)),
        "high_freq_factor": float(merged.get("high_freq_factor", 4.0)),
        "original_max_position_embeddings": int(
            merged.get("original_max_position_embeddings", hf.get("max_position_embeddings", 8192))
        ),
    }
    return theta, RopeScaling(**fields)
