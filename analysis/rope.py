"""The rotary rotation averaged over query-key offsets: a static QK circuit that respects RoPE.

With RoPE the logit between a query at position t and a key at s is ``q^T R(s - t) k``: each rotary
pair (a, a + D/2) of the half-split layout is rotated by ``theta_a (t - s)``. Induction heads match
content at long, varying offsets, so the circuit they use is ``W_Q R_bar W_K^T`` with

    R_bar = E_Delta[R(-Delta)],   Delta uniform on the integers [lo, hi],

block-diagonal with ``[[c_a, s_a], [-s_a, c_a]]`` on each pair, ``c_a = E[cos theta_a Delta]``,
``s_a = E[sin theta_a Delta]``. High-frequency pairs average out; low-frequency pairs stay.
"""

from __future__ import annotations

import numpy as np

from circuits.models.config import ModelConfig
from circuits.models.rope import inverse_frequencies

DEFAULT_OFFSETS = (8, 512)


def rope_average(config: ModelConfig, offsets: tuple[int, int] = DEFAULT_OFFSETS, layer_type: str = "full_attention") -> np.ndarray:
    """R_bar f32[D, D] such that ``q @ R_bar @ k`` is the mean RoPE logit of q and k over query-minus-key
    offsets uniform on the integers ``[lo, hi]`` (in positions), in layers of kind ``layer_type``."""
    lo, hi = offsets
    if not 0 <= lo <= hi:
        raise ValueError(f"RoPE offsets must satisfy 0 <= lo <= hi, got {offsets}")
    inv_freq = inverse_frequencies(config, max(hi + 1, 1), layer_type).astype(np.float64)  # [D/2] radians per position
    angles = np.arange(lo, hi + 1, dtype=np.float64)[:, None] * inv_freq[None, :]  # [offsets, D/2]
    cos_mean, sin_mean = np.cos(angles).mean(0), np.sin(angles).mean(0)
    half = config.head_dim // 2
    first, second = np.arange(half), np.arange(half) + half
    average = np.zeros((config.head_dim, config.head_dim), np.float64)
    average[first, first] = average[second, second] = cos_mean
    average[first, second] = sin_mean
    average[second, first] = -sin_mean
    return average.astype(np.float32)


def layer_rope_averages(config: ModelConfig, offsets: tuple[int, int] | None) -> list[np.ndarray | None]:
    """Each layer's R_bar (:func:`rope_average` of its attention kind), or None per layer when ``offsets`` is None."""
    kinds = {kind: None if offsets is None else rope_average(config, offsets, kind) for kind in set(config.layer_kinds)}
    return [kinds[kind] for kind in config.layer_kinds]
