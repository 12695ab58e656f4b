"""Q-, K- and V-composition scores (Elhage et al. 2021) computed through D x D factors.

score(j -> i) = ||A_j B_i||_F / (||A_j||_F ||B_i||_F), A_j = W_V^j W_O^j (OV of the earlier head),
B_i = W_Q^i W_K^iT (Q), its transpose (K), or W_V^i W_O^i (V); row-vector convention.

With Gram factors (L L^T = W^T W, see :func:`gram_factor`) every norm is the norm of a product
of D-wide factors: ||W_V W_O Y Z^T||_F = ||L_V^T W_O Y L_Z||_F. So the M x M matrices are never
formed, the left factor ``F_j = L_V^T W_O^j`` [D, M] is computed once per earlier head, and
for K- and V-composition the later layer's shared W_K / W_V multiplies F once per KV head.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from circuits.analysis.phases import gemm_rate
from circuits.analysis.results import CompositionScores
from circuits.analysis.rope import layer_rope_averages, rope_average
from circuits.analysis.weights import AttentionWeights, WeightReader, fold_qk_norm, gram_factor
from circuits.models.config import ModelConfig
from circuits.models.layers import einsum
from circuits.models.layout import TensorSource
from circuits.utils import progress

KINDS = ("q", "k", "v")
CHUNK_BYTES = 512 * 2**20  # bound on one block's intermediate product


@jax.jit
def left_factors(w: AttentionWeights) -> jax.Array:
    """F [N, D, M] with F_j = L_V^T W_O^j, L_V L_V^T = W_V^T W_V of head j's KV group; ||F_j||_F = ||OV_j||_F."""
    value_factor = gram_factor(einsum("mkd,mke->kde", w.wv, w.wv))
    k, g, d, m = w.wo.shape
    return einsum("kde,kgdm->kgem", value_factor, w.wo).reshape(k * g, d, m)


@functools.partial(jax.jit, static_argnames="kind")
def later_norms(w: AttentionWeights, kind: str) -> jax.Array:
    """||B_i||_F [N] for the later heads: via sum(Gram * Gram), no M x M matrix."""
    if kind == "v":
        value_gram = einsum("mkd,mke->kde", w.wv, w.wv)
        output_gram = einsum("kgdm,kgem->kgde", w.wo, w.wo)
        squared = einsum("kde,kgde->kg", value_gram, output_gram)
    else:
        query_gram = einsum("mkgd,mkge->kgde", w.wq, w.wq)
        key_gram = einsum("mkd,mke->kde", w.wk, w.wk)
        squared = einsum("kgde,kde->kg", query_gram, key_gram)
    return jnp.sqrt(jnp.maximum(squared, 0.0)).reshape(-1)


@functools.partial(jax.jit, static_argnames=("kind", "product_dtype", "compute_dtype"))
def squared_product_norms(left: jax.Array, w: AttentionWeights, kind: str, product_dtype: str = "float32",
                          compute_dtype: str = "float32") -> jax.Array:
    """||A_j B_i||_F^2 [J, N] for earlier-head factors ``left`` [J, D, M] and every head i of layer ``w``.

    The M-long contractions (the costly ones) take their inputs in ``product_dtype`` (widened to ``compute_dtype``
    for the product, see :func:`product_compute_dtype`) and always accumulate in float32; everything else is
    float32.
    """
    def contract(spec, a, b):
        return einsum(spec, a.astype(product_dtype).astype(compute_dtype), b.astype(product_dtype).astype(compute_dtype),
                      preferred_element_type=jnp.float32)

    if kind == "q":
        key_factor = gram_factor(einsum("mkd,mke->kde", w.wk, w.wk))
        right = einsum("mkgd,kde->mkge", w.wq, key_factor)
        product = contract("jdm,mkge->jkgde", left, right)
    else:
        shared, gram = (
            (w.wk, einsum("mkgd,mkge->kgde", w.wq, w.wq))
            if kind == "k"
            else (w.wv, einsum("kgdm,kgem->kgde", w.wo, w.wo))
        )
        per_kv = contract("jdm,mke->jkde", left, shared)
        product = einsum("jkde,kgef->jkgdf", per_kv, gram_factor(gram))
    squared = jnp.sum(product * product, axis=(-2, -1))
    return squared.reshape(left.shape[0], -1)


@jax.jit
def _factor_norms(left: jax.Array) -> jax.Array:
    """||F_j||_F = ||OV_j||_F [J], summed in float32 whatever the factors' dtype."""
    return jnp.sqrt(jnp.sum(jnp.square(left.astype(jnp.float32)), axis=(1, 2)))


def _block_scores(left: jax.Array, w: AttentionWeights, kind: str, product_dtype: str = "float32") -> np.ndarray:
    """Scores [J, N] of earlier heads (factors ``left`` [J, D, M]) into the heads of layer ``w``."""
    left_norms = _factor_norms(left)
    squared = squared_product_norms(left, w, kind, product_dtype, product_compute_dtype(product_dtype))
    numerator = np.sqrt(np.maximum(np.asarray(squared), 0.0))
    denominator = np.asarray(left_norms)[:, None] * np.asarray(later_norms(w, kind))[None, :]
    return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), 0.0)


def default_product_dtype(reader: WeightReader) -> str:
    """Input dtype of the M-long products: bfloat16 for bfloat16 checkpoints, float32 otherwise."""
    return "bfloat16" if reader.preprocessing.weights_dtype == "bfloat16" else "float32"


@functools.cache
def product_compute_dtype(product_dtype: str) -> str:
    """What operands stored in ``product_dtype`` are widened to for the M-long products on this backend: float32
    where a float32 product runs faster than a bfloat16 one (CPUs without bf16 matrix units: 141 against 90 GFLOP/s
    measured on an AMD EPYC Zen 3), else ``product_dtype`` itself. The result is the same either way: a product of
    two bfloat16 values is exact in float32, and both accumulate in float32. Timed once per process (about 0.1 s)."""
    if product_dtype == "float32":
        return product_dtype
    return "float32" if gemm_rate("float32") > gemm_rate(product_dtype) else product_dtype


def composition_tensors(
    source: TensorSource,
    kinds: tuple[str, ...] = KINDS,
    *,
    fold_norms: bool = True,
    baseline_seeds: int | None = None,
    product_dtype: str | None = None,
    rope_offsets: tuple[int, int] | None = None,
    show_progress: bool = False,
) -> dict[str, CompositionScores]:
    """All requested composition tensors f32[L, N, L, N] in one streaming pass over the layers.

    rope_offsets: (lo, hi) to use the RoPE-averaged QK circuit ``W_Q R_bar W_K^T`` (query-key offsets
    uniform on [lo, hi], see :mod:`~circuits.analysis.rope`) for Q- and K-composition and their
    baseline; None (default) for the static ``W_Q W_K^T``.

    product_dtype: input dtype of the M-long products (float32 accumulation always). Default: bfloat16
    for bfloat16 checkpoints (about 3x faster where the CPU has bf16 matrix units; scores change by
    ~1e-3 relative), float32 otherwise. Recorded in the result's preprocessing.
    Memory: the left factors of all layers (L * N * D * M values in ``product_dtype``) plus one layer's weights.
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown composition kind(s) {sorted(unknown)}; choose from q, k, v")
    reader = WeightReader(source, fold_norms=fold_norms)
    product_dtype = product_dtype or default_product_dtype(reader)
    preprocessing = dataclasses.replace(reader.preprocessing, product_dtype=product_dtype, rope_offsets=rope_offsets)
    config = reader.config
    rotation = None if rope_offsets is None else jnp.asarray(rope_average(config, rope_offsets))  # for the baselines
    layer_rotations = [None if r is None else jnp.asarray(r) for r in layer_rope_averages(config, rope_offsets)]
    n_layers, n_heads = config.n_layers, config.n_heads
    scores = {kind: np.zeros((n_layers, n_heads, n_layers, n_heads), np.float32) for kind in kinds}
    factors: list[jax.Array] = []
    per_layer_bytes = n_heads * config.head_dim * n_heads * config.head_dim * 4
    chunk = max(1, CHUNK_BYTES // per_layer_bytes)
    for later in progress(range(n_layers), "composition scores", enabled=show_progress):
        w = rotate_keys(fold_qk_norm(reader.attention(later)), layer_rotations[later])
        reader.read_ahead(later + 1)
        for start in range(0, later, chunk):
            stop = min(start + chunk, later)
            left = jnp.concatenate(factors[start:stop]).reshape(-1, config.head_dim, config.d_model)
            for kind in kinds:
                block = _block_scores(left, w, kind, product_dtype)
                scores[kind][start:stop, :, later, :] = block.reshape(stop - start, n_heads, n_heads)
        factors.append(left_factors(w).astype(product_dtype))  # kept in the dtype the products read
    baselines = {kind: composition_baseline(config, kind, seeds=baseline_seeds, rotation=rotation) for kind in kinds}
    return {
        kind: CompositionScores(kind, scores[kind], *baselines[kind], preprocessing) for kind in kinds
    }


def composition_scores(source: TensorSource, kind: str = "k", **options) -> CompositionScores:
    """One composition tensor f32[L, N, L, N] (``kind`` in q, k, v); see :func:`composition_tensors`."""
    return composition_tensors(source, (kind,), **options)[kind]


def random_attention(config: ModelConfig, key: jax.Array) -> AttentionWeights:
    """Gaussian attention weights with the shapes of one layer of ``config``."""
    m, k, g, d = config.d_model, config.n_kv_heads, config.q_per_kv, config.head_dim
    keys = jax.random.split(key, 4)
    return AttentionWeights(
        wq=jax.random.normal(keys[0], (m, k, g, d)),
        wk=jax.random.normal(keys[1], (m, k, d)),
        wv=jax.random.normal(keys[2], (m, k, d)),
        wo=jax.random.normal(keys[3], (k, g, d, m)),
    )


def rotate_keys(w: AttentionWeights, rotation: jax.Array | None) -> AttentionWeights:
    """``w`` with W_K replaced by W_K R_bar^T (so W_Q W_K'^T = W_Q R_bar W_K^T); unchanged for None."""
    if rotation is None:
        return w
    wk = einsum("mkd,ed->mke", w.wk, rotation)
    return dataclasses.replace(w, wk=wk)


def composition_baseline(
    config: ModelConfig, kind: str, *, seeds: int | None = None, rotation: jax.Array | None = None
) -> tuple[float, float]:
    """(mean, std) of the ``kind`` score between heads of two Gaussian layers with ``config``'s shapes
    (keys rotated by the RoPE average ``rotation`` [D, D] when given, as in the scores it is a baseline for)."""
    if seeds is None:
        seeds = -(-256 // config.n_heads**2)  # at least 256 head pairs (one seed of a 32-head model has 1024)
    samples = []
    for seed in range(seeds):
        earlier, later = (rotate_keys(random_attention(config, key), rotation) for key in jax.random.split(jax.random.key(seed)))
        samples.append(_block_scores(left_factors(earlier), later, kind).ravel())
    values = np.concatenate(samples)
    return float(values.mean()), float(values.std())
