"""Head ablation and attention knockout sweeps, each ONE jitted program over a stack of head sets.

A sweep maps the model's forward over ``n`` head sets with ``lax.map`` in chunks of
``chunk`` (vmapped inside a chunk), reducing each forward to a masked mean loss at once,
so only ``chunk`` sets of logits exist at any time. Changing which heads are ablated
never recompiles: head sets are data.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from circuits.analysis.losses import masked_mean_loss
from circuits.models.config import ModelConfig
from circuits.models.interventions import Interventions
from circuits.models.transformer import Transformer

LOGITS_BUDGET_BYTES = 2 * 1024**3
"""Default chunk size keeps the float32 logits of one chunk (and their softmax) under this."""


def heads_mask(config: ModelConfig, heads: Iterable[tuple[int, int]]) -> np.ndarray:
    """bool[L, K, G] with True at each (layer, flat head h = k * G + g)."""
    mask = np.zeros((config.n_layers, config.n_heads), bool)
    for layer, head in heads:
        mask[layer, head] = True
    return mask.reshape(config.n_layers, config.n_kv_heads, config.q_per_kv)


def one_head_each(config: ModelConfig) -> np.ndarray:
    """bool[L * N, L, K, G]: set i holds only head i (layer-major, flat head order)."""
    eye = np.eye(config.n_layers * config.n_heads, dtype=bool)
    return eye.reshape(-1, config.n_layers, config.n_kv_heads, config.q_per_kv)


def kv_group_heads(config: ModelConfig, groups: Iterable[tuple[int, int]]) -> np.ndarray:
    """bool[L, K, G]: every query head of each (layer, KV head) group (ablating the group's shared K/V)."""
    mask = np.zeros((config.n_layers, config.n_kv_heads, config.q_per_kv), bool)
    for layer, kv_head in groups:
        mask[layer, kv_head] = True
    return mask


@nnx.jit
def _mean_z(model: Transformer, tokens: jax.Array) -> jax.Array:
    _, captured = model.forward(tokens, capture=("z",))
    return captured["z"].astype(jnp.float32).mean(axis=(1, 2))  # [L, B, T, K, G, D] -> [L, K, G, D]


def mean_head_outputs(model: Transformer, tokens) -> jax.Array:
    """f32[L, K, G, D]: each head's output z averaged over a reference batch int[B, T] and its positions;
    the replacement values for mean ablation."""
    return _mean_z(model, jnp.asarray(tokens, jnp.int32))


@functools.partial(jax.jit, static_argnames=("graphdef", "chunk"))
def _sweep(graphdef: nnx.GraphDef, state: nnx.State, tokens, loss_mask, base: Interventions, ablate, knock_out, chunk):
    def one(sets):
        model = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))  # new Variables, owned by the mapped trace
        ablate_i, knock_i = sets
        interventions = base.ablate(ablate_i)
        if knock_i is not None:
            interventions = dataclasses.replace(interventions, knockout_heads=knock_i)
        logits, _ = model.forward(tokens, interventions)
        return masked_mean_loss(logits, tokens, loss_mask)

    return jax.lax.map(one, (ablate, knock_out), batch_size=chunk)


def sweep_losses(
    model: Transformer,
    tokens,
    loss_mask,
    *,
    ablate=None,
    knock_out=None,
    edges=None,
    replacement=None,
    chunk: int | None = None,
) -> np.ndarray:
    """f32[n]: mean next-token loss (nats, where ``loss_mask`` bool[T-1] is True) for each of n interventions.

    ablate: bool[n, L, K, G] heads to ablate in set i (zero ablation, or mean ablation with
        ``replacement`` f32[L, K, G, D], e.g. :func:`mean_head_outputs`);
    knock_out: bool[n, L, K, G] heads in which ``edges`` bool[B, T, S] are knocked out in set i.
    """
    config = model.config
    tokens = jnp.asarray(tokens, jnp.int32)
    sets = next(np.asarray(x) for x in (ablate, knock_out) if x is not None)
    n = sets.shape[0]
    ablate = jnp.zeros((n,) + sets.shape[1:], bool) if ablate is None else jnp.asarray(ablate, bool)
    base = Interventions.none(config)
    if replacement is not None:
        base = dataclasses.replace(base, head_replacement=jnp.asarray(replacement, jnp.float32))
    if knock_out is not None:
        if edges is None:
            raise ValueError("knock_out needs the edges to knock out (bool[B, T, S]); see circuits.analysis.targets")
        base = base.knock_out(jnp.asarray(edges, bool), jnp.zeros(sets.shape[1:], bool))
        knock_out = jnp.asarray(knock_out, bool)
    base.check(config)
    if chunk is None:
        per_forward = 3 * tokens.size * config.vocab_size * 4
        chunk = int(max(1, min(n, LOGITS_BUDGET_BYTES // per_forward)))
    graphdef, state = nnx.split(model)
    return np.asarray(_sweep(graphdef, state, tokens, jnp.asarray(loss_mask, bool), base, ablate, knock_out, chunk))
