"""Exact pruning of ``prefix-share``'s per-pair terms (``pairs="bounded"``).

The score needs no pair product: head i's key-side gain ``sum_j w_j G_ji`` (w_j: source j's predicted previous-token
share over what turns its gain into nats) is linear in what the sources write, so one accumulated vector per stand-in,
``u = sum_j w_j v_j W_O^j`` [n, M], gives it exactly (:func:`cross_gain`). Pair products ``P = W_O^j W_K'^i`` are
then needed only for what is reported per pair: the top edges and the sources of the top heads. Cauchy-Schwarz over
stand-ins and residual dimensions bounds every pair's gain from D x D Grams alone::

    |G_ji| = scale |mean_t <(v_t - v_bar) W_O^j, (q_t - q_bar) W_K'^iT>| <= scale * written_rms_j * read_rms_i

and an edge ``w_j G_ji`` whose bound is below the n-th largest edge already computed can never be among the top n
edges, nor the source of a head whose best computed edge it cannot beat. The scores come first (they need no pair),
so the top heads are known before any pair is; the pairs then go best first, largest bounds first, over every layer.
No threshold is free: what is computed is exactly what could change the reported edges and top heads' sources.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from circuits.models.layers import einsum


def _token_gram(vectors: jax.Array, keep: jax.Array) -> jax.Array:
    """f32[..., D, D]: the covariance over the kept rows of vectors f32[n, ..., D] (their Gram after the mean is taken out)."""
    weight = keep.astype(jnp.float32).reshape((-1,) + (1,) * (vectors.ndim - 1))
    count = jnp.maximum(weight.sum(), 1.0)
    centred = (vectors - (vectors * weight).sum(0) / count) * weight
    return jnp.einsum("n...d,n...e->...de", centred, centred, precision=jax.lax.Precision.HIGHEST) / count


def _gram(weights: jax.Array, spec: str) -> jax.Array:
    return einsum(spec, weights.astype(jnp.float32), weights.astype(jnp.float32), preferred_element_type=jnp.float32)


@jax.jit
def written_rms(values: jax.Array, keep: jax.Array, wo: jax.Array) -> jax.Array:
    """f32[A, G]: root mean square over the kept stand-ins of ``||(v - v_bar) W_O||`` for each writing head, from its
    values f32[n, A, D] and W_O [A, G, D, M] (through D x D Grams)."""
    contracted = einsum("ade,aged->ag", _token_gram(values, keep), _gram(wo, "agdm,agem->agde"))
    return jnp.sqrt(jnp.maximum(contracted, 0.0))


@jax.jit
def read_rms(queries: jax.Array, keep: jax.Array, wk: jax.Array) -> jax.Array:
    """f32[K, G]: root mean square over the kept stand-ins of ``||(q - q_bar) W_K^T||`` for each reading head, from its
    queries f32[n, K, G, D] and (RoPE-averaged) W_K [M, K, D]."""
    contracted = einsum("kgde,ked->kg", _token_gram(queries, keep), _gram(wk, "mkd,mke->kde"))
    return jnp.sqrt(jnp.maximum(contracted, 0.0))


@jax.jit
def cross_gain(query_inputs: jax.Array, key_inputs: jax.Array, wq: jax.Array, wk: jax.Array, keep: jax.Array,
               scale: float) -> jax.Array:
    """f32[K, G]: the logit gain (nats, before the reading layer's residual RMS) of a key whose input is the query's own
    token's: mean over kept tokens of ``(x_t W_Q) . (y_t W_K)`` minus ``mean_t x_t W_Q . mean_t y_t W_K``, for query
    inputs x f32[n, M] and key inputs y f32[n, M]; W_Q [M, K, G, D], W_K [M, K, D] (RoPE-averaged)."""
    weight = keep.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)
    queries = einsum("nm,mkgd->nkgd", query_inputs * weight[:, None], wq, preferred_element_type=jnp.float32)
    keys = einsum("nm,mkd->nkd", key_inputs * weight[:, None], wk, preferred_element_type=jnp.float32)
    diagonal = einsum("nkgd,nkd->kg", queries, keys) / count
    mean = einsum("kgd,kd->kg", queries.sum(0) / count, keys.sum(0) / count)
    return (diagonal - mean) * scale


class EdgeFrontier:
    """The ``n_edges`` largest edges computed so far: their smallest is a lower bound on the smallest reported edge."""

    def __init__(self, n_edges: int):
        self.n_edges = n_edges
        self._edges = np.full(0, -np.inf, np.float32)

    def edge_threshold(self) -> float:
        """The ``n_edges``-th largest edge so far (-inf while fewer are known)."""
        return float(self._edges[-self.n_edges]) if len(self._edges) >= self.n_edges > 0 else -np.inf

    def missing_edges(self) -> int:
        """How many more edges must be known before :meth:`edge_threshold` is finite."""
        return max(self.n_edges - len(self._edges), 0)

    def add_edges(self, edges: np.ndarray) -> None:
        finite = edges[np.isfinite(edges)]
        self._edges = np.sort(np.concatenate([self._edges, finite]))[-max(self.n_edges, 1):]


def sources_to_compute(bounds: np.ndarray, computed: np.ndarray, edges: np.ndarray, frontier: EdgeFrontier,
                       top: np.ndarray) -> np.ndarray:
    """bool[S]: the source heads (rows of ``bounds`` f32[S, N], the bound on each edge into this layer's N heads) whose
    edges to compute next: any that can reach the top edges (while fewer edges are known than are reported, those
    with the largest bounds), and, for each top head (``top`` bool[N]), any that can
    beat its best edge computed so far (``edges`` f32[S, N], read where ``computed`` bool[S]), or, with none computed
    yet, the one with the largest bound. Called until it returns none, it leaves uncomputed only edges that are
    neither among the top edges nor a top head's largest."""
    pending = ~computed
    threshold = frontier.edge_threshold()
    if np.isfinite(threshold):
        needed = (bounds >= threshold).any(axis=1)
    else:  # fewer edges known than are reported: first the pairs with the largest bounds
        needed = np.zeros(len(bounds), bool)
        open_bounds = np.where(pending[:, None], bounds, -np.inf).reshape(-1)
        largest = np.argsort(-open_bounds, kind="stable")[: frontier.missing_edges()]
        needed[np.unique(largest[np.isfinite(open_bounds[largest])] // bounds.shape[1])] = True
    best = np.where(computed[:, None], edges, -np.inf).max(axis=0, initial=-np.inf)  # [N]
    needed |= ((top & np.isfinite(best))[None, :] & (bounds >= best[None, :])).any(axis=1)
    for head in np.nonzero(top & ~np.isfinite(best))[0]:
        if pending.any():
            needed[np.argmax(np.where(pending, bounds[:, head], -np.inf))] = True
    return needed & pending
