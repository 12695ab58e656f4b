"""Attention targets as boolean edge masks ``[B, T, S]`` (query t, key s), built from the tokens.

The same masks score heads (share of attention on the targets) and knock edges out
(``Interventions.knock_out``), so a measured score and a knockout always mean the same edges.
All builders are jnp functions of the tokens: they run inside jit and vmap.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from circuits.models.layers import einsum


def _positions(tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(t [T, 1], s [1, S]) position grids."""
    seq_len = tokens.shape[1]
    return jnp.arange(seq_len)[:, None], jnp.arange(seq_len)[None, :]


def _shift_right(tokens: jax.Array, fill: int) -> jax.Array:
    """tokens[b, s - 1] at key s (``fill`` at s = 0)."""
    return jnp.concatenate([jnp.full_like(tokens[:, :1], fill), tokens[:, :-1]], axis=1)


def induction_targets(tokens: jax.Array) -> jax.Array:
    """bool[B, T, S]: key s follows an earlier occurrence of the query's token (tokens[s-1] == tokens[t], 1 <= s <= t).

    These are the prefix-matching targets and the exact induction edges of Crosbie & Shutova.
    """
    tokens = jnp.asarray(tokens)
    t, s = _positions(tokens)
    before = _shift_right(tokens, -1)
    return (before[:, None, :] == tokens[:, :, None]) & (s >= 1) & (s <= t)


def category_targets(tokens: jax.Array, categories: jax.Array) -> jax.Array:
    """bool[B, T, S]: "fuzzy" induction edges; key s follows an earlier token of the query token's category.

    ``categories`` int[V]: the category of every token id, -1 for none (such queries get no edges).
    """
    tokens = jnp.asarray(tokens)
    t, s = _positions(tokens)
    category = jnp.asarray(categories)[tokens]
    before = _shift_right(category, -1)
    return (before[:, None, :] == category[:, :, None]) & (category[:, :, None] >= 0) & (s >= 1) & (s <= t)


def previous_token_targets(tokens: jax.Array) -> jax.Array:
    """bool[B, T, S]: key s = t - 1."""
    tokens = jnp.asarray(tokens)
    t, s = _positions(tokens)
    return jnp.broadcast_to(s == t - 1, (tokens.shape[0],) + (tokens.shape[1],) * 2)


def duplicate_token_targets(tokens: jax.Array) -> jax.Array:
    """bool[B, T, S]: an earlier key holding the query's own token (tokens[s] == tokens[t], s < t)."""
    tokens = jnp.asarray(tokens)
    t, s = _positions(tokens)
    return (tokens[:, None, :] == tokens[:, :, None]) & (s < t)


def attention_share_sums(patterns: jax.Array, targets: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(f32[L, K, G] summed attention that queries with a target put on their targets, f32[] how many such
    queries): :func:`attention_share` before the division, so that row chunks add up exactly.

    patterns f32[L, B, K, G, T, S] (captured ``attn_pattern``); targets bool[B, T, S].
    """
    per_query = einsum("lbkgts,bts->lbkgt", patterns, targets.astype(patterns.dtype))
    has_target = targets.any(-1).astype(patterns.dtype)  # [B, T]
    return einsum("lbkgt,bt->lkg", per_query, has_target), has_target.sum()


def attention_share(patterns: jax.Array, targets: jax.Array) -> jax.Array:
    """f32[L, K, G]: mean over queries that have a target of the attention they put on their targets.

    patterns f32[L, B, K, G, T, S] (captured ``attn_pattern``); targets bool[B, T, S].
    """
    total, count = attention_share_sums(patterns, targets)
    return total / jnp.maximum(count, 1.0)
