"""Weight-only prediction of induction circuits: token-level K-composition terms, predicted heads and edges.

Olsson et al. (2022): an induction head i reads, through K-composition, the output of a
previous-token head j, and its QK circuit then matches the current token against the
previous token of each key: the virtual QK circuit W_E W_Q^i W_K^iT W_O^jT W_V^jT W_E^T
(V x V, row convention) has mostly positive eigenvalues. Its nonzero eigenvalues are those
of the D x D matrix (W_O^j W_K^i)^T (W_V^jT W_E^T W_E W_Q^i), computed here.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from circuits.analysis.composition import composition_tensors
from circuits.analysis.ov import copying_score, ov_copying_scores
from circuits.analysis.results import CompositionScores, HeadScores
from circuits.analysis.weights import AttentionWeights, Preprocessing, WeightReader
from circuits.convert.build import TensorSource
from circuits.progress import progress


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
    output_key = jnp.einsum("pdm,pme->pde", wo1[js], wk2[is_])
    value_query = jnp.einsum("pmd,mn,pne->pde", wv1[js], embed_gram, wq2[is_])
    return jnp.einsum("pde,pdf->pef", output_key, value_query)


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


@dataclasses.dataclass(frozen=True)
class InductionEdge:
    """A predicted previous-token head (prev_layer, prev_head) -> induction head (layer, head) edge."""

    prev_layer: int
    prev_head: int
    layer: int
    head: int
    score: float
    k_composition_ratio: float
    token_term: float


@dataclasses.dataclass(frozen=True)
class InductionPrediction:
    """Everything the weights say about induction circuits.

    predicted_induction [L, N] = max(OV copying, 0) * max over earlier heads j of
    (K-composition / baseline) * max(token-level K-composition term, 0).
    """

    ov_copying: HeadScores
    k_composition: CompositionScores
    token_terms: np.ndarray
    predicted_induction: HeadScores
    edges: list[InductionEdge]
    preprocessing: Preprocessing


def predict_induction(
    source: TensorSource,
    *,
    fold_norms: bool = True,
    max_pairs: int = 4096,
    n_edges: int = 20,
    show_progress: bool = False,
) -> InductionPrediction:
    """Predict induction heads and their previous-token heads from the weights alone.

    Token-level terms are computed for every earlier->later pair when there are at most
    ``max_pairs`` of them, else for the ``max_pairs`` pairs with the strongest K-composition.
    """
    ov = ov_copying_scores(source, fold_norms=fold_norms, show_progress=show_progress)
    k_comp = composition_tensors(source, ("k",), fold_norms=fold_norms, show_progress=show_progress)["k"]
    ratio = k_comp.ratio()
    candidates = ratio > 0
    if candidates.sum() > max_pairs:
        threshold = np.sort(ratio[candidates])[-max_pairs]
        candidates &= ratio >= threshold
    terms = token_k_composition(source, pairs=candidates, fold_norms=fold_norms, show_progress=show_progress)
    copying = np.clip(ov.scores, 0.0, None)
    edge_strength = ratio * np.clip(np.nan_to_num(terms, nan=0.0), 0.0, None) * copying[None, None, :, :]
    predicted = edge_strength.max(axis=(0, 1)).astype(np.float32)
    order = np.argsort(-edge_strength, axis=None)[:n_edges]
    edges = []
    for flat in order:
        l1, j, l2, i = (int(x) for x in np.unravel_index(flat, edge_strength.shape))
        if edge_strength[l1, j, l2, i] <= 0:
            break
        edges.append(
            InductionEdge(l1, j, l2, i, float(edge_strength[l1, j, l2, i]), float(ratio[l1, j, l2, i]), float(terms[l1, j, l2, i]))
        )
    return InductionPrediction(
        ov_copying=ov,
        k_composition=k_comp,
        token_terms=terms,
        predicted_induction=HeadScores("predicted_induction", predicted, ov.preprocessing),
        edges=edges,
        preprocessing=ov.preprocessing,
    )
