"""Rotary position embeddings in HF's half-split layout, angles in float32."""

from __future__ import annotations

import math

import jax.numpy as jnp
import numpy as np

from circuits.models.config import ModelConfig


def inverse_frequencies(config: ModelConfig, seq_len: int, layer_type: str = "full_attention") -> np.ndarray:
    """f32[D/2] inverse frequencies (radians per position) of layers of kind ``layer_type`` for a sequence of
    ``seq_len`` tokens.

    ``seq_len`` only matters for dynamic NTK scaling, where the base grows once the
    sequence is longer than ``max_position_embeddings`` (a no-op below it).
    """
    dim = config.head_dim
    theta, scaling = config.rope_of(layer_type)
    base = np.float32(theta)
    if scaling.kind == "dynamic" and seq_len > config.max_position_embeddings:
        ratio = scaling.factor * seq_len / config.max_position_embeddings - (scaling.factor - 1)
        base = np.float32(theta * ratio ** (dim / (dim - 2)))
    exponents = np.arange(0, dim, 2, dtype=np.float32) / np.float32(dim)
    inv_freq = (np.float32(1.0) / np.power(base, exponents)).astype(np.float32)
    if scaling.kind == "linear":
        inv_freq = inv_freq / np.float32(scaling.factor)
    elif scaling.kind == "llama3":
        inv_freq = _llama3_interpolation(inv_freq, scaling)
    if config.rope_freq_factors is not None:
        inv_freq = inv_freq / np.asarray(config.rope_freq_factors, dtype=np.float32)
    return inv_freq.astype(np.float32)


def _llama3_interpolation(inv_freq: np.ndarray, scaling) -> np.ndarray:
    """Llama 3.1 scaling: long wavelengths divided by ``factor``, short ones kept, a smooth ramp between."""
    old_context = scaling.original_max_position_embeddings
    low_freq_wavelen = old_context / scaling.low_freq_factor
    high_freq_wavelen = old_context / scaling.high_freq_factor
    wavelen = 2 * math.pi / inv_freq
    scaled = np.where(wavelen > low_freq_wavelen, inv_freq / scaling.factor, inv_freq)
    smooth = (old_context / wavelen - scaling.low_freq_factor) / (
        scaling.high_freq_factor - scaling.low_freq_factor
    )
    smoothed = (1 - smooth) * scaled / scaling.factor + smooth * scaled
    is_medium = (wavelen >= high_freq_wavelen) & (wavelen <= low_freq_wavelen)
    return np.where(is_medium, smoothed, scaled).astype(np.float32)


def rotary_tables(config: ModelConfig, seq_len: int, layer_type: str = "full_attention") -> tuple[jnp.ndarray, jnp.ndarray]:
    """(cos, sin), each f32[T, D]: angle of position t on pair (i, i + D/2) at columns i and i + D/2, for layers
    of kind ``layer_type``."""
    inv_freq = jnp.asarray(inverse_frequencies(config, seq_len, layer_type))
    angles = jnp.arange(seq_len, dtype=jnp.float32)[:, None] * inv_freq[None, :]
    angles = jnp.concatenate([angles, angles], axis=-1)
    return jnp.cos(angles), jnp.sin(angles)


def apply_rotary(x: jnp.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> jnp.ndarray:
    """Rotate ``x`` [B, T, ..., D] by position; cos/sin are [T, D]. Computed in f32, returned in x.dtype."""
    extra = x.ndim - 3
    shape = (1, cos.shape[0]) + (1,) * extra + (cos.shape[1],)
    xf = x.astype(jnp.float32)
    half = xf.shape[-1] // 2
    rotated_half = jnp.concatenate([-xf[..., half:], xf[..., :half]], axis=-1)
    out = xf * cos.reshape(shape) + rotated_half * sin.reshape(shape)
    return out.astype(x.dtype)


def layer_rotary_tables(config: ModelConfig, seq_len: int) -> tuple[jnp.ndarray, jnp.ndarray, np.ndarray]:
    """(cos, sin) f32[R, T, D] for the R distinct attention kinds of ``config``, and int32[L]: each layer's row."""
    kinds = sorted(set(config.layer_kinds))
    tables = [rotary_tables(config, seq_len, kind) for kind in kinds]
    rows = np.array([kinds.index(kind) for kind in config.layer_kinds], np.int32)
    return jnp.stack([c for c, _ in tables]), jnp.stack([s for _, s in tables]), rows
