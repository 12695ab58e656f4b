"""Weight-only prediction of induction circuits: previous-token head -> induction head edges.

Method ``prefix-share`` (default) predicts the measured prefix-matching share itself (:mod:`~circuits.analysis.context`): each
head's share of the matching key on the measurement's context, where the matching key's extra logit is
``sum_j p_j G'_ji + sum_h s_h G^Q_hi`` (p_j: head j's predicted previous-token share; G': the gain in nats at head
i's input; the query side: an earlier head h with predicted prefix share s_h copies the next token into the query,
which then matches the key's own token, :func:`_query_side_gain`), on stand-ins that receive first-order mean-field
attention outputs (:mod:`~circuits.analysis.standins`). Each layer's shares are computed when the pass reaches it.
Edge strength: ``p_j G'_ji``.

Method ``kcomp-token-zgain``. An induction head i reads, through K-composition, the output of
a previous-token head j, and its QK circuit then matches the current token against the previous
token of each key (Olsson et al. 2022). Edge strength::

    edge(j -> i) = S_ji * max(Z_ji, 0) * max(G_ji, 0),   predicted_induction_i = max_j edge(j -> i)

- ``S_ji``: K-composition of head j's OV into head i's RoPE-averaged QK circuit ``W_Q R_bar W_K^T``
  (:mod:`~circuits.analysis.rope`), in units of its random baseline;
- the token-level prefix-matching circuit ``C = X_i W_Q^i R_bar W_K^iT (X_j W_V^j W_O^j)^T / sqrt(D)``
  over sampled token stand-ins (:mod:`~circuits.analysis.standins`), attention logits of a query
  token a against a key whose previous token b was moved there by head j;
- ``G_ji`` (logit gain, nats): mean of its diagonal minus the mean of all entries, how much more a
  query attends to a key whose previous token is itself;
- ``Z_ji``: that gain over the std of all entries, how reliably it does so.

The gain tells an induction head from a head whose QK only weakly prefers the matching key (in
trained models, heads one layer below the induction heads often have a high Z but a small gain).
Method ``kcomp-token-z`` drops the gain factor (``S * max(Z, 0)``), for comparison.

Method ``token-zgain-rms`` (``max(Z, 0) * max(G', 0)``) drops the K-composition ratio and puts the gain in nats at
the reading head's real input: G' is G divided by the residual RMS of the typical stand-in at the reading layer
(what its input norm divides by) and, with post-attention norms, by the RMS of the writing head's own output
(what that norm divides by). No free constant; its scores are comparable across layers and models.

Everything goes through D x D factors (no n x n, V x V or M x M matrix), in one streaming pass:
``P_ji = W_O^j W_K'^i`` [D, D] is the one M-long product per head pair, and

    sum_a C_aa = <P, V_j^T Q_i>,  mean(C) = v_bar P q_bar,  sum C^2 = <(V_j^T V_j) P, P (Q_i^T Q_i)>

with ``Q_i = X_i W_Q^i`` and ``V_j = X_j W_V^j`` [n, D].

Method ``ov-kcomp-eigen`` (the earlier score, kept for comparison): ``max(OV copying, 0) * K-comp ratio
* max(eigenvalue positivity of the virtual QK circuit on raw embeddings, 0)``. OV copying (embed ->
unembed) is reported by both as a diagnostic only: in deep models induction heads write into later
layers, and that score is anti-correlated with induction.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from circuits import distributed
from circuits.analysis.composition import (
    CHUNK_BYTES,
    composition_baseline,
    composition_tensors,
    default_product_dtype,
    later_norms,
    product_compute_dtype,
    rotate_keys,
)
from circuits.analysis.context import ContextProtocol, context_shares, layer_context, layer_window
from circuits.analysis.methods import METHODS, PAIR_MODES, SHARE_METHODS
from circuits.analysis.ov import copying_score, ov_copying_scores, ov_eigenvalues
from circuits.analysis.pair_bounds import EdgeFrontier, cross_gain, read_rms, sources_to_compute, written_rms
from circuits.analysis.phases import phase
from circuits.analysis.results import CompositionScores, HeadScores
from circuits.analysis.rope import DEFAULT_OFFSETS, layer_rope_averages, rope_average
from circuits.analysis.standins import DEFAULT_BLOWUP, DEFAULT_TOKENS, TokenStandins, mean_field_attention, sample_token_ids
from circuits.analysis.weights import AttentionWeights, Preprocessing, WeightReader, fold_qk_norm
from circuits.models.layers import einsum
from circuits.models.layout import TensorSource
from circuits.utils import head_label, progress, rounded_list

SCHEMA_VERSION = 3  # of InductionPrediction.to_dict


def _flat_heads(w: AttentionWeights) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """Per flat query head h = k * G + g: W_Q [N, M, D], W_K [N, M, D], W_V [N, M, D], W_O [N, D, M]."""
    m, k, g, d = w.wq.shape
    wq = w.wq.reshape(m, k * g, d).transpose(1, 0, 2)
    wk = jnp.repeat(w.wk.transpose(1, 0, 2), g, axis=0)
    wv = jnp.repeat(w.wv.transpose(1, 0, 2), g, axis=0)
    return wq, wk, wv, w.wo.reshape(k * g, d, m)


@jax.jit
def virtual_qk_cores(
    embed_gram: jax.Array, earlier: AttentionWeights, later: AttentionWeights, js: jax.Array, is_: jax.Array
) -> jax.Array:
    """f32[P, D, D] for head pairs (earlier head js[p], later head is_[p]): (W_O^j W_K^i)^T W_V^jT (W_E^T W_E) W_Q^i."""
    _, _, wv1, wo1 = _flat_heads(earlier)
    wq2, wk2, _, _ = _flat_heads(later)
    output_key = einsum("pdm,pme->pde", wo1[js], wk2[is_])
    value_query = einsum("pmd,mn,pne->pde", wv1[js], embed_gram, wq2[is_])
    return einsum("pde,pdf->pef", output_key, value_query)


def token_k_composition(
    source: TensorSource,
    *,
    pairs: np.ndarray | None = None,
    fold_norms: bool = True,
    show_progress: bool = False,
) -> np.ndarray:
    """Eigenvalue positivity Re(sum l) / sum |l| of the virtual QK circuit for head pairs, f32[L, N, L, N].

    ``pairs``: bool[L, N, L, N] of the (earlier, later) pairs to compute (default: every pair with the
    earlier head in an earlier layer). Pairs not computed are NaN.
    """
    reader = WeightReader(source, fold_norms=fold_norms)
    config = reader.config
    n_layers, n_heads = config.n_layers, config.n_heads
    if pairs is None:
        pairs = np.zeros((n_layers, n_heads, n_layers, n_heads), bool)
        for later in range(n_layers):
            pairs[:later, :, later, :] = True
    terms = np.full(pairs.shape, np.nan, np.float32)
    embed_gram = reader.embed_gram()
    layer_pairs = sorted({(int(a), int(b)) for a, _, b, _ in zip(*np.nonzero(pairs)) if a < b})
    cached: dict[int, AttentionWeights] = {}
    for earlier, later in progress(layer_pairs, "token-level K-composition", enabled=show_progress):
        for layer in (earlier, later):
            if layer not in cached:
                cached = {k: v for k, v in cached.items() if k in (earlier, later)}
                cached[layer] = reader.attention(layer)
        js, is_ = np.nonzero(pairs[earlier, :, later, :])
        cores = virtual_qk_cores(embed_gram, cached[earlier], cached[later], jnp.asarray(js), jnp.asarray(is_))
        eigenvalues = np.linalg.eigvals(np.asarray(cores, np.float64))
        terms[earlier, js, later, is_] = copying_score(eigenvalues)
    return terms


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class EarlierHeads:
    """What a streaming pass keeps of earlier layers, stacked over a block of A = layers * K KV heads.

    wo [A, G, D, M] (product dtype), value_gram [A, D, D] (W_V^T W_V), ov_norm [A, G] (||W_V W_O||_F), values
    [n, A, D] (stand-ins through W_V).
    """

    wo: jax.Array
    value_gram: jax.Array
    ov_norm: jax.Array
    values: jax.Array


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LaterHeads:
    """The reading layer: wk [M, K, D] (W_K R_bar^T, product dtype), query_gram [K, G, D, D] (W_Q^T W_Q), qk_norm
    [K, G] (||W_Q R_bar W_K^T||_F), queries [n, K, G, D] (stand-ins through W_Q, zero rows for dropped tokens)."""

    wk: jax.Array
    query_gram: jax.Array
    qk_norm: jax.Array
    queries: jax.Array


def _einsum(spec: str, *operands: jax.Array) -> jax.Array:
    return einsum(spec, *operands, preferred_element_type=jnp.float32)


@jax.jit
def _stand_in_values(w: AttentionWeights, standins: jax.Array) -> jax.Array:
    """f32[n, K, D]: the stand-ins f32[n, M] through W_V, value bias included."""
    return _einsum("nm,mkd->nkd", standins, w.wv) + (0.0 if w.bv is None else w.bv)


@jax.jit
def _earlier_heads(w: AttentionWeights, standins: jax.Array) -> EarlierHeads:
    """One layer's EarlierHeads (A = K) from its weights and its stand-ins f32[n, M]."""
    value_gram = _einsum("mkd,mke->kde", w.wv, w.wv)
    ov_norm = later_norms(w, "v").reshape(w.wo.shape[:2])
    return EarlierHeads(w.wo, value_gram, ov_norm, _stand_in_values(w, standins))


@jax.jit
def _output_rms(values: jax.Array, keep: jax.Array, wo: jax.Array) -> jax.Array:
    """f32[K, G]: RMS over the kept stand-ins and M of each head's output ``x W_V W_O`` before a post-attention norm
    (from D x D Grams), from the stand-ins' values f32[n, K, D] and W_O f32[K, G, D, M] as stored (no gain folded)."""
    weight = keep.astype(jnp.float32)
    values = values * weight[:, None, None]
    value_gram = _einsum("nkd,nke->kde", values, values) / jnp.maximum(weight.sum(), 1.0)
    output_gram = _einsum("kgdm,kgem->kgde", wo.astype(jnp.float32), wo.astype(jnp.float32))
    return jnp.sqrt(jnp.maximum(_einsum("kde,kged->kg", value_gram, output_gram) / wo.shape[-1], 1e-30))


@jax.jit
def _later_heads(w: AttentionWeights, standins: jax.Array) -> LaterHeads:
    """The reading layer's LaterHeads; ``w.wk`` must already be RoPE-averaged (:func:`rotate_keys`) and QK-norm
    folded in (:func:`fold_qk_norm`). The stand-ins' queries include the query bias."""
    query_gram = _einsum("mkgd,mkge->kgde", w.wq, w.wq)
    qk_norm = later_norms(w, "k").reshape(w.wq.shape[1:3])
    queries = _einsum("nm,mkgd->nkgd", standins, w.wq) + (0.0 if w.bq is None else w.bq)
    return LaterHeads(w.wk, query_gram, qk_norm, queries)


@jax.jit
def _copied_outputs(values: jax.Array, wo: jax.Array, share: jax.Array) -> jax.Array:
    """f32[n, M]: what one layer's heads write into a later repeat's query whose next token is each stand-in's token, as
    induction heads copy it: ``sum_h share_h x W_V^h W_O^h`` (``values`` f32[n, K, D]: the stand-ins' values, ``wo``
    f32[K, G, D, M], ``share`` f32[K, G]: each head's predicted prefix-matching share, with which it attends to the key
    holding that token)."""
    return _einsum("nkd,kg,kgdm->nm", values, share, wo.astype(jnp.float32))


def _query_side_gain(copied: jax.Array, w: AttentionWeights, standins: jax.Array, keep: jax.Array, scale: float) -> jax.Array:
    """f32[K, G]: the logit gain (nats, before the reading layer's residual RMS) on the key whose own token is the one
    earlier induction heads copied into the query (``copied`` f32[n, M], :func:`_copied_outputs` summed over earlier
    layers): mean over tokens of copied query . own key, minus mean query . mean key. ``w``: the reading layer with
    RoPE-averaged, QK-norm-folded keys; ``standins`` f32[n, M] the keys' stand-ins."""
    return cross_gain(copied, standins, w.wq, w.wk, keep, scale)


PREVIOUS_TOKEN_OFFSETS = 32


def offset_rotations(config, layer_type: str = "full_attention", max_offset: int = PREVIOUS_TOKEN_OFFSETS) -> jax.Array:
    """f32[max_offset + 1, D, D]: R(-Delta) for Delta = 0 .. max_offset, so ``q @ R[Delta] @ k`` is the RoPE
    logit of a query and a key Delta positions before it, in layers of kind ``layer_type``."""
    return jnp.stack([jnp.asarray(rope_average(config, (offset, offset), layer_type)) for offset in range(max_offset + 1)])


@jax.jit
def _previous_token_preference(
    queries: jax.Array, wk: jax.Array, bk: jax.Array | None, standins: jax.Array, keep: jax.Array, rotations: jax.Array, scale: float
) -> jax.Array:
    """f32[K, G] in [0, 1]: how much each head prefers the previous position, from the weights alone.

    Softmax, over the key offsets 0 .. R-1, of the mean logit: offset 0 is the query's own token (a
    stand-in against itself), offset Delta > 0 a different token Delta positions back (mean query
    against mean key, rotated); the value is the probability of offset 1. ``queries`` [n, K, G, D]: the
    stand-ins through W_Q (:class:`LaterHeads`); ``wk`` [M, K, D], ``bk`` [K, D] or None: the layer's W_K and
    key bias, not RoPE-averaged; ``scale``: the model's factor on attention logits.
    """
    weight = keep.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)
    queries = queries * weight[:, None, None, None]
    keys = (_einsum("nm,mkd->nkd", standins, wk) + (0.0 if bk is None else bk)) * weight[:, None, None]
    itself = _einsum("nkgd,nkd->kg", queries, keys) / count
    others = _einsum("kgd,rde,ke->rkg", queries.sum(0) / count, rotations, keys.sum(0) / count)
    logits = jnp.concatenate([itself[None], others[1:]]) * scale
    return jax.nn.softmax(logits, axis=0)[1]


def _matmul(a: jax.Array, b: jax.Array) -> jax.Array:
    """A (batched) 2-D matrix product in float32, full precision: XLA's CPU backend runs these as whole GEMMs, where
    einsums with batch axes between free ones run several times slower."""
    return jnp.matmul(a, b, precision=jax.lax.Precision.HIGHEST, preferred_element_type=jnp.float32)


@functools.partial(jax.jit, static_argnames=("compute_dtype",))
def _edge_terms(earlier: EarlierHeads, later: LaterHeads, keep: jax.Array, scale: float, compute_dtype: str = "float32"
                ) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(K-composition, token z-score, token logit gain in nats), each f32[A, G, K, G'], of every earlier head
    (a, g) into every later head (k, g'); ``keep`` bool[n] marks the stand-ins in use; ``scale``: the model's
    factor on attention logits (turns the gain into nats); ``compute_dtype``: what the M-long product's inputs
    (stored in the product dtype) are widened to, see :func:`~circuits.analysis.composition.product_compute_dtype`.

    Both quadratic terms are traces ``tr(P^T S P T) = <S P, P T>`` of the product P with a Gram pair (S, T):
    (W_V^T W_V, W_Q^T W_Q) gives ||L_V^T P L_Q||_F^2 (K-composition), the stand-ins' (V^T V, Q^T Q) gives sum C^2.
    """
    n_a, n_g, d, m = earlier.wo.shape
    n_k, n_h = later.query_gram.shape[:2]
    wo = earlier.wo.astype(compute_dtype).reshape(n_a * n_g * d, m)
    wk = later.wk.astype(compute_dtype).reshape(m, n_k * d)
    output_key = _matmul(wo, wk).reshape(n_a, n_g, d, n_k, d)  # P = W_O^j W_K'^i: the M-long product, [a g d k e]

    weight = keep.astype(jnp.float32)
    count = jnp.maximum(weight.sum(), 1.0)
    values = earlier.values * weight[:, None, None]
    queries = later.queries * weight[:, None, None, None]
    left_grams = jnp.stack([earlier.value_gram, _einsum("nad,nae->ade", values, values)], axis=1)  # [a s d' d]
    right_grams = jnp.stack([later.query_gram, _einsum("nkhd,nkhe->khde", queries, queries)], axis=2)  # [k h s e f]
    by_kv = output_key.transpose(3, 0, 1, 2, 4).reshape(n_k, n_a * n_g * d, d)  # [k, (a g d), e]
    right = _matmul(by_kv, right_grams.transpose(0, 3, 1, 2, 4).reshape(n_k, d, n_h * 2 * d))  # P T: [k, (a g d), (h s f)]
    by_value = output_key.transpose(0, 2, 1, 3, 4).reshape(n_a, d, n_g * n_k * d)  # [a, d, (g k e)]
    left = _matmul(left_grams.reshape(n_a, 2 * d, d), by_value)  # S P: [a, (s d'), (g k e)]
    traces = _einsum("asdgke,kagdhse->sagkh", left.reshape(n_a, 2, d, n_g, n_k, d),
                     right.reshape(n_k, n_a, n_g, d, n_h, 2, d))
    k_composition = jnp.sqrt(jnp.maximum(traces[0], 0.0))
    k_composition = k_composition / jnp.maximum(earlier.ov_norm[:, :, None, None] * later.qk_norm[None, None], 1e-30)

    cross = _matmul(values.reshape(-1, n_a * d).T, queries.reshape(-1, n_k * n_h * d))  # sum_n v q^T: [(a d), (k h e)]
    diagonal = _einsum("adkhe,agdke->agkh", cross.reshape(n_a, d, n_k, n_h, d), output_key) / count
    mean = _einsum("ad,agdke,khe->agkh", values.sum(0) / count, output_key, queries.sum(0) / count)
    std = jnp.sqrt(jnp.maximum(traces[1] / count**2 - mean**2, 1e-30))
    gain = (diagonal - mean) * scale
    return k_composition, (diagonal - mean) / std, gain


CALL_FLOP = 2e9
"""Work one call of :func:`_edge_terms` should at least do (about 15 ms here), so that dispatch costs little."""


def _layers_per_call(flop: "_PhaseFlop") -> int:
    """Earlier layers per :func:`_edge_terms` call: enough for :data:`CALL_FLOP` on small models, one on large
    ones (a call always runs a full block, and the last block of each reading layer is padded: small blocks waste
    little), and never an intermediate product beyond ``CHUNK_BYTES``."""
    c = flop.config
    per_layer_bytes = 2 * c.n_heads * c.n_kv_heads * (c.n_heads // c.n_kv_heads) * c.head_dim**2 * 4  # the P T products
    return max(1, min(int(CALL_FLOP // flop.edge_terms) + 1, CHUNK_BYTES // per_layer_bytes, c.n_layers - 1))


def _stack_block(blocks: list[EarlierHeads], size: int) -> EarlierHeads:
    """``blocks`` (one per layer) concatenated and zero-padded to ``size`` layers, so that one compiled
    program serves every block (padded heads score 0)."""
    if len(blocks) == size == 1:
        return blocks[0]
    blocks = blocks + [jax.tree.map(jnp.zeros_like, blocks[0])] * (size - len(blocks))
    return EarlierHeads(
        wo=jnp.concatenate([b.wo for b in blocks]),
        value_gram=jnp.concatenate([b.value_gram for b in blocks]),
        ov_norm=jnp.concatenate([b.ov_norm for b in blocks]),
        values=jnp.concatenate([b.values for b in blocks], axis=1),
    )


@dataclasses.dataclass(frozen=True)
class InductionEdge:
    """A predicted previous-token head (prev_layer, prev_head) -> induction head (layer, head) edge.

    ``score``: the edge strength; ``k_composition_ratio``: K-composition in units of its random
    baseline; ``token_term``: the token-level term (Z for the ``kcomp-token-*`` methods, eigenvalue
    positivity for ``ov-kcomp-eigen``); ``token_gain``: the token-level logit gain G in nats
    (``kcomp-token-*`` only, else 0)."""

    prev_layer: int
    prev_head: int
    layer: int
    head: int
    score: float
    k_composition_ratio: float
    token_term: float
    token_gain: float = 0.0


@dataclasses.dataclass(frozen=True)
class PredictorSettings:
    """How a prediction was made (recorded in every result).

    ``rope_offsets``: the query-key offsets the QK circuit is averaged over (None: static QK);
    ``n_tokens`` / ``token_seed``: the sampled token stand-ins; ``standins``: their kind;
    ``blowup``: stand-ins with RMS above this multiple of the median are dropped; ``pairs``: see :data:`PAIR_MODES`.
    """

    method: str = METHODS[0]
    rope_offsets: tuple[int, int] | None = DEFAULT_OFFSETS
    n_tokens: int = DEFAULT_TOKENS
    token_seed: int = 0
    standins: str = "embeddings through the MLP blocks alone, RMS-normalised"
    blowup: float = DEFAULT_BLOWUP
    context: ContextProtocol = ContextProtocol()
    pairs: str = "all"

    @property
    def mean_field(self) -> bool:
        """Whether the stand-ins receive each layer's mean-field attention output (:mod:`~circuits.analysis.standins`)."""
        return self.method in SHARE_METHODS

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown prediction method {self.method!r}; choose from {', '.join(METHODS)}")
        if self.method != "ov-kcomp-eigen" and self.n_tokens < 2:
            raise ValueError(f"n_tokens must be at least 2, got {self.n_tokens}")
        if self.pairs not in PAIR_MODES:
            raise ValueError(f"unknown pairs mode {self.pairs!r}; choose from {', '.join(PAIR_MODES)}")
        if self.pairs == "bounded" and self.method not in SHARE_METHODS:
            raise ValueError(f"pairs='bounded' prunes the per-pair terms of prefix-share only, not of {self.method!r}; fix: use "
                             "method='prefix-share' or pairs='all'")

    @classmethod
    def legacy(cls) -> "PredictorSettings":
        """The ``ov-kcomp-eigen`` method: static QK on raw embeddings."""
        return cls(method="ov-kcomp-eigen", rope_offsets=None, n_tokens=0, standins="raw embeddings, whole vocabulary")


@dataclasses.dataclass(frozen=True)
class InductionPrediction:
    """Everything the weights say about induction circuits (see the module docstring for the method).

    predicted_induction [L, N]: max over earlier heads of the edge strength;
    source_heads int[L, N, 2]: for each head, the (layer, head) of its strongest previous-token head
    ((-1, -1) in layer 0); edge_strength / k_composition / token_terms (Z) / token_gain (G, nats):
    f32[L, N, L, N] over (earlier, later);
    ov_copying: the embed -> unembed OV copying score, a diagnostic column;
    previous_token: each head's weight-only preference for the previous position (``kcomp-token-*``: a diagnostic,
    not part of the score, see ``_previous_token_preference``; ``prefix-share``: the predicted previous-token share,
    on the measured scale, which weights each source's gain).
    """

    method: str
    settings: PredictorSettings
    ov_copying: HeadScores
    k_composition: CompositionScores
    token_terms: np.ndarray
    edge_strength: np.ndarray
    predicted_induction: HeadScores
    source_heads: np.ndarray
    edges: list[InductionEdge]
    preprocessing: Preprocessing
    previous_token: HeadScores | None = None
    token_gain: np.ndarray | None = None

    def source_of(self, layer: int, head: int) -> tuple[int, int]:
        """The predicted previous-token head (layer, head) that induction head (layer, head) reads."""
        prev_layer, prev_head = self.source_heads[layer, head]
        return int(prev_layer), int(prev_head)

    def __repr__(self) -> str:
        top = ", ".join(f"{head_label(l, h)} <- {head_label(*self.source_of(l, h))}" for l, h, _ in self.predicted_induction.top(3))
        layers, heads = self.predicted_induction.scores.shape
        return f"InductionPrediction({self.method}, {layers} layers x {heads} heads, top {top})"

    def _repr_html_(self, k: int = 10) -> str:
        """The top ``k`` heads as a table (score, source head, OV copying) beside their circuit graph."""
        import html

        from circuits.svg_figures import induction_graph

        rows = "".join(f"<tr><td>{rank}</td><td>{head_label(l, h)}</td><td>{score:.4g}</td><td>{head_label(*self.source_of(l, h))}</td>"
                       f"<td>{self.ov_copying.scores[l, h]:+.3f}</td></tr>" for rank, (l, h, score) in enumerate(self.predicted_induction.top(k), 1))
        table = ("<table><thead><tr><th>rank</th><th>head</th><th>predicted induction</th><th>source head</th><th>OV copying</th>"
                 f"</tr></thead><tbody>{rows}</tbody></table>")
        graph = induction_graph(self.predicted_induction.scores, self.source_heads, min(k, self.predicted_induction.scores.size))
        return (f"<div><p>Predicted induction heads (weights only, {html.escape(self.method)})</p>"
                f'<div style="display:flex;gap:1em;align-items:flex-start">{table}{graph}</div></div>')

    def to_dict(self, model_name: str) -> dict:
        """A versioned, JSON-ready summary (the ``analyze --out`` file)."""
        return {
            "schema_version": SCHEMA_VERSION,
            "model": model_name,
            "method": self.method,
            "settings": dataclasses.asdict(self.settings),
            "preprocessing": dataclasses.asdict(self.preprocessing),
            "ov_copying": rounded_list(self.ov_copying.scores),
            "predicted_induction": rounded_list(self.predicted_induction.scores),
            "source_heads": self.source_heads.tolist(),
            "k_composition_baseline": {"mean": self.k_composition.baseline_mean, "std": self.k_composition.baseline_std},
            "edges": [dataclasses.asdict(edge) for edge in self.edges],
        }


def _assemble(settings, ov, k_composition, terms, edge_strength, preprocessing, n_edges, previous_token=None, gain=None,
              predicted=None) -> InductionPrediction:
    """Predicted scores (given, or the max of the edge strengths), source heads and the top edges from edge strengths
    f32[L, N, L, N] (NaN: a pair not computed, ``pairs="bounded"``; a head with none computed has source (-1, -1))."""
    n_layers, n_heads = edge_strength.shape[:2]
    earlier_layer = np.arange(n_layers)[:, None, None, None] < np.arange(n_layers)[None, None, :, None]  # only these pairs exist
    flat = np.where(np.isnan(edge_strength) | ~earlier_layer, -np.inf, edge_strength).reshape(n_layers * n_heads, n_layers, n_heads)
    best, best_edge = flat.argmax(axis=0), flat.max(axis=0)
    source_heads = np.stack(np.unravel_index(best, (n_layers, n_heads)), axis=-1).astype(np.int32)
    source_heads[np.isneginf(best_edge)] = -1  # layer 0, and heads with no pair computed
    predicted = (np.where(np.isfinite(best_edge), best_edge, 0.0) if predicted is None else predicted).astype(np.float32)
    ratio = k_composition.ratio()
    edges = []
    for index in np.argsort(-flat.reshape(edge_strength.shape), axis=None, kind="stable")[:n_edges]:
        l1, j, l2, i = (int(x) for x in np.unravel_index(index, edge_strength.shape))
        if not edge_strength[l1, j, l2, i] > 0:
            break
        edges.append(InductionEdge(l1, j, l2, i, float(edge_strength[l1, j, l2, i]), float(ratio[l1, j, l2, i]), float(terms[l1, j, l2, i]),
                                   0.0 if gain is None else float(gain[l1, j, l2, i])))
    return InductionPrediction(
        method=settings.method,
        settings=settings,
        ov_copying=ov,
        k_composition=k_composition,
        token_terms=terms,
        edge_strength=edge_strength,
        predicted_induction=HeadScores("predicted_induction", predicted, preprocessing),
        source_heads=source_heads,
        edges=edges,
        preprocessing=preprocessing,
        previous_token=previous_token,
        token_gain=gain,
    )


def _source_block(earlier: list[EarlierHeads], sources: np.ndarray, n_kv: int, size: int) -> EarlierHeads:
    """The writing heads ``sources`` (flat indices layer * N + head into ``earlier``) as one block of ``size`` KV heads
    with one query head each (A = size, G = 1), zero-padded (padded heads score 0)."""
    n_g = earlier[0].wo.shape[1]
    picks = [divmod(int(source), n_kv * n_g) for source in sources]
    picks = [(layer, *divmod(head, n_g)) for layer, head in picks]
    pad = size - len(picks)

    def stacked(parts, axis=0):
        parts = [jnp.expand_dims(part, axis) for part in parts]
        return jnp.concatenate(parts + [jnp.zeros_like(parts[0])] * pad, axis=axis)

    return EarlierHeads(
        wo=stacked([earlier[layer].wo[a, g][None] for layer, a, g in picks]),
        value_gram=stacked([earlier[layer].value_gram[a] for layer, a, g in picks]),
        ov_norm=stacked([earlier[layer].ov_norm[a, g][None] for layer, a, g in picks]),
        values=stacked([earlier[layer].values[:, a] for layer, a, g in picks], axis=1),
    )


def _largest_rows(candidates: dict, bounds: dict, count: int) -> dict:
    """Of the candidate source rows (per reading layer, bool[S]), the ``count`` whose largest bound f32[S, N] is largest."""
    rows = [(layer, source) for layer, needed in candidates.items() for source in np.nonzero(needed)[0]]
    chosen = {layer: np.zeros_like(needed) for layer, needed in candidates.items()}
    order = np.argsort([-bounds[layer][source].max() for layer, source in rows], kind="stable")[:count]
    for index in order:
        layer, source = rows[index]
        chosen[layer][source] = True
    return chosen


def _bounded_edge_terms(earlier: list[EarlierHeads], readers: dict, bounds: dict, source_weight: dict, top: np.ndarray, n_edges: int,
                        scale: float, compute_dtype: str, terms: tuple, flop, show_progress: bool = False) -> None:
    """``pairs="bounded"``, after the pass: the edge terms of only the pairs that can change the top ``n_edges`` edges or
    the sources of the top heads (``top`` bool[L, N]), best first: the pairs with the largest bounds, then every pair
    whose bound reaches the top edges or a top head's best edge so far, until none is left
    (:func:`~circuits.analysis.pair_bounds.sources_to_compute`). Per reading layer: ``readers`` its (LaterHeads, kept
    stand-ins), ``bounds`` f32[S, N] the bound on each earlier head's edge into it, ``source_weight`` f32[S] what turns
    a raw gain into the edge in nats. Writes into ``terms`` (K-composition, z, raw gain: f32[L, N, L, N], NaN where not
    computed)."""
    n_heads = top.shape[1]
    max_sources = _layers_per_call(flop) * n_heads
    frontier = EdgeFrontier(n_edges)
    computed = {layer: np.zeros(len(b), bool) for layer, b in bounds.items()}
    edges = {layer: np.full(b.shape, np.nan, np.float32) for layer, b in bounds.items()}
    # first the pairs with the largest bounds anywhere, so the threshold of the top edges is high from the start
    flat = np.concatenate([b.reshape(-1) for b in bounds.values()])
    owners = np.concatenate([np.full(b.size, layer) for layer, b in bounds.items()])
    offsets = np.concatenate([np.arange(b.size) // n_heads for b in bounds.values()])
    first = {layer: np.zeros(len(b), bool) for layer, b in bounds.items()}
    for index in np.argsort(-flat, kind="stable")[:n_edges]:
        first[owners[index]][offsets[index]] = True
    pending, chunk, batch = first, n_edges, 0
    while any(needed.any() for needed in pending.values()):
        batch += 1
        for layer in progress([layer for layer, needed in pending.items() if needed.any()], f"head pairs (bounded), batch {batch}",
                              enabled=show_progress):
            needed = pending[layer]
            later, keep = readers[layer]
            for sources in np.array_split(np.nonzero(needed)[0], -(-int(needed.sum()) // max_sources)):
                # powers of two up to what one call may hold (its intermediate products stay within CHUNK_BYTES)
                size = min(max(n_heads, 1 << (len(sources) - 1).bit_length()), max_sources)
                with phase("edge terms: P = W_O W_K and its traces", flop.edge_terms * size / n_heads) as done:
                    outputs = done(_edge_terms(_source_block(earlier, sources, later.wk.shape[1], size), later, keep, scale,
                                               compute_dtype))
                composition, z, gain = (np.asarray(output[: len(sources)]).reshape(len(sources), n_heads) for output in outputs)
                layers, heads = np.divmod(sources, n_heads)
                for array, values in zip(terms, (composition, z, gain)):
                    array[layers, heads, layer, :] = values
                edges[layer][sources] = source_weight[layer][sources, None] * gain
                frontier.add_edges(edges[layer][sources].reshape(-1))
            computed[layer] |= needed
        candidates = {layer: sources_to_compute(bounds[layer], computed[layer], edges[layer], frontier, top[layer]) for layer in bounds}
        pending = _largest_rows(candidates, bounds, chunk)  # best first: the threshold rises before the rest is tried
        chunk *= 2


def _predict_token_level(
    source: TensorSource, settings: PredictorSettings, fold_norms: bool, product_dtype: str | None, n_edges: int, show_progress: bool
) -> InductionPrediction:
    """The ``kcomp-token-*`` methods in one streaming pass over the layers (each layer's weights read once)."""
    reader = WeightReader(source, fold_norms=fold_norms)
    config = reader.config
    n_layers, n_heads, n_kv, d = config.n_layers, config.n_heads, config.n_kv_heads, config.head_dim
    product_dtype = product_dtype or default_product_dtype(reader)
    preprocessing = dataclasses.replace(reader.preprocessing, product_dtype=product_dtype, rope_offsets=settings.rope_offsets)
    layer_rotations = [None if r is None else jnp.asarray(r) for r in layer_rope_averages(config, settings.rope_offsets)]
    flop = _PhaseFlop(config, settings.n_tokens)
    with phase("stand-ins: embeddings") as done:
        standins = done(TokenStandins(
            reader, sample_token_ids(config.vocab_size, settings.n_tokens, settings.token_seed), settings.blowup, product_dtype,
            track_first=settings.mean_field,
        ))
    with phase("W_U W_E (OV diagnostic)", flop.unembed_embed) as done:
        unembed_embed = done(reader.unembed_embed_product())
    eigenvalues = np.zeros((n_layers, n_heads, d), np.complex128)
    k_composition = np.zeros((n_layers, n_heads, n_layers, n_heads), np.float32)
    token_z = np.zeros_like(k_composition)
    token_gain = np.zeros_like(k_composition)
    previous_token = np.zeros((n_layers, n_heads), np.float32)
    output_rms = np.ones((n_layers, n_heads), np.float32)
    layer_output_rms = np.ones(n_layers, np.float32)
    residual_rms = np.ones(n_layers, np.float32)
    offset_tables = {kind: offset_rotations(config, kind) for kind in set(config.layer_kinds)}
    protocol = settings.context
    context_tables = {kind: offset_rotations(config, kind, protocol.tokens) for kind in set(config.layer_kinds)} if settings.mean_field else {}
    predicted_share = np.zeros((n_layers, n_heads), np.float32)
    copied = None  # prefix-share: what earlier induction heads copy into each stand-in's query
    # with post-attention norms, prefix-share and token-zgain-rms scale gains by an output RMS taken with W_O as stored
    divides_by_output_rms = config.block.post_norms and (settings.mean_field or settings.method == "token-zgain-rms")
    scale = config.attention_scale
    compute_dtype = product_compute_dtype(product_dtype)
    block = _layers_per_call(flop)
    earlier: list[EarlierHeads] = []
    task = -1  # blocks of layer pairs, split round-robin over the processes of a multi-process run
    bounded = settings.pairs == "bounded"
    if bounded:
        if distributed.process_count() > 1:
            raise ValueError("pairs='bounded' prunes pairs with thresholds from every pair computed so far, so it runs in one "
                             "process; fix: run it in one process, or split the work with pairs='all'")
        writer_rms: list[np.ndarray] = []  # per earlier layer, f32[N]: written_rms of its heads
        written = None  # sum over earlier heads of their previous-token-weighted outputs x W_V W_O, f32[n, M]
        readers, read_bounds = {}, {}  # per reading layer: (LaterHeads, kept stand-ins), read_rms f32[N]
        earlier_layers, later_layers = np.triu_indices(n_layers, 1)  # the pairs that exist, not computed yet
        for terms in (k_composition, token_z, token_gain):
            terms[earlier_layers, :, later_layers, :] = np.nan
    for layer in progress(range(n_layers), "induction circuits (weights)", enabled=show_progress):
        x, keep = standins.current()
        keep = jnp.asarray(keep)
        residual_rms[layer] = standins.residual_rms
        with phase("read attention weights") as done:
            raw = done(reader.attention(layer))
        reader.read_ahead(layer, attention=False, mlp=True)  # read while this layer's attention is analysed
        reader.read_ahead(layer + 1)
        if settings.mean_field:
            context = layer_context(raw, x, keep, standins.first(), context_tables[config.layer_kinds[layer]], scale, config.rms_norm_eps)
            shares = context_shares(context, jnp.zeros(context.itself.shape), protocol, layer_window(config, layer))
            previous_token[layer] = np.asarray(shares["previous"]).reshape(-1)
        w = fold_qk_norm(raw, x)
        with phase("OV eigenvalues", flop.ov_eigenvalues):
            eigenvalues[layer] = ov_eigenvalues(unembed_embed, w.wv, w.wo)
        with phase("reading heads: Grams, queries", flop.later_heads) as done:
            unrotated_keys, key_bias = w.wk, w.bk
            w = rotate_keys(w, layer_rotations[layer])
            later = _later_heads(w, x)
            if not settings.mean_field:
                previous_token[layer] = np.asarray(_previous_token_preference(later.queries, unrotated_keys, key_bias, x, keep,
                                                                                  offset_tables[config.layer_kinds[layer]], scale)).reshape(-1)
            later = done(dataclasses.replace(later, wk=later.wk.astype(product_dtype)))
        if settings.mean_field:
            window = layer_window(config, layer)

            def prefix_share(key_gain: np.ndarray) -> jax.Array:
                """f32[K, G]: this layer's prefix share at key-side gain ``key_gain`` f32[N] (nats) plus the query side."""
                query_gain = 0.0 if copied is None else _query_side_gain(copied, w, x, keep, scale) / residual_rms[layer]
                return context_shares(context, jnp.asarray(key_gain.reshape(n_kv, -1)) + query_gain, protocol, window)["prefix"]

        if bounded:  # the score from the accumulated written vector, then only the pairs that can be reported
            key_gain = np.zeros(n_heads, np.float32) if written is None else np.asarray(
                cross_gain(x, written, w.wq, w.wk, keep, scale)).reshape(-1) / residual_rms[layer]
            share = prefix_share(key_gain)
            if layer:  # its pairs are computed after the pass, when the thresholds are known
                readers[layer] = (later, keep)
                read_bounds[layer] = np.asarray(read_rms(later.queries, keep, later.wk)).reshape(-1)
        for start in range(0, layer if not bounded else 0, block):
            task += 1
            if task % distributed.process_count() != distributed.process_index():
                continue  # another process computes this block of layer pairs
            stop = min(start + block, layer)
            with phase("edge terms: P = W_O W_K and its traces", flop.edge_terms * block) as done:
                composition, z, gain = done(_edge_terms(_stack_block(earlier[start:stop], block), later, keep, scale, compute_dtype))
            real = (stop - start) * n_kv
            k_composition[start:stop, :, layer, :] = np.asarray(composition[:real]).reshape(stop - start, n_heads, n_heads)
            token_z[start:stop, :, layer, :] = np.asarray(z[:real]).reshape(stop - start, n_heads, n_heads)
            token_gain[start:stop, :, layer, :] = np.asarray(gain[:real]).reshape(stop - start, n_heads, n_heads)
        with phase("writing heads: Grams, values", flop.earlier_heads) as done:
            heads = _earlier_heads(w, x)
            raw_wo = reader.raw_output_weights(layer) if divides_by_output_rms else None
            if raw_wo is not None:
                output_rms[layer] = np.asarray(_output_rms(heads.values, keep, raw_wo)).reshape(-1)
            earlier.append(done(dataclasses.replace(heads, wo=heads.wo.astype(product_dtype))))
            if bounded:
                writer_rms.append(np.asarray(written_rms(heads.values, keep, heads.wo)).reshape(-1))
        if settings.mean_field:  # this layer's prefix share: its sources' gains (key side) and earlier copies (query side)
            if not bounded:
                to_nats = _gain_scale(config, np.repeat(layer_output_rms[:, None], n_heads, axis=1), residual_rms)[:layer, :, layer]
                key_gain = np.einsum("ln,lnh->h", previous_token[:layer], token_gain[:layer, :, layer, :] * to_nats)
                share = prefix_share(distributed.sum_over_processes(key_gain.astype(np.float32)))  # each process summed its sources
            predicted_share[layer] = np.asarray(share).reshape(-1)
            # the layer's mean-field output, from the stand-ins' own content (first order), joins later layers' stand-ins
            first_value = _stand_in_values(w, standins.first()[None])[0]
            post_gain = reader.gain("post_attn_norm", layer) if config.block.post_norms else None
            content_values = _stand_in_values(w, standins.content())
            outputs, first_output, layer_output_rms[layer] = mean_field_attention(
                content_values, keep, first_value, w.wo if raw_wo is None else raw_wo, shares, post_gain,
                config.rms_norm_eps)
            standins.attend(outputs, first_output)
            copies = _copied_outputs(content_values, heads.wo, share) / (layer_output_rms[layer] if config.block.post_norms else 1.0)
            copied = copies if copied is None else copied + copies
            if bounded:
                weight = previous_token[layer].reshape(n_kv, -1) / (layer_output_rms[layer] if config.block.post_norms else 1.0)
                writes = _copied_outputs(heads.values, heads.wo, jnp.asarray(weight, jnp.float32))
                written = writes if written is None else written + writes
        with phase("stand-ins: MLP blocks", flop.mlp) as done:
            done(standins.advance())
    if bounded:
        factor = 1.0 / layer_output_rms if config.block.post_norms else np.ones(n_layers, np.float32)
        source_weight = {layer: (previous_token[:layer] * factor[:layer, None]).reshape(-1) / residual_rms[layer] for layer in readers}
        writers = np.concatenate(writer_rms)
        bounds = {layer: (scale * writers[: len(weight)] * np.abs(weight))[:, None] * read_bounds[layer][None]
                  for layer, weight in source_weight.items()}
        top = np.zeros((n_layers, n_heads), bool)
        top.reshape(-1)[np.argsort(-predicted_share, axis=None, kind="stable")[:n_edges]] = True
        _bounded_edge_terms(earlier, readers, bounds, source_weight, top, n_edges, scale, compute_dtype,
                            (k_composition, token_z, token_gain), flop, show_progress)
    k_composition, token_z, token_gain = (distributed.sum_over_processes(terms) for terms in (k_composition, token_z, token_gain))
    rotation = None if settings.rope_offsets is None else jnp.asarray(rope_average(config, settings.rope_offsets))
    with phase("K-composition baseline (random layers)"):
        baseline = composition_baseline(config, "k", rotation=rotation)  # full-attention layers' RoPE
    k_scores = CompositionScores("k", k_composition, *baseline, preprocessing)
    ov = HeadScores("ov_copying", copying_score(eigenvalues).astype(np.float32), preprocessing)
    predicted = None
    if settings.method == "prefix-share":
        token_gain = token_gain * _gain_scale(config, np.repeat(layer_output_rms[:, None], n_heads, axis=1), residual_rms)
        edge_strength = previous_token[:, :, None, None] * token_gain  # nats each source adds to the matching key's logit
        predicted = predicted_share
    elif settings.method == "token-zgain-rms":
        token_gain = token_gain * _gain_scale(config, output_rms, residual_rms)
        edge_strength = np.clip(token_z, 0.0, None) * np.clip(token_gain, 0.0, None)
    else:
        edge_strength = k_scores.ratio() * np.clip(token_z, 0.0, None)
    if settings.method == "kcomp-token-zgain":
        edge_strength = edge_strength * np.clip(token_gain, 0.0, None)
    previous = HeadScores("previous_token_preference", previous_token, preprocessing)
    return _assemble(settings, ov, k_scores, token_z, edge_strength.astype(np.float32), preprocessing, n_edges, previous, token_gain,
                     predicted)


@dataclasses.dataclass(frozen=True)
class _PhaseFlop:
    """Floating-point operations of each phase of the streaming pass (multiply-adds count 2), for
    :mod:`~circuits.analysis.phases`; per layer unless said otherwise."""

    config: Any
    n_tokens: int

    @property
    def unembed_embed(self) -> float:  # once
        return 2.0 * self.config.d_model**2 * self.config.vocab_size

    @property
    def ov_eigenvalues(self) -> float:
        c = self.config
        return 2.0 * c.d_model**2 * c.n_kv_heads * c.head_dim + 2.0 * c.n_heads * c.head_dim**2 * c.d_model

    @property
    def later_heads(self) -> float:
        c = self.config
        return 2.0 * c.d_model * c.n_heads * c.head_dim * (self.n_tokens + c.head_dim) + 2.0 * c.d_model * c.n_kv_heads * c.head_dim**2

    @property
    def earlier_heads(self) -> float:
        c = self.config
        return 2.0 * c.d_model * c.n_kv_heads * c.head_dim * (self.n_tokens + c.head_dim) + 2.0 * c.n_heads * c.head_dim**2 * c.d_model

    @property
    def mlp(self) -> float:
        c = self.config
        return 0.0 if c.attention_only else 6.0 * self.n_tokens * c.d_model * c.d_mlp

    @property
    def edge_terms(self) -> float:  # one earlier layer against one reading layer
        c = self.config
        d, pairs = c.head_dim, c.n_heads * c.n_kv_heads
        product, traces = 2.0 * pairs * d * d * c.d_model, 2.0 * 2 * pairs * (c.n_heads // c.n_kv_heads + 1) * d**3
        return product + traces + 2.0 * self.n_tokens * c.n_kv_heads * d * c.n_heads * d  # and the stand-ins' cross Gram


def _gain_scale(config, output_rms: np.ndarray, residual_rms: np.ndarray) -> np.ndarray:
    """f32[L, N, L, 1]: what turns the token logit gain of head j into head i into nats at head i's real input. The
    stand-ins the earlier head reads have unit RMS, but what it writes joins a residual whose RMS at the reading
    layer is ``residual_rms`` [L] (the reading layer normalises by it); with post-attention norms the head's output
    is first normalised itself (by its own RMS ``output_rms`` [L, N], as if it dominated its layer's output)."""
    written = 1.0 / output_rms if config.block.post_norms else np.ones_like(output_rms)
    return (written[:, :, None, None] / residual_rms[None, None, :, None]).astype(np.float32)


def _predict_ov_kcomp_eigen(
    source: TensorSource, settings: PredictorSettings, fold_norms: bool, max_pairs: int, n_edges: int, show_progress: bool
) -> InductionPrediction:
    """The earlier score: max(OV copying, 0) * K-comp ratio * max(token-level eigenvalue term, 0)."""
    ov = ov_copying_scores(source, fold_norms=fold_norms, show_progress=show_progress)
    k_comp = composition_tensors(source, ("k",), fold_norms=fold_norms, show_progress=show_progress)["k"]
    ratio = k_comp.ratio()
    candidates = ratio > 0
    if candidates.sum() > max_pairs:
        threshold = np.sort(ratio[candidates])[-max_pairs]
        candidates &= ratio >= threshold
    terms = token_k_composition(source, pairs=candidates, fold_norms=fold_norms, show_progress=show_progress)
    copying = np.clip(ov.scores, 0.0, None)
    edge_strength = (ratio * np.clip(np.nan_to_num(terms, nan=0.0), 0.0, None) * copying[None, None, :, :]).astype(np.float32)
    return _assemble(settings, ov, k_comp, terms, edge_strength, k_comp.preprocessing, n_edges)


def predict_induction(
    source: TensorSource,
    *,
    method: str = METHODS[0],
    rope_offsets: tuple[int, int] | None = DEFAULT_OFFSETS,
    n_tokens: int = DEFAULT_TOKENS,
    token_seed: int = 0,
    fold_norms: bool = True,
    product_dtype: str | None = None,
    max_pairs: int = 4096,
    n_edges: int = 20,
    context: ContextProtocol = ContextProtocol(),
    pairs: str = "all",
    show_progress: bool = False,
) -> InductionPrediction:
    """Predict induction heads and their previous-token heads from the weights alone.

    source: a loaded model or a streamed checkpoint (:func:`circuits.open_weights`).
    method: ``prefix-share`` (default: the predicted prefix-matching share, on the measured scale; ``context``: the
    measurement it predicts), ``kcomp-token-zgain``, ``kcomp-token-z`` (without the logit gain), ``token-zgain-rms``
    (see the module docstring) or ``ov-kcomp-eigen`` (the earlier score, for comparison; ``max_pairs`` bounds its
    eigenvalue terms). rope_offsets, n_tokens, token_seed: the RoPE average and the token stand-ins of
    the token-level methods. product_dtype: input
    dtype of the M-long products (default bfloat16 for bfloat16 checkpoints, else float32; float32
    accumulation always). pairs: ``all`` (every pair's terms) or ``bounded`` (``prefix-share`` only, one process: the
    same scores, top ``n_edges`` edges and sources of the top ``n_edges`` heads from only the pairs that can change
    them; every other pair NaN, see :mod:`~circuits.analysis.pair_bounds`). Memory: one layer's weights plus W_O of
    every layer in ``product_dtype``.
    """
    if method == "ov-kcomp-eigen":
        return _predict_ov_kcomp_eigen(source, PredictorSettings.legacy(), fold_norms, max_pairs, n_edges, show_progress)
    standins = ("embeddings through the MLP blocks and mean-field attention, RMS-normalised" if method in SHARE_METHODS
                else PredictorSettings.standins)
    settings = PredictorSettings(method, None if rope_offsets is None else tuple(rope_offsets), n_tokens, token_seed, standins,
                                 context=context, pairs=pairs)
    return _predict_token_level(source, settings, fold_norms, product_dtype, n_edges, show_progress)
