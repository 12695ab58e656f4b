"""The canonical parameter layout, declared once: names, shapes, logical axes, parameter count, tensor sources.

K = KV heads, G = query heads per KV head, N = K * G, D = head dim, M = d_model, F = MLP width,
V = vocabulary. Flat query head ``h = k * G + g`` (HF order: head h reads KV head h // G).
Per-layer parameters are stacked on a leading ``[L]`` axis in the model.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from circuits.models.config import ModelConfig

GLOBAL_PARAMS = ("embed", "final_norm", "unembed")
ATTENTION_PARAMS = ("wq", "wk", "wv", "wo")
MLP_PARAMS = ("w_gate", "w_up", "w_down")
LAYER_PARAMS = ("attn_norm", *ATTENTION_PARAMS, "mlp_norm", *MLP_PARAMS)

PARAM_AXES: dict[str, tuple[str, ...]] = {
    "embed": ("vocab", "d_model"),
    "unembed": ("d_model", "vocab"),
    "final_norm": ("d_model",),
    "attn_norm": ("layers", "d_model"),
    "mlp_norm": ("layers", "d_model"),
    "wq": ("layers", "d_model", "kv_heads", "q_per_kv", "head_dim"),
    "wk": ("layers", "d_model", "kv_heads", "head_dim"),
    "wv": ("layers", "d_model", "kv_heads", "head_dim"),
    "wo": ("layers", "kv_heads", "q_per_kv", "head_dim", "d_model"),
    "w_gate": ("layers", "d_model", "mlp"),
    "w_up": ("layers", "d_model", "mlp"),
    "w_down": ("layers", "mlp", "d_model"),
}
"""Logical axes of every canonical parameter as stored in the model (per-layer ones with ``layers`` first)."""


def axis_sizes(config: ModelConfig) -> dict[str, int]:
    """The size of every logical axis for ``config``."""
    return {
        "layers": config.n_layers,
        "vocab": config.vocab_size,
        "d_model": config.d_model,
        "kv_heads": config.n_kv_heads,
        "q_per_kv": config.q_per_kv,
        "head_dim": config.head_dim,
        "mlp": config.d_mlp,
    }


def canonical_shape(name: str, config: ModelConfig) -> tuple[int, ...]:
    """Shape of canonical parameter ``name`` (one layer's, for per-layer parameters)."""
    sizes = axis_sizes(config)
    return tuple(sizes[axis] for axis in PARAM_AXES[name] if axis != "layers")


def expected_params(config: ModelConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(global names, per-layer names) that a model with ``config`` has."""
    global_names = tuple(n for n in GLOBAL_PARAMS if not (n == "unembed" and config.tie_embeddings))
    layer_names = tuple(n for n in LAYER_PARAMS if not (config.attention_only and (n == "mlp_norm" or n in MLP_PARAMS)))
    return global_names, layer_names


def parameter_count(config: ModelConfig) -> int:
    """Number of parameters of a model with ``config`` (tied embeddings counted once)."""
    global_names, layer_names = expected_params(config)
    count = lambda name: int(np.prod(canonical_shape(name, config)))  # noqa: E731
    return sum(count(n) for n in global_names) + config.n_layers * sum(count(n) for n in layer_names)


class TensorSource(Protocol):
    """Anything that yields canonical tensors: an HF directory, a GGUF file, an Orbax cache, a loaded model."""

    config: ModelConfig
    description: str

    @property
    def dtype(self) -> np.dtype: ...

    def tensor(self, name: str, layer: int | None = None) -> np.ndarray: ...
