"""Name tables: how a checkpoint family's tensors map onto the canonical layout (:mod:`circuits.models.layout`).

A :class:`TensorRule` names one stored tensor (``{i}`` = layer index), its stored shape
for a config, and how to cut it into canonical tensors. Readers use the table both to
validate a checkpoint (every tensor present, none unexpected, every shape right) and to
read it, so the two can never disagree.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from circuits.models.config import ModelConfig


@dataclasses.dataclass(frozen=True)
class TensorRule:
    """One stored tensor: ``stored_name`` (``{i}`` = layer), the canonical ``outputs`` it yields,
    its stored shape for a config, and ``split`` (stored array, config) -> {output name: array}."""

    stored_name: str
    outputs: tuple[str, ...]
    stored_shape: Callable[[ModelConfig], tuple[int, ...]]
    split: Callable[[np.ndarray, ModelConfig], dict[str, np.ndarray]]

    @property
    def per_layer(self) -> bool:
        return "{i}" in self.stored_name


def rule(
    stored_name: str,
    stored_shape: Callable[[ModelConfig], tuple[int, ...]],
    output: str,
    transform: Callable[[np.ndarray, ModelConfig], np.ndarray] = lambda array, config: array,
) -> TensorRule:
    """A rule for a stored tensor that becomes exactly one canonical tensor."""
    return TensorRule(stored_name, (output,), stored_shape, lambda array, config: {output: transform(array, config)})


def linear_transpose(array: np.ndarray, config: ModelConfig) -> np.ndarray:
    """torch ``Linear`` weight [out, in] -> [in, out]."""
    return array.T


def query_rows(array: np.ndarray, config: ModelConfig) -> np.ndarray:
    """torch q_proj weight [N*D, M] (head h = k*G + g) -> wq [M, K, G, D]."""
    k, g, d = config.n_kv_heads, config.q_per_kv, config.head_dim
    return array.reshape(k, g, d, config.d_model).transpose(3, 0, 1, 2)


def kv_rows(array: np.ndarray, config: ModelConfig) -> np.ndarray:
    """torch k_proj / v_proj weight [K*D, M] -> [M, K, D]."""
    return array.reshape(config.n_kv_heads, config.head_dim, config.d_model).transpose(2, 0, 1)


def output_columns(array: np.ndarray, config: ModelConfig) -> np.ndarray:
    """torch o_proj weight [M, N*D] -> wo [K, G, D, M]."""
    k, g, d = config.n_kv_heads, config.q_per_kv, config.head_dim
    return array.reshape(config.d_model, k, g, d).transpose(1, 2, 3, 0)


def bias_rows(array: np.ndarray, config: ModelConfig) -> np.ndarray:
    """torch q_proj bias [N*D] -> bq [K, G, D]."""
    return array.reshape(config.n_kv_heads, config.q_per_kv, config.head_dim)


def kv_bias_rows(array: np.ndarray, config: ModelConfig) -> np.ndarray:
    """torch k_proj / v_proj bias [K*D] -> [K, D]."""
    return array.reshape(config.n_kv_heads, config.head_dim)

