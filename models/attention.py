"""Grouped-query attention with explicit KV-head (K) and query-per-KV (G) axes."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from circuits.models.config import ModelConfig
from circuits.models.interventions import KNOCKOUT_LOGIT
from circuits.models.layers import WEIGHT_INIT
from circuits.models.rope import apply_rotary


class Attention(nnx.Module):
    """Causal GQA self-attention.

    Parameters: wq [M, K, G, D], wk / wv [M, K, D], wo [K, G, D, M]. Query head h = k * G + g
    reads KV head k (HF's order).
    """

    def __init__(self, config: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        m, k, g, d = config.d_model, config.n_kv_heads, config.q_per_kv, config.head_dim
        self.wq = nnx.Param(WEIGHT_INIT(rngs.params(), (m, k, g, d), dtype))
        self.wk = nnx.Param(WEIGHT_INIT(rngs.params(), (m, k, d), dtype))
        self.wv = nnx.Param(WEIGHT_INIT(rngs.params(), (m, k, d), dtype))
        self.wo = nnx.Param(WEIGHT_INIT(rngs.params(), (k, g, d, m), dtype))

    def __call__(
        self,
        x: jax.Array,
        cos: jax.Array,
        sin: jax.Array,
        layer_interventions: dict[str, jax.Array] | None = None,
        knockout_edges: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array, jax.Array]:
        """x [B, T, M] (already normed) -> (output [B, T, M], pattern f32[B, K, G, T, S], z [B, T, K, G, D]).

        ``layer_interventions``: this layer's slice of :class:`Interventions` (head_scale [K, G],
        head_replacement [K, G, D], knockout_heads [K, G], pattern_override [B, T, S] and
        pattern_heads [K, G]; the optional ones may be None).
        """
        seq_len = x.shape[1]
        q = apply_rotary(jnp.einsum("btm,mkgd->btkgd", x, self.wq[...]), cos, sin)
        k = apply_rotary(jnp.einsum("btm,mkd->btkd", x, self.wk[...]), cos, sin)
        v = jnp.einsum("btm,mkd->btkd", x, self.wv[...])

        logits = jnp.einsum("btkgd,bskd->bkgts", q, k).astype(jnp.float32) / math.sqrt(q.shape[-1])
        causal = jnp.tril(jnp.ones((seq_len, seq_len), dtype=bool))
        if knockout_edges is not None and layer_interventions is not None:
            blocked = knockout_edges[:, None, None, :, :] & layer_interventions["knockout_heads"][None, :, :, None, None]
            logits = logits + jnp.where(blocked, KNOCKOUT_LOGIT, 0.0)
        logits = jnp.where(causal, logits, jnp.finfo(jnp.float32).min)
        pattern = jax.nn.softmax(logits, axis=-1)
        if layer_interventions is not None and layer_interventions.get("pattern_heads") is not None:
            clamped = layer_interventions["pattern_heads"][None, :, :, None, None]
            pattern = jnp.where(clamped, layer_interventions["pattern_override"][:, None, None], pattern)

        z = jnp.einsum("bkgts,bskd->btkgd", pattern.astype(v.dtype), v)
        if layer_interventions is not None:
            scale = layer_interventions["head_scale"][:, :, None]
            replacement = layer_interventions["head_replacement"]
            z = (z.astype(jnp.float32) * scale + (1.0 - scale) * replacement).astype(v.dtype)
        out = jnp.einsum("btkgd,kgdm->btm", z, self.wo[...])
        return out, pattern, z
