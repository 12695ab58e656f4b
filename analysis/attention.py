"""Measured head scores [L, N] from forward passes: prefix matching, previous token, duplicate token, copying.

Every score runs the model's own forward (``Transformer.forward``) with activation capture;
nothing here re-implements the model. By default the data is BOS + 50 random tokens
repeated twice, 16 sequences (:func:`repeated_random_tokens`); pass your own tokens to
score other data.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from circuits.analysis.batching import row_chunks
from circuits.analysis.repeated_tokens import RepeatedTokens, repeated_random_tokens
from circuits.analysis.results import HeadScores
from circuits.analysis.targets import (
    attention_share_sums,
    duplicate_token_targets,
    induction_targets,
    previous_token_targets,
)
from circuits.models.layers import einsum
from circuits.models.sharding import host_array
from circuits.models.transformer import Transformer, reading_jit

ATTENTION_SCORES = {
    "prefix_matching": induction_targets,
    "previous_token": previous_token_targets,
    "duplicate_token": duplicate_token_targets,
}
"""score name -> target builder: the share of attention a head puts on those keys."""


def _as_data(model: Transformer, tokens, seeds: tuple[int, ...]) -> list[tuple[np.ndarray, str, int]]:
    """[(tokens int32[B, T], description, first position of a later repeat)]: the given tokens (a plain
    array counts as having no repeats: 0), or the default repeated random tokens, one batch per seed."""
    if tokens is None:
        batches = [repeated_random_tokens(model.config, seed=seed) for seed in seeds]
        description = batches[0].describe().replace(f"seed {seeds[0]}", f"seed{'s' * (len(seeds) > 1)} {', '.join(map(str, seeds))}")
        return [(b.tokens, description, b.length + 1) for b in batches]
    if isinstance(tokens, RepeatedTokens):
        return [(tokens.tokens, tokens.describe(), tokens.length + 1)]
    tokens = np.asarray(tokens, np.int32)
    return [(tokens, f"{tokens.shape[0]} given sequences of {tokens.shape[1]} tokens", 0)]


@reading_jit
def _attention_share_sums(model: Transformer, tokens: jax.Array) -> dict[str, tuple[jax.Array, jax.Array]]:
    _, captured = model.forward(tokens, capture=("attn_pattern",))
    patterns = captured["attn_pattern"]
    return {name: attention_share_sums(patterns, build(tokens)) for name, build in ATTENTION_SCORES.items()}


def _pattern_bytes_per_row(model: Transformer, seq_len: int) -> int:
    """What one sequence's captured attention patterns f32[L, N, T, T] take, twice (the pattern and its product)."""
    config = model.config
    return 2 * config.n_layers * config.n_heads * seq_len * seq_len * 4


def attention_scores(model: Transformer, tokens=None, *, seeds: tuple[int, ...] = (0,)) -> dict[str, HeadScores]:
    """{"prefix_matching", "previous_token", "duplicate_token"} -> HeadScores f32[L, N], from one forward per batch
    (in row chunks that keep the captured patterns within :data:`~circuits.analysis.batching.PASS_BUDGET_BYTES`).

    tokens: int[B, T], a :class:`RepeatedTokens`, or None for BOS + 50 random tokens x 2 (16 sequences per seed,
    scores averaged over ``seeds``).
    """
    data = _as_data(model, tokens, seeds)
    shares: dict[str, np.ndarray] = {}
    for batch, _, _ in data:
        totals: dict[str, np.ndarray] = {}
        counts: dict[str, float] = {}
        for rows in row_chunks(batch.shape[0], _pattern_bytes_per_row(model, batch.shape[1])):
            for name, (total, count) in _attention_share_sums(model, jnp.asarray(batch[rows])).items():
                totals[name] = totals.get(name, 0.0) + host_array(total).astype(np.float64)
                counts[name] = counts.get(name, 0.0) + float(count)
        for name, total in totals.items():
            shares[name] = shares.get(name, 0.0) + total / max(counts[name], 1.0)
    source = data[0][1]
    n_heads = model.config.n_heads
    return {
        name: HeadScores(name, (total / len(data)).reshape(-1, n_heads).astype(np.float32), None, source=f"forward pass on {source}")
        for name, total in shares.items()
    }


def prefix_matching_scores(model: Transformer, tokens=None, *, seeds: tuple[int, ...] = (0,)) -> HeadScores:
    """f32[L, N]: attention from each query to the token after earlier occurrences of the query's token."""
    return attention_scores(model, tokens, seeds=seeds)["prefix_matching"]


def previous_token_scores(model: Transformer, tokens=None, *, seeds: tuple[int, ...] = (0,)) -> HeadScores:
    """f32[L, N]: attention from each position to the one before it."""
    return attention_scores(model, tokens, seeds=seeds)["previous_token"]


def duplicate_token_scores(model: Transformer, tokens=None, *, seeds: tuple[int, ...] = (0,)) -> HeadScores:
    """f32[L, N]: attention from each query to earlier copies of its own token."""
    return attention_scores(model, tokens, seeds=seeds)["duplicate_token"]


@functools.partial(reading_jit, static_argnames=("positions",))
def _direct_copying(model: Transformer, tokens: jax.Array, positions: tuple[int, ...]) -> jax.Array:
    _, captured = model.forward(tokens, capture=("attn_pattern", "z"))
    query = jnp.asarray(positions)
    patterns = captured["attn_pattern"][:, :, :, :, query]  # [L, B, K, G, Q, S]
    attended = jnp.argmax(patterns, -1)  # key position each query attends to most
    z = captured["z"][:, :, query].astype(jnp.float32)  # [L, B, Q, K, G, D]
    unembed = (model.final_norm[...][:, None] * model.unembedding()).astype(jnp.float32)  # final norm gain folded
    context_unembed = jnp.take(unembed, tokens, axis=1)  # [M, B, S]: unembedding columns of the context tokens
    first_copy = ~duplicate_token_targets(tokens).any(-1)  # [B, S]: count each distinct token once
    causal = query[:, None] >= jnp.arange(tokens.shape[1])[None, :]  # [Q, S]

    def layer_share(args):
        z_l, wo_l, attended_l = args  # [B, Q, K, G, D], [K, G, D, M], [B, K, G, Q]
        out = einsum("bqkgd,kgdm->bkgqm", z_l, wo_l.astype(jnp.float32))
        positive = jax.nn.relu(einsum("bkgqm,mbs->bkgqs", out, context_unembed))  # direct logits of context tokens
        mass = jnp.where(first_copy[:, None, None, None, :] & causal[None, None, None], positive, 0.0).sum(-1)
        on_attended = jnp.take_along_axis(positive, attended_l[..., None], axis=-1)[..., 0]
        return (on_attended / jnp.maximum(mass, 1e-30)).mean(axis=(0, 3))  # [K, G]

    return jax.lax.map(layer_share, (z, model.blocks.attn.wo[...], attended))


def copying_scores(model: Transformer, tokens=None, *, positions=None, seeds: tuple[int, ...] = (0,)) -> HeadScores:
    """f32[L, N] in [0, 1]: does the head copy what it attends to? Its output at a query, sent straight to the
    unembedding (final norm gain folded, no other layer), gives direct logits; the score is the share of their
    positive mass over the distinct tokens up to the query that falls on the token the head attends to most
    (0 at a query where no such token gets a positive logit), averaged over queries.

    Scored at ``positions`` (default: the later repeats of repeated random tokens, where induction heads copy;
    every position for a plain token array). Only the context tokens' logits are formed, never [.., V].
    """
    data = _as_data(model, tokens, seeds)
    total = 0.0
    for batch, _, later in data:
        chosen = tuple(range(later, batch.shape[1])) if positions is None else tuple(int(p) for p in positions)
        chunks = row_chunks(batch.shape[0], _pattern_bytes_per_row(model, batch.shape[1]))
        for rows in chunks:  # equal chunks: the mean over rows is the mean of the chunks' means
            total = total + host_array(_direct_copying(model, jnp.asarray(batch[rows]), chosen)).astype(np.float64) / len(chunks)
    source = data[0][1]
    return HeadScores("copying", (total / len(data)).reshape(-1, model.config.n_heads).astype(np.float32), None, source=f"forward pass on {source}")
