"""Head ablation and attention knockout sweeps that pay only for what changes, and their gradient estimates.

:func:`sweep_losses` runs the clean forward once, keeps the residual stream at every layer's input,
and runs each head set only from its lowest touched layer upward (sets grouped by that layer,
vmapped in chunks, one compiled program for every start layer); only the loss positions are
unembedded. Head sets are data: changing them never recompiles.
:func:`estimate_sweep_losses` gives the first-order estimate of every set from one forward and one
backward (attribution patching): interventions are data, so gradients flow into them.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec

from circuits.analysis import batching
from circuits.analysis.batching import rows_per_pass
from circuits.models.config import ModelConfig
from circuits.models.interventions import Interventions
from circuits.models.sharding import global_array, host_array, mesh_of
from circuits.models.transformer import Transformer, reading_jit
from circuits.utils import progress


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


@reading_jit
def _mean_z(model: Transformer, tokens: jax.Array) -> jax.Array:
    _, captured = model.forward(tokens, capture=("z",))
    return captured["z"].astype(jnp.float32).mean(axis=(1, 2))  # [L, B, T, K, G, D] -> [L, K, G, D]


def mean_head_outputs(model: Transformer, tokens) -> jax.Array:
    """f32[L, K, G, D]: each head's output z averaged over a reference batch int[B, T] and its positions;
    the replacement values for mean ablation."""
    return _mean_z(model, jnp.asarray(tokens, jnp.int32))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class SweepData:
    """Tokens int32[B, T], the loss positions int32[P] (columns where any row's mask is set), their
    targets int32[B, P] and weights f32[B, P] (the mask there)."""

    tokens: jax.Array
    positions: jax.Array
    targets: jax.Array
    weights: jax.Array

    @property
    def total_weight(self) -> float:
        """What the summed losses are divided by: the number of loss positions over all sequences (at least 1)."""
        return max(float(self.weights.sum()), 1.0)

    def rows(self, start, size: int) -> "SweepData":
        """The same loss positions, for sequences ``start`` .. ``start + size`` only (``start`` may be traced)."""
        cut = functools.partial(jax.lax.dynamic_slice_in_dim, start_index=start, slice_size=size, axis=0)
        return dataclasses.replace(self, tokens=cut(self.tokens), targets=cut(self.targets), weights=cut(self.weights))

    @classmethod
    def make(cls, tokens, loss_mask) -> "SweepData":
        tokens = np.asarray(tokens, np.int32)
        mask = np.broadcast_to(np.asarray(loss_mask, bool), (tokens.shape[0], tokens.shape[1] - 1))
        positions = np.nonzero(mask.any(axis=0))[0].astype(np.int32)
        return cls(
            jnp.asarray(tokens), jnp.asarray(positions), jnp.asarray(tokens[:, positions + 1]),
            jnp.asarray(mask[:, positions], jnp.float32),
        )


def _loss_sum_at_positions(logits: jax.Array, data: SweepData) -> jax.Array:
    """Summed next-token loss (nats) from the logits f32[B, P, V] at the loss positions, weighted by the mask."""
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    losses = -jnp.take_along_axis(log_probs, data.targets[..., None], axis=-1)[..., 0]
    return (losses * data.weights).sum()


@reading_jit
def _clean_residuals(model: Transformer, tokens: jax.Array) -> jax.Array:
    """f32[L, B, T, M]: the clean residual stream at the input of every layer."""
    _, captured = model.forward(tokens, capture=("resid_pre",))
    return captured["resid_pre"]


@functools.partial(jax.jit, static_argnames=("graphdef", "n_rows"))
def _sweep_chunk(graphdef, state, residual, first_layer, data: SweepData, base: Interventions, ablate, knock_out, row_start,
                 n_rows: int):
    """Summed losses f32[c] over sequences ``row_start`` .. ``row_start + n_rows`` of c head sets that all leave
    layers < ``first_layer`` untouched, run from the clean ``residual`` [B, T, M] at that layer's input
    (``first_layer`` and ``row_start`` are traced: one program for every layer and row chunk)."""
    data, base = data.rows(row_start, n_rows), base.rows(row_start, n_rows)
    residual = jax.lax.dynamic_slice_in_dim(residual, row_start, n_rows, axis=0)

    def one(ablate_i, knock_i):
        model = nnx.merge(graphdef, state)
        interventions = base.ablate(ablate_i)
        if knock_i is not None:
            interventions = dataclasses.replace(interventions, knockout_heads=knock_i)
        final = model.run_layers_from(residual, first_layer, interventions)
        return _loss_sum_at_positions(model.residual_logits(final[:, data.positions]), data)  # only the loss positions

    return jax.vmap(one)(ablate, knock_out)


def _intervention_base(config: ModelConfig, sets: np.ndarray, knock_out, edges, replacement) -> Interventions:
    base = Interventions.none(config)
    if replacement is not None:
        base = dataclasses.replace(base, head_replacement=jnp.asarray(replacement, jnp.float32))
    if knock_out is not None:
        if edges is None:
            raise ValueError("knock_out needs the edges to knock out (bool[B, T, S]); see circuits.analysis.targets")
        base = base.knock_out(jnp.asarray(edges, bool), jnp.zeros(sets.shape[1:], bool))
    base.check(config)
    return base


def _chunk_shape(config: ModelConfig, data: SweepData, largest_group: int, chunk: int | None) -> tuple[int, int]:
    """(sets, sequences) per program call: what :data:`~circuits.analysis.batching.PASS_BUDGET_BYTES` allows for
    the logits at the loss positions (with their softmax), sets balanced so a layer's group splits evenly; the
    batch is split into row chunks only when one set's logits exceed the budget."""
    n_rows = int(data.tokens.shape[0])
    per_set_row = 3 * int(data.positions.shape[0]) * config.vocab_size * 4
    rows = rows_per_pass(n_rows, per_set_row)
    if chunk is None:
        chunk = max(1, batching.PASS_BUDGET_BYTES // (per_set_row * rows))
    calls = -(-largest_group // chunk)
    return max(1, -(-largest_group // calls)), rows


class _SetPlacement:
    """Puts a chunk of head sets bool[c, ...] on the model's mesh with the set axis split over ``data`` (so a
    multi-process or multi-device sweep divides the sets among the device rows); on one device, as it is."""

    def __init__(self, mesh):
        self.mesh = mesh
        self.split = 1 if mesh is None else mesh.shape["data"]

    def __call__(self, sets: np.ndarray) -> jax.Array:
        if self.mesh is None:
            return jnp.asarray(sets)
        sharding = NamedSharding(self.mesh, PartitionSpec("data", *([None] * (sets.ndim - 1))))
        return global_array(sets.shape, sharding, lambda index: sets[index])


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
    show_progress: bool | None = None,
) -> np.ndarray:
    """f32[n]: mean next-token loss (nats, where ``loss_mask`` bool[T-1] or [B, T-1] is True) for each of n
    interventions.

    ablate: bool[n, L, K, G] heads to ablate in set i (zero ablation, or mean ablation with
        ``replacement`` f32[L, K, G, D], e.g. :func:`mean_head_outputs`);
    knock_out: bool[n, L, K, G] heads in which ``edges`` bool[B, T, S] are knocked out in set i.

    Pays only for what changes: one clean forward keeps the residual stream at every layer's input;
    each set then runs only from its lowest touched layer upward (sets grouped by that layer, ``chunk``
    sets vmapped per call, one compiled program for all layers), and only the loss positions are
    unembedded. ``show_progress``: a bar with an ETA (default: on for more than 8 sets).
    """
    config = model.config
    data = SweepData.make(tokens, loss_mask)
    sets = next(np.asarray(x, bool) for x in (ablate, knock_out) if x is not None)
    n = sets.shape[0]
    ablate = np.zeros_like(sets) if ablate is None else np.asarray(ablate, bool)
    base = _intervention_base(config, sets, knock_out, edges, replacement)
    touched = ablate | (np.asarray(knock_out, bool) if knock_out is not None else False)
    touched_layers = touched.reshape(n, config.n_layers, -1).any(axis=-1)
    first_layers = np.where(touched_layers.any(axis=1), touched_layers.argmax(axis=1), config.n_layers)
    residuals = _clean_residuals(model, data.tokens)
    graphdef, state = nnx.split(model)
    groups = {layer: np.nonzero(first_layers == layer)[0] for layer in np.unique(first_layers)}
    size, n_rows = _chunk_shape(config, data, max(len(members) for members in groups.values()), chunk)
    place = _SetPlacement(mesh_of(model.embed[...]))
    size = -(-size // place.split) * place.split  # every device row along ``data`` gets the same number of sets
    calls = [(layer, members[i : i + size], row_start) for layer, members in groups.items() for i in range(0, len(members), size)
             for row_start in range(0, int(data.tokens.shape[0]), n_rows)]
    if show_progress is None:
        show_progress = n > 8
    loss_sums = np.zeros(n, np.float64)
    for layer, members, row_start in progress(calls, f"sweep over {n} head set{'s' * (n != 1)}", enabled=show_progress):
        padded = np.resize(members, size)  # a full chunk (repeating members), so every call has one shape
        knock = None if knock_out is None else place(np.asarray(knock_out, bool)[padded])
        start = min(int(layer), config.n_layers - 1)  # untouched sets run the last layer, unchanged
        result = _sweep_chunk(graphdef, state, residuals[start], jnp.int32(start), data, base, place(ablate[padded]), knock,
                              jnp.int32(row_start), n_rows)
        loss_sums[members] += host_array(result)[: len(members)]
    return (loss_sums / data.total_weight).astype(np.float32)


def estimate_sweep_losses(
    model: Transformer, tokens, loss_mask, *, ablate=None, knock_out=None, edges=None, replacement=None,
    show_progress: bool = False,
) -> np.ndarray:
    """f32[n]: first-order estimates of :func:`sweep_losses` for every set at once (attribution patching).

    One forward and one backward: the loss's gradient with respect to each head's output scale (and, with
    ``knock_out``, to each head's knockout gate) at the clean point; a set's estimate is the clean loss
    plus the summed linear change of its heads. Exact for one head where the loss is linear in its output.
    ``show_progress``: a bar over the row chunks the backward pass is split into.
    """
    config = model.config
    data = SweepData.make(tokens, loss_mask)
    sets = next(np.asarray(x, bool) for x in (ablate, knock_out) if x is not None)
    base = _intervention_base(config, sets, knock_out, edges, replacement)
    if knock_out is not None:
        base = dataclasses.replace(base, knockout_heads=jnp.zeros(sets.shape[1:], jnp.float32))
    graphdef, state = nnx.split(model)
    clean, scale_grad, gate_grad = 0.0, 0.0, 0.0
    n_rows = rows_per_pass(int(data.tokens.shape[0]), _backward_bytes_per_row(config, data))
    starts = range(0, int(data.tokens.shape[0]), n_rows)
    for row_start in progress(starts, "gradient estimate (forward + backward)", enabled=show_progress):  # sums add up exactly
        loss_sum, (scale_sum, gate_sum) = _loss_sum_gradients(graphdef, state, data, base, jnp.int32(row_start), n_rows)
        clean += float(loss_sum)
        scale_grad = scale_grad + host_array(scale_sum).astype(np.float64)
        gate_grad = gate_grad + (host_array(gate_sum).astype(np.float64) if gate_sum is not None else 0.0)
    clean, scale_grad, gate_grad = clean / data.total_weight, scale_grad / data.total_weight, gate_grad / data.total_weight
    change = np.zeros(sets.shape[0], np.float64)
    if ablate is not None:  # scale 1 -> 0: change = -dL/ds
        change -= np.einsum("nlkg,lkg->n", np.asarray(ablate, np.float64), scale_grad)
    if knock_out is not None:  # gate 0 -> 1: change = +dL/dgate
        change += np.einsum("nlkg,lkg->n", np.asarray(knock_out, np.float64), gate_grad)
    return (float(clean) + change).astype(np.float32)


def _backward_bytes_per_row(config: ModelConfig, data: SweepData) -> int:
    """Estimated bytes one sequence holds for a backward pass: every layer's input residual (the layers are
    recomputed in the backward pass), one layer's activations (residual, attention, patterns, MLP) and the loss
    positions' logits with their softmax and gradient."""
    seq_len, positions = data.tokens.shape[1], data.positions.shape[0]
    one_layer = seq_len * (8 * config.d_model + 3 * config.d_mlp + 2 * config.n_heads * seq_len)
    return 4 * (config.n_layers * seq_len * config.d_model + one_layer + 3 * positions * config.vocab_size)


@functools.partial(jax.jit, static_argnames=("graphdef", "n_rows"))
def _loss_sum_gradients(graphdef, state, data: SweepData, base: Interventions, row_start, n_rows: int):
    """(summed loss over sequences ``row_start`` .. ``row_start + n_rows``, (its gradient with respect to
    head_scale [L, K, G], to the knockout gate [L, K, G] or None)), unembedding only the loss positions."""
    data, base = data.rows(row_start, n_rows), base.rows(row_start, n_rows)

    def loss(scale, gate):
        interventions = dataclasses.replace(base, head_scale=scale, knockout_heads=gate)
        model = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))  # Variables of this trace
        final = model.run_layers_from(model.embed_tokens(data.tokens), 0, interventions)
        return _loss_sum_at_positions(model.residual_logits(final[:, data.positions]), data)

    argnums = (0,) if base.knockout_heads is None else (0, 1)
    value, grads = jax.value_and_grad(loss, argnums=argnums)(base.head_scale, base.knockout_heads)
    return value, (grads[0], grads[1] if len(grads) > 1 else None)
