"""Where a head's attention goes on the measurement's own context, from the weights alone.

The measured prefix-matching score is the attention share on one key among the keys of a repeated-random-token
sequence (BOS + ``length`` random tokens, ``repeats`` times). Its weight-only estimate lives on the same scale when
it models that softmax directly. For one head, a typical query (the mean of the stand-ins' queries) gives:

- every other key ``Delta`` positions back: ``positional[Delta] = scale * q_bar R(-Delta) k_bar`` plus a random
  content term of variance ``spread = scale^2 E_a[q_a^T Cov(k) q_a]`` (other keys are random tokens), whose
  softmax shares are averaged over fixed draws of that noise;
- the BOS key: ``bos[Delta] = scale * q_bar R(-Delta) k_BOS``, with BOS's exact residual (a first token attends
  only to itself, so its residual is a function of the weights alone);
- its own token at offset 0: ``itself = scale * E_a[q_a . k_a]``;
- a key whose previous token is the query's own token (a prefix match): ``+ gain`` nats on top of its offset's logit.

:func:`context_shares` averages the softmax shares of each kind of key over the query positions the measurement
averages over, so "previous" is the predicted previous-token score and "prefix" the predicted prefix-matching score.
No free constant: the context is the measurement's.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp

from circuits.analysis.weights import AttentionWeights
from circuits.models.config import ModelConfig
from circuits.models.layers import einsum, rms_norm


@dataclasses.dataclass(frozen=True)
class ContextProtocol:
    """The measured context: BOS + ``length`` random tokens repeated ``repeats`` times (as
    :func:`~circuits.analysis.repeated_tokens.repeated_random_tokens` makes it)."""

    length: int = 50
    repeats: int = 2

    def __post_init__(self):
        if self.length < 2 or self.repeats < 2:
            raise ValueError(f"the context needs length >= 2 and repeats >= 2, got {self.length} and {self.repeats}")

    @property
    def tokens(self) -> int:
        """T: the positions after BOS (queries are at 1 .. T)."""
        return self.length * self.repeats


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class HeadContext:
    """One layer's heads on the context, in nats (logits times the attention scale).

    positional f32[R, K, G] and bos f32[R, K, G] over offsets Delta = 0 .. R - 1; itself f32[K, G]; spread f32[K, G]
    (variance of the content logit over random keys).
    """

    positional: jax.Array
    bos: jax.Array
    itself: jax.Array
    spread: jax.Array


def per_token_norm(vectors: jax.Array, gain: jax.Array | None, eps: float) -> jax.Array:
    """QK-norm as the block applies it to each token's query or key [..., D] (RMS over D, times ``gain`` [D]);
    unchanged for ``gain`` None."""
    return vectors if gain is None else rms_norm(vectors, gain, eps)


@jax.jit
def head_context(queries: jax.Array, keys: jax.Array, keep: jax.Array, bos_key: jax.Array, rotations: jax.Array,
                 scale: float) -> HeadContext:
    """:class:`HeadContext` from the stand-ins' queries f32[n, K, G, D] and keys f32[n, K, D] (bias, QK-norm
    applied; rows with ``keep`` False ignored), BOS's key f32[K, D] and R(-Delta) f32[R, D, D]."""
    weight = keep.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)
    queries = queries * weight[:, None, None, None]
    keys = keys * weight[:, None, None]
    query_mean = queries.sum(0) / count  # [K, G, D]
    key_mean = keys.sum(0) / count  # [K, D]
    positional = einsum("kgd,rde,ke->rkg", query_mean, rotations, key_mean) * scale
    bos = einsum("kgd,rde,ke->rkg", query_mean, rotations, bos_key) * scale
    itself = einsum("nkgd,nkd->kg", queries, keys) / count * scale
    centred = (keys - key_mean) * weight[:, None, None]
    key_covariance = einsum("nkd,nke->kde", centred, centred) / count
    query_second_moment = einsum("nkgd,nkge->kgde", queries, queries) / count
    spread = einsum("kde,kged->kg", key_covariance, query_second_moment) * scale**2
    return HeadContext(positional, bos, itself, spread)


NOISE_SAMPLES = 32
"""Draws of the random keys' content noise over which the softmax shares are averaged (the same draws for every head)."""


@functools.partial(jax.jit, static_argnames=("protocol", "window"))
def context_shares(context: HeadContext, gain: jax.Array, protocol: ContextProtocol, window: int | None = None) -> dict[str, jax.Array]:
    """Expected attention shares f32[K, G], averaged over the query positions each measurement averages over.

    Query t = 1 .. T sees BOS (s = 0) at ``bos``, itself (s = t) at ``itself`` and every other key (random tokens) at
    ``positional`` of its offset plus content noise N(0, ``spread``), sampled (:data:`NOISE_SAMPLES` fixed draws);
    ``gain`` f32[K, G] is added to the keys whose previous token is the query's token. Returns "bos", "itself",
    "others" (every other key; over queries 1 .. T), "previous" (the key before the query; over 1 .. T, BOS at
    t = 1) and "prefix" (the keys whose previous token repeats the query's; over the later repeats).
    """
    n = protocol.tokens
    t = jnp.arange(1, n + 1)[:, None]
    s = jnp.arange(n + 1)[None, :]
    offset = t - s
    visible = (offset >= 0) & ((offset < window) if window else True)
    random_key = visible & (s >= 1) & (offset >= 1)
    match = random_key & ((offset + 1) % protocol.length == 0)  # key s - 1 holds the query's token
    logits = jnp.where((s == 0)[..., None, None], context.bos[jnp.clip(offset, 0, context.bos.shape[0] - 1)],
                       context.positional[jnp.clip(offset, 0, context.positional.shape[0] - 1)])  # [T, S, K, G]
    logits = jnp.where((offset == 0)[..., None, None], context.itself, logits)
    logits = logits + jnp.where(match[..., None, None], gain, 0.0)
    logits = jnp.where(visible[..., None, None], logits, -jnp.inf)
    noise = jax.random.normal(jax.random.key(0), (NOISE_SAMPLES,) + offset.shape) * random_key  # [R, T, S]
    noisy = logits[None] + noise[..., None, None] * jnp.sqrt(jnp.maximum(context.spread, 0.0))
    shares = jax.nn.softmax(noisy, axis=2).mean(0)  # [T, S, K, G]
    later = (jnp.arange(1, n + 1) > protocol.length).astype(jnp.float32)

    def total(mask):
        return einsum("tskg,ts->tkg", shares, mask.astype(jnp.float32))

    bos, itself = total(s == 0), total(offset == 0)
    return {
        "bos": bos.mean(0),
        "itself": itself.mean(0),
        "others": (1.0 - bos - itself).mean(0),
        "previous": total(jnp.where(t == 1, s == 0, random_key & (offset == 1))).mean(0),
        "prefix": einsum("tkg,t->kg", total(match), later) / later.sum(),
    }


@functools.partial(jax.jit, static_argnames=("eps",))
def layer_context(w: AttentionWeights, standins: jax.Array, keep: jax.Array, first: jax.Array, rotations: jax.Array, scale: float,
                  eps: float) -> HeadContext:
    """:func:`head_context` of one layer from its weights (biases in; QK-norm, if any, not folded: it is applied to
    each token exactly), the normalised stand-ins f32[n, M] and BOS's normalised residual f32[M]."""
    queries = per_token_norm(einsum("nm,mkgd->nkgd", standins, w.wq) + (0.0 if w.bq is None else w.bq), w.q_gain, eps)
    keys = per_token_norm(einsum("nm,mkd->nkd", standins, w.wk) + (0.0 if w.bk is None else w.bk), w.k_gain, eps)
    bos_key = per_token_norm(einsum("m,mkd->kd", first, w.wk) + (0.0 if w.bk is None else w.bk), w.k_gain, eps)
    return head_context(queries, keys, keep, bos_key, rotations, scale)


def layer_window(config: ModelConfig, layer: int) -> int | None:
    """The sliding window of layer ``layer`` (None for full attention)."""
    return config.sliding_window if config.layer_kinds[layer] == "sliding_attention" else None
