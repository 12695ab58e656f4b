"""Next-token losses (nats) of logits against the tokens that follow."""

from __future__ import annotations

import jax
import jax.numpy as jnp


def token_losses(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """f32[B, T - 1]: -log p(tokens[:, t + 1] | prefix) from logits f32[B, T, V]."""
    log_probs = jax.nn.log_softmax(logits[:, :-1].astype(jnp.float32), axis=-1)
    return -jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1)[..., 0]


def masked_mean_loss(logits: jax.Array, tokens: jax.Array, loss_mask: jax.Array) -> jax.Array:
    """Mean next-token loss over the positions where ``loss_mask`` bool[T - 1] (or [B, T - 1]) is True."""
    mask = jnp.broadcast_to(loss_mask, (tokens.shape[0], tokens.shape[1] - 1)).astype(jnp.float32)
    return (token_losses(logits, tokens) * mask).sum() / jnp.maximum(mask.sum(), 1.0)
