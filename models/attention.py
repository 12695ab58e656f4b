"""Grouped-query attention with explicit KV-head (K) and query-per-KV (G) axes."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
from flax import nnx

from circuits.models.config import ModelConfig
from circuits.models.interventions import KNOCKOUT_LOGIT
from circuits.models.layers import create_params, einsum, rms_norm
from circuits.models.rope import apply_rotary


class Attention(nnx.Module):
    """Causal GQA self-attention, optionally with q/k/v biases, QK-norm and a sliding window.

    Parameters: wq [M, K, G, D], wk / wv [M, K, D], wo [K, G, D, M]; with ``BlockSpec.qkv_bias`` bq [K, G, D],
    bk / bv [K, D]; with ``BlockSpec.qk_norm`` q_norm / k_norm [D] (RMSNorm over each head's query and key,
    before RoPE). Query head h = k * G + g reads KV head k (HF's order).
    """

    def __init__(self, config: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.block = config.block
        self.eps = config.rms_norm_eps
        self.scale = config.attention_scale
        create_params(self, config, "attn", dtype=dtype, rngs=rngs)

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        layer_interventions: dict[str, jax.Array] | None = None,
        knockout_edges: jax.Array | None = None,
        need_pattern: bool = True,
        window: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array | None, jax.Array]:
        """x [B, T, M] (already normed) -> (output [B, T, M], pattern f32[B, K, G, T, S] or None, z [B, T, K, G, D]).

        ``window``: int32[] keys a query sees (itself included; None: all earlier keys).

        ``layer_interventions``: this layer's slice of :class:`Interventions` (head_scale [K, G],
        head_replacement [K, G, D], knockout_heads [K, G], pattern_override [B, T, S] and
        pattern_heads [K, G]; the optional ones may be None).
        ``need_pattern``: False when nothing reads or changes the pattern (no capture, knockout or
        clamp); attention then runs fused (``jax.nn.dot_product_attention``: cuDNN flash attention on
        GPUs for bf16, XLA elsewhere, GQA without repeating K/V) and the pattern is None.
        """
        q = einsum("btm,mkgd->btkgd", x, self.wq[...])
        k = einsum("btm,mkd->btkd", x, self.wk[...])
        v = einsum("btm,mkd->btkd", x, self.wv[...])
        if self.block.qkv_bias:
            q, k, v = q + self.bq[...], k + self.bk[...], v + self.bv[...]
        if self.block.qk_norm:
            q = rms_norm(q, self.q_norm[...], self.eps, self.block.norm_offset)
            k = rms_norm(k, self.k_norm[...], self.eps, self.block.norm_offset)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        visible = visible_keys(q.shape[1], window)
        if need_pattern:
            pattern = self._pattern(q, k, self.scale, visible, layer_interventions, knockout_edges)
            z = einsum("bkgts,bskd->btkgd", pattern.astype(v.dtype), v)
        else:
            pattern, z = None, _fused_attention(q, k, v, self.scale, None if window is None else visible)
        if layer_interventions is not None:
            scale = layer_interventions["head_scale"][:, :, None]
            replacement = layer_interventions["head_replacement"]
            z = (z.astype(jnp.float32) * scale + (1.0 - scale) * replacement).astype(v.dtype)
        out = einsum("btkgd,kgdm->btm", z, self.wo[...])
        return out, pattern, z

    @staticmethod
    def _pattern(q, k, scale, causal, layer_interventions, knockout_edges) -> jax.Array:
        """The materialised pattern f32[B, K, G, T, S] over the visible keys ``causal`` bool[T, S], with
        knockouts and clamps applied."""
        logits = einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) * scale
        gate = None if knockout_edges is None or layer_interventions is None else layer_interventions["knockout_heads"]
        knockout = jnp.where(knockout_edges[:, None, None], KNOCKOUT_LOGIT, 0.0) if gate is not None else None
        if gate is not None and gate.dtype == jnp.bool_:
            logits = logits + jnp.where(gate[None, :, :, None, None], knockout, 0.0)
        pattern = jax.nn.softmax(jnp.where(causal, logits, jnp.finfo(jnp.float32).min), axis=-1)
        if gate is not None and gate.dtype != jnp.bool_:  # a knockout gate in [0, 1]: mix towards the knocked-out pattern
            knocked = jax.nn.softmax(jnp.where(causal, logits + knockout, jnp.finfo(jnp.float32).min), axis=-1)
            pattern = pattern + gate[None, :, :, None, None].astype(jnp.float32) * (knocked - pattern)
        if layer_interventions is not None and layer_interventions.get("pattern_heads") is not None:
            clamped = layer_interventions["pattern_heads"][None, :, :, None, None]
            pattern = jnp.where(clamped, layer_interventions["pattern_override"][:, None, None], pattern)
        return pattern


def visible_keys(seq_len: int, window: jax.Array | None) -> jax.Array:
    """bool[T, S]: key s is visible to query t when s <= t and, within a sliding ``window``, t - s < window."""
    query = jnp.arange(seq_len)[:, None]
    key = jnp.arange(seq_len)[None, :]
    visible = key <= query
    return visible if window is None else visible & (query - key < window)


def _fused_attention(q: jax.Array, k: jax.Array, v: jax.Array, scale: float, visible: jax.Array | None) -> jax.Array:
    """GQA attention without a materialised pattern: q [B, T, K, G, D], k / v [B, S, K, D] -> z [B, T, K, G, D],
    causal, or over the keys ``visible`` bool[T, S] (a sliding window) when given.

    Flat query head h = k * G + g reads KV head k, as ``jax.nn.dot_product_attention`` groups them.
    Float32 inputs are multiplied in full float32 (the XLA path's einsums would default to TF32 on GPUs); float16
    inputs on a CPU are computed in float32 (its dot has no float16 kernel with float32 accumulation).
    """
    b, t, n_kv, g, d = q.shape
    dtype = q.dtype
    if dtype == jnp.float16 and jax.default_backend() == "cpu":  # XLA's CPU dot has no float16 x float16 -> float32
        q, k, v = (x.astype(jnp.float32) for x in (q, k, v))
    full = q.dtype == jnp.float32
    mask = None if visible is None else visible[None, None]
    with jax.default_matmul_precision("highest") if full else contextlib.nullcontext():
        z = jax.nn.dot_product_attention(q.reshape(b, t, n_kv * g, d), k, v, mask=mask, scale=scale, is_causal=visible is None)
    return z.reshape(b, t, n_kv, g, d).astype(dtype)
