"""The canonical parameter layout, declared once: names, shapes, logical axes, where each parameter lives,
how it is initialised, which block parts it belongs to, the families' block descriptions, parameter count
and tensor sources.

K = KV heads, G = query heads per KV head, N = K * G, D = head dim, M = d_model, F = MLP width,
V = vocabulary. Flat query head ``h = k * G + g`` (HF order: head h reads KV head h // G).
Per-layer parameters are stacked on a leading ``[L]`` axis in the model.

A model family is data: a :class:`~circuits.models.config.BlockSpec` in :data:`FAMILY_BLOCKS`. The
optional parameters below exist exactly when their block part does, and the forward, the readers' name
tables, the sharding rules, the parameter count and the weight-only readers all follow this table.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Protocol

import numpy as np

from circuits.models.config import BlockSpec, ModelConfig

FAMILY_BLOCKS: dict[str, BlockSpec] = {
    "llama": BlockSpec(),
    "internlm2": BlockSpec(),
    "qwen2": BlockSpec(qkv_bias=True),
    "gemma3": BlockSpec(qk_norm=True, post_norms=True, norm_offset=1.0, activation="gelu_tanh", embed_scale=True),
}
"""Each family's block (by ``ModelConfig.architecture`` name): the one place a family's structure is stated."""


def _always(config: ModelConfig) -> bool:
    return True


def _has_mlp(config: ModelConfig) -> bool:
    return not config.attention_only


@dataclasses.dataclass(frozen=True)
class ParamSpec:
    """One canonical parameter: its logical ``axes`` (``layers`` first for per-layer ones), the ``module``
    holding it in :class:`~circuits.models.Transformer` (``model``, ``block``, ``attn`` or ``mlp``), its
    ``init`` (``normal`` weights, ``zeros`` biases, ``norm`` gains: 1, or 0 where gains are offsets) and
    ``present``, whether a model with a given config has it."""

    axes: tuple[str, ...]
    module: str
    init: str
    present: Callable[[ModelConfig], bool] = _always


PARAMS: dict[str, ParamSpec] = {
    "embed": ParamSpec(("vocab", "d_model"), "model", "normal"),
    "final_norm": ParamSpec(("d_model",), "model", "norm"),
    "unembed": ParamSpec(("d_model", "vocab"), "model", "normal", lambda c: not c.tie_embeddings),
    "attn_norm": ParamSpec(("layers", "d_model"), "block", "norm"),
    "wq": ParamSpec(("layers", "d_model", "kv_heads", "q_per_kv", "head_dim"), "attn", "normal"),
    "wk": ParamSpec(("layers", "d_model", "kv_heads", "head_dim"), "attn", "normal"),
    "wv": ParamSpec(("layers", "d_model", "kv_heads", "head_dim"), "attn", "normal"),
    "wo": ParamSpec(("layers", "kv_heads", "q_per_kv", "head_dim", "d_model"), "attn", "normal"),
    "bq": ParamSpec(("layers", "kv_heads", "q_per_kv", "head_dim"), "attn", "zeros", lambda c: c.block.qkv_bias),
    "bk": ParamSpec(("layers", "kv_heads", "head_dim"), "attn", "zeros", lambda c: c.block.qkv_bias),
    "bv": ParamSpec(("layers", "kv_heads", "head_dim"), "attn", "zeros", lambda c: c.block.qkv_bias),
    "q_norm": ParamSpec(("layers", "head_dim"), "attn", "norm", lambda c: c.block.qk_norm),
    "k_norm": ParamSpec(("layers", "head_dim"), "attn", "norm", lambda c: c.block.qk_norm),
    "post_attn_norm": ParamSpec(("layers", "d_model"), "block", "norm", lambda c: c.block.post_norms),
    "mlp_norm": ParamSpec(("layers", "d_model"), "block", "norm", _has_mlp),
    "w_gate": ParamSpec(("layers", "d_model", "mlp"), "mlp", "normal", _has_mlp),
    "w_up": ParamSpec(("layers", "d_model", "mlp"), "mlp", "normal", _has_mlp),
    "w_down": ParamSpec(("layers", "mlp", "d_model"), "mlp", "normal", _has_mlp),
    "post_mlp_norm": ParamSpec(("layers", "d_model"), "block", "norm", lambda c: c.block.post_norms and _has_mlp(c)),
}
"""Every canonical parameter a model of any family can have."""

PARAM_AXES: dict[str, tuple[str, ...]] = {name: spec.axes for name, spec in PARAMS.items()}
"""Logical axes of every canonical parameter as stored in the model (per-layer ones with ``layers`` first)."""

GLOBAL_PARAMS = tuple(name for name, spec in PARAMS.items() if spec.module == "model")
LAYER_PARAMS = tuple(name for name, spec in PARAMS.items() if spec.module != "model")


def module_params(config: ModelConfig, module: str) -> tuple[str, ...]:
    """Names of the parameters that ``module`` (``model``, ``block``, ``attn``, ``mlp``) holds for ``config``."""
    return tuple(name for name, spec in PARAMS.items() if spec.module == module and spec.present(config))


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
    present = [name for name, spec in PARAMS.items() if spec.present(config)]
    return tuple(n for n in present if n in GLOBAL_PARAMS), tuple(n for n in present if n in LAYER_PARAMS)


def parameter_count(config: ModelConfig) -> int:
    """Number of parameters of a model with ``config`` (tied embeddings counted once)."""
    global_names, layer_names = expected_params(config)
    count = lambda name: int(np.prod(canonical_shape(name, config)))  # noqa: E731
    return sum(count(n) for n in global_names) + config.n_layers * sum(count(n) for n in layer_names)


def largest_stacked_param(config: ModelConfig) -> int:
    """Number of values of the largest parameter as the model stores it (per-layer ones stacked over [L])."""
    global_names, layer_names = expected_params(config)
    count = lambda name: int(np.prod(canonical_shape(name, config)))  # noqa: E731
    return max([count(n) for n in global_names] + [config.n_layers * count(n) for n in layer_names])


class TensorSource(Protocol):
    """Anything that yields canonical tensors: an HF directory, a GGUF file, an Orbax cache, a loaded model."""

    config: ModelConfig
    description: str

    @property
    def dtype(self) -> np.dtype: ...

    def tensor(self, name: str, layer: int | None = None) -> np.ndarray: ...
