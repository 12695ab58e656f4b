"""Streaming, preprocessed weights for the weight-only analysis.

The analysis reads one layer at a time from any tensor source (a loaded
:class:`~circuits.models.Transformer`, or an :class:`~circuits.convert.HFCheckpoint`
that memory-maps the safetensors), so a checkpoint never has to fit in memory.
Everything is upcast to float32 before any product.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from circuits.models.config import ModelConfig
from circuits.models.layout import TensorSource

VOCAB_CHUNK = 8192


@dataclasses.dataclass(frozen=True)
class Preprocessing:
    """What was done to the weights before scoring; recorded in every result."""

    fold_norms: bool
    center_unembed: bool
    weights_dtype: str
    accumulation_dtype: str = "float32"
    product_dtype: str = "float32"  # input dtype of the large products (accumulation stays float32)
    rope_offsets: tuple[int, int] | None = None  # QK circuits averaged over these query-key offsets (None: static)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class AttentionWeights:
    """One layer's attention weights in float32, norm gains folded in when asked.

    wq [M, K, G, D], wk / wv [M, K, D], wo [K, G, D, M]; with ``BlockSpec.qkv_bias`` the biases bq [K, G, D],
    bk / bv [K, D]; with ``BlockSpec.qk_norm`` the QK-norm gains q_gain / k_gain [D] (offset included), not yet
    folded in (:func:`fold_qk_norm` does it). Absent parts are None.
    """

    wq: jax.Array
    wk: jax.Array
    wv: jax.Array
    wo: jax.Array
    bq: jax.Array | None = None
    bk: jax.Array | None = None
    bv: jax.Array | None = None
    q_gain: jax.Array | None = None
    k_gain: jax.Array | None = None


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MLPWeights:
    """One layer's gated MLP block in float32: norm [M] (the effective gain), w_gate / w_up [M, F], w_down [F, M],
    post_norm [M] (the output norm's gain, ``BlockSpec.post_norms``) or None."""

    norm: jax.Array
    w_gate: jax.Array
    w_up: jax.Array
    w_down: jax.Array
    post_norm: jax.Array | None = None


ATTENTION_MATRICES = ("wq", "wk", "wv", "wo")
MLP_MATRICES = ("w_gate", "w_up", "w_down")


class WeightReader:
    """Per-layer, preprocessed float32 weights from a tensor source, following the block's description
    (``config.block``): norm gains with their offset, post-norm gains, the embedding scale."""

    def __init__(self, source: TensorSource, *, fold_norms: bool = True, center_unembed: bool = False):
        self.source = source
        self.config: ModelConfig = source.config
        self.preprocessing = Preprocessing(fold_norms, center_unembed, str(np.dtype(source.dtype)))

    def _array(self, name: str, layer: int | None = None, dtype: str = "float32") -> jax.Array:
        """Canonical tensor ``name`` (of ``layer``) as a device array in ``dtype`` (float32 unless asked)."""
        return jnp.asarray(np.asarray(self.source.tensor(name, layer)), dtype=dtype)

    def gain(self, name: str, layer: int | None = None) -> jax.Array:
        """The effective gain f32[...] of norm ``name``: ``norm_offset + w`` (Gemma stores the offset from 1)."""
        return self.config.block.norm_offset + self._array(name, layer)

    @property
    def embed_scale(self) -> float:
        """What the forward multiplies token embeddings by (sqrt(M) with ``BlockSpec.embed_scale``, else 1)."""
        return self.config.d_model**0.5 if self.config.block.embed_scale else 1.0

    def read_ahead(self, layer: int, *, attention: bool = True, mlp: bool = False) -> None:
        """Ask a memory-mapped source to start reading layer ``layer``'s attention and/or MLP matrices in the
        background, so that a streaming pass reads what comes next while it computes. Other sources read on demand."""
        start = getattr(self.source, "read_ahead", None)
        if start is None or not 0 <= layer < self.config.n_layers:
            return
        start((ATTENTION_MATRICES if attention else ()) + (MLP_MATRICES if mlp and not self.config.attention_only else ()), layer)

    def attention(self, layer: int) -> AttentionWeights:
        """Layer ``layer``'s weights; with ``fold_norms`` the input RMSNorm gain scales every row (M) of W_Q, W_K,
        W_V, and a post-attention norm's gain (``BlockSpec.post_norms``) every output column (M) of W_O."""
        block = self.config.block
        wq, wk, wv, wo = (self._array(name, layer) for name in ("wq", "wk", "wv", "wo"))
        if self.preprocessing.fold_norms:
            gain = self.gain("attn_norm", layer)
            wq, wk, wv = wq * gain[:, None, None, None], wk * gain[:, None, None], wv * gain[:, None, None]
            if block.post_norms:
                wo = wo * self.gain("post_attn_norm", layer)
        biases = {name: self._array(name, layer) for name in ("bq", "bk", "bv")} if block.qkv_bias else {}
        gains = {"q_gain": self.gain("q_norm", layer), "k_gain": self.gain("k_norm", layer)} if block.qk_norm else {}
        self._release_pages()
        return AttentionWeights(wq, wk, wv, wo, **biases, **gains)

    def raw_output_weights(self, layer: int) -> jax.Array:
        """Layer ``layer``'s W_O f32[K, G, D, M] as stored, without any gain folded in."""
        wo = self._array("wo", layer)
        self._release_pages()
        return wo

    def mlp(self, layer: int, dtype: str = "float32") -> MLPWeights:
        """Layer ``layer``'s MLP block, its matrices in ``dtype`` (bfloat16 matrices of a bfloat16 checkpoint are
        then never converted) and its norm gains in float32, kept separate: the stand-ins need the norms themselves."""
        post_norm = self.gain("post_mlp_norm", layer) if self.config.block.post_norms else None
        matrices = (self._array(name, layer, dtype) for name in ("w_gate", "w_up", "w_down"))
        weights = MLPWeights(self.gain("mlp_norm", layer), *matrices, post_norm)
        self._release_pages()
        return weights

    def embed_rows(self, ids: np.ndarray) -> jax.Array:
        """Rows ``ids`` of the embedding as the forward reads them (times the embedding scale), f32[n, M]; only
        those rows are read."""
        rows = self._vocab_rows("embed", np.asarray(ids))
        self._release_pages()
        return jnp.asarray(rows, jnp.float32) * self.embed_scale

    def _vocab_rows(self, name: str, rows: slice | np.ndarray) -> np.ndarray:
        """Rows (a slice or token ids) of ``embed`` [V, M], or the same columns of ``unembed`` [M, V] as rows
        [v, M]: only those rows are read where the source can (a checkpoint's ``vocab_rows``)."""
        read_rows = getattr(self.source, "vocab_rows", None)
        if read_rows is not None:
            return read_rows(name, rows)
        tensor = self.source.tensor(name)
        return np.asarray(tensor[rows] if name == "embed" else tensor[:, rows].T)

    def _release_pages(self) -> None:
        """Let a memory-mapped source unmap what was just copied, so streaming never accumulates the model."""
        release = getattr(self.source, "release_pages", None)
        if release is not None:
            release()

    def _vocab_chunks(self):
        """Yield (E chunk [v, M] as the forward reads it, embedding scale included; W_U chunk [M, v]) over the
        vocabulary, preprocessed, in float32."""
        vocab = self.config.vocab_size
        tied = self.config.tie_embeddings
        gain = self.gain("final_norm") if self.preprocessing.fold_norms else None
        for start in range(0, vocab, VOCAB_CHUNK):
            stop = min(start + VOCAB_CHUNK, vocab)
            raw = jnp.asarray(self._vocab_rows("embed", slice(start, stop)), jnp.float32)
            e = raw * self.embed_scale
            u = raw.T if tied else jnp.asarray(self._vocab_rows("unembed", slice(start, stop)), jnp.float32).T
            if gain is not None:
                u = u * gain[:, None]
            self._release_pages()
            yield e, u

    def unembed_embed_product(self) -> jax.Array:
        """W_U W_E as an [M, M] matrix (row convention: ``P[m, n] = sum_v W_U[m, v] W_E[v, n]``).

        With ``center_unembed``, W_U has its mean over the vocabulary removed first (computed
        without forming the centred copy: P - mean_v(W_U) (1^T W_E)).
        """
        m = self.config.d_model
        product = jnp.zeros((m, m), jnp.float32)
        unembed_sum = jnp.zeros((m,), jnp.float32)
        embed_sum = jnp.zeros((m,), jnp.float32)
        for e, u in self._vocab_chunks():
            product = product + jnp.matmul(u, e, precision=jax.lax.Precision.HIGHEST)
            unembed_sum = unembed_sum + u.sum(axis=1)
            embed_sum = embed_sum + e.sum(axis=0)
        if self.preprocessing.center_unembed:
            product = product - jnp.outer(unembed_sum / self.config.vocab_size, embed_sum)
        return product

    def embed_gram(self) -> jax.Array:
        """W_E^T W_E [M, M]."""
        m = self.config.d_model
        gram = jnp.zeros((m, m), jnp.float32)
        for e, _ in self._vocab_chunks():
            gram = gram + jnp.matmul(e.T, e, precision=jax.lax.Precision.HIGHEST)
        return gram


@jax.jit
def fold_qk_norm(w: AttentionWeights, standins: jax.Array | None = None) -> AttentionWeights:
    """QK-norm folded into W_Q, b_Q, W_K, b_K as the linear map a typical token gets: each head's gain [D] and,
    with stand-ins f32[n, M], one over the RMS (over the stand-ins and D) of that head's query or key before the
    norm. Without QK-norm ``w`` is returned unchanged."""
    if w.q_gain is None:
        return w
    bq = jnp.zeros(w.wq.shape[1:], w.wq.dtype) if w.bq is None else w.bq
    bk = jnp.zeros(w.wk.shape[1:], w.wk.dtype) if w.bk is None else w.bk
    if standins is None:
        q_scale, k_scale = jnp.ones(w.wq.shape[1:3]), jnp.ones(w.wk.shape[1:2])
    else:
        queries = jnp.einsum("nm,mkgd->nkgd", standins, w.wq, precision=jax.lax.Precision.HIGHEST) + bq
        keys = jnp.einsum("nm,mkd->nkd", standins, w.wk, precision=jax.lax.Precision.HIGHEST) + bk
        q_scale = jax.lax.rsqrt(jnp.mean(jnp.square(queries), axis=(0, 3)) + 1e-30)  # [K, G]
        k_scale = jax.lax.rsqrt(jnp.mean(jnp.square(keys), axis=(0, 2)) + 1e-30)  # [K]
    q_map = q_scale[..., None] * w.q_gain  # [K, G, D]
    k_map = k_scale[..., None] * w.k_gain  # [K, D]
    return dataclasses.replace(w, wq=w.wq * q_map, bq=bq * q_map, wk=w.wk * k_map, bk=bk * k_map, q_gain=None, k_gain=None)


def gram_factor(gram: jax.Array) -> jax.Array:
    """A factor L with L L^T = gram for symmetric PSD matrices [..., D, D] (eigen-decomposition, so rank-deficient Grams work)."""
    values, vectors = jnp.linalg.eigh(gram)
    return vectors * jnp.sqrt(jnp.clip(values, 0.0))[..., None, :]
