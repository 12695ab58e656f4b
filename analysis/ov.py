"""OV copying scores (Elhage et al. 2021) from the D x D form of the full OV circuit."""

from __future__ import annotations

import jax
import numpy as np

from circuits.analysis.results import HeadScores
from circuits.analysis.weights import WeightReader
from circuits.models.layers import einsum
from circuits.models.layout import TensorSource
from circuits.utils import progress


@jax.jit
def ov_circuit_cores(unembed_embed: jax.Array, wv: jax.Array, wo: jax.Array) -> jax.Array:
    """f32[K, G, D, D]: W_O[k, g] (W_U W_E) W_V[k], whose eigenvalues are the nonzero ones of the V x V
    full OV circuit W_E W_V W_O W_U. ``P @ W_V[k]`` is formed once per KV head and shared by its G heads."""
    shared = einsum("mn,nkd->mkd", unembed_embed, wv)
    return einsum("kgdm,mke->kgde", wo, shared)


def ov_eigenvalues(unembed_embed: jax.Array, wv: jax.Array, wo: jax.Array) -> np.ndarray:
    """complex128[N, D]: the nonzero eigenvalues of each query head's full OV circuit (one layer)."""
    cores = np.asarray(ov_circuit_cores(unembed_embed, wv, wo), np.float64)
    k, g, d, _ = cores.shape
    return np.linalg.eigvals(cores.reshape(k * g, d, d))


def copying_score(eigenvalues: np.ndarray) -> np.ndarray:
    """Re(sum(l)) / sum(|l|) over the last axis; 0 for a head whose OV circuit is zero."""
    total = np.abs(eigenvalues).sum(axis=-1)
    return np.where(total > 0, eigenvalues.sum(axis=-1).real / np.where(total > 0, total, 1.0), 0.0)


def ov_copying_scores(
    source: TensorSource,
    *,
    fold_norms: bool = True,
    center_unembed: bool = False,
    return_eigenvalues: bool = False,
    show_progress: bool = False,
) -> HeadScores:
    """OV copying score of every query head, f32[L, N], in [-1, 1] (1: the head copies the token it attends to).

    fold_norms: fold each layer's input RMSNorm gain into W_V and the final norm gain into W_U.
    center_unembed: subtract W_U's mean over the vocabulary (as TransformerLens does).
    """
    reader = WeightReader(source, fold_norms=fold_norms, center_unembed=center_unembed)
    config = reader.config
    product = reader.unembed_embed_product()
    eigenvalues = np.zeros((config.n_layers, config.n_heads, config.head_dim), np.complex128)
    for layer in progress(range(config.n_layers), "OV eigenvalues", enabled=show_progress):
        weights = reader.attention(layer)
        reader.read_ahead(layer + 1)
        eigenvalues[layer] = ov_eigenvalues(product, weights.wv, weights.wo)
    return HeadScores(
        name="ov_copying",
        scores=copying_score(eigenvalues).astype(np.float32),
        preprocessing=reader.preprocessing,
        eigenvalues=eigenvalues if return_eigenvalues else None,
    )
