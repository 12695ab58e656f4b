"""Token stand-ins: what a layer's attention reads for a token, from the weights alone.

Raw embeddings are a poor proxy for the residual stream deep in a model. A stand-in for token t
at layer l is its embedding propagated *alone* through the MLP blocks of layers < l (attention
skipped: a lone token attending to itself behaves like an attention sink), then RMS-normalised
(the attention norm's gain is folded into the reading weights). No data sequences are involved.
Tokens whose residual blows up (RMS over ``blowup`` times the median token's at some layer) are
dropped from that layer on.

With mean-field attention (:meth:`TokenStandins.attend`, method ``prefix-share``), each layer's attention output
joins the residual as a typical position in a context of random tokens receives it: per head, the predicted share
on BOS times BOS's value, the share on the token itself times its own value, and the share on other keys times the
mean value (:mod:`~circuits.analysis.context`), the values taken from the stand-ins' own content (:meth:`TokenStandins.content`:
embedding and MLP blocks, as it stands in the normalised residual), not from earlier layers' mean-field outputs. This
first-order mean field keeps each layer's output near the real one; fed back through the values, the common vector
compounded (on SmolLM2 layer 20's output reached 6.0 RMS against the real 3.6, the deep heads' predicted BOS share fell
to 0.01 against 0.48 measured, and the predicted gains came out about 3x small). The content is divided by the RMS of
the whole residual, mean-field outputs included, as the layer's norm divides it: normalised on its own, the content's
common part came out too large (on Gemma 3 270M the mean-field outputs' RMS was 0.8-2.3x the real one; with the whole
residual's RMS, 0.5-0.85x, short by the spread of the tokens actually attended, which a mean value leaves out).
These outputs are read by later attention layers but not fed to the MLPs: fed to them, the shared mean-field vector
fires the massive-activation neurons that make BOS a sink (on SmolLM2 every stand-in's RMS reached BOS's, 33.7 against
4.3 for real tokens, by layer 3), which real tokens, which vary, do not. BOS itself is tracked exactly, MLPs included:
a first token attends only to itself.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from circuits.analysis.composition import product_compute_dtype
from circuits.analysis.weights import MLPWeights, WeightReader
from circuits.models.layers import ACTIVATION_FUNCTIONS, rms_norm

DEFAULT_TOKENS = 1024
DEFAULT_BLOWUP = 100.0


def sample_token_ids(vocab_size: int, n_tokens: int, seed: int) -> np.ndarray:
    """int[min(n_tokens, V)] distinct token ids drawn uniformly with ``seed``, sorted."""
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(vocab_size, size=min(n_tokens, vocab_size), replace=False))


@jax.jit
def _normalise(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(x / rms(x) f32[n, M], rms f32[n])."""
    rms = jnp.sqrt(jnp.mean(jnp.square(x), axis=-1))
    return x / jnp.maximum(rms, 1e-30)[:, None], rms


@functools.partial(jax.jit, static_argnames=("activation", "compute_dtype"))
def _mlp_step(x: jax.Array, mlp: MLPWeights, eps: float, activation: str, compute_dtype: str = "float32") -> jax.Array:
    """x + post_norm(MLP(RMSNorm(x))) for x f32[n, M], as the block computes it (the post-norm only with
    ``BlockSpec.post_norms``); products with inputs in the weights' dtype, accumulated in float32 (inputs widened
    to ``compute_dtype`` where that runs faster: :func:`~circuits.analysis.composition.product_compute_dtype`)."""
    hidden = rms_norm(x, mlp.norm, eps)
    dtype = mlp.w_gate.dtype

    def dot(a, b):
        return jnp.dot(a.astype(dtype).astype(compute_dtype), b.astype(compute_dtype), preferred_element_type=jnp.float32,
                       precision=jax.lax.Precision.HIGHEST)

    out = dot(ACTIVATION_FUNCTIONS[activation](dot(hidden, mlp.w_gate)) * dot(hidden, mlp.w_up), mlp.w_down)
    return x + (out if mlp.post_norm is None else rms_norm(out, mlp.post_norm, eps))


@functools.partial(jax.jit, static_argnames=("eps",))
def mean_field_attention(values: jax.Array, keep: jax.Array, first_value: jax.Array, wo: jax.Array, shares: dict[str, jax.Array],
                         post_gain: jax.Array | None, eps: float) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(attention output f32[n, M] of each stand-in at a typical position, BOS's own output f32[M], the stand-ins' mean
    RMS f32[] of their output before any post-attention norm).

    values f32[n, K, D] (the stand-ins through W_V, bias included), first_value f32[K, D] (BOS's), wo f32[K, G, D, M],
    shares {"bos", "itself", "others"} f32[K, G] (:func:`~circuits.analysis.context.context_shares`); post_gain [M]:
    the post-attention norm's gain (None without one; ``wo`` is then W_O as stored, without that gain).
    """
    weight = keep.astype(jnp.float32)
    mean_value = jnp.einsum("nkd,n->kd", values, weight) / jnp.maximum(weight.sum(), 1.0)
    common = jnp.einsum("kg,kd,kgdm->m", shares["bos"], first_value, wo) + jnp.einsum("kg,kd,kgdm->m", shares["others"], mean_value, wo)
    outputs = common + jnp.einsum("kg,nkd,kgdm->nm", shares["itself"], values, wo)
    first = jnp.einsum("kd,kgdm->m", first_value, wo)  # a first token attends only to itself

    def post_norm(out):
        return out if post_gain is None else rms_norm(out, post_gain, eps)

    rms = jnp.sqrt(jnp.mean(jnp.square(outputs), axis=-1))
    typical_rms = jnp.sum(rms * weight) / jnp.maximum(weight.sum(), 1.0)  # what a post-attention norm divides by
    return post_norm(outputs) * weight[:, None], post_norm(first), typical_rms


@dataclasses.dataclass
class TokenStandins:
    """Stand-ins layer by layer, advanced in step with a streaming pass over the weights.

    ``current()`` gives the stand-ins read by the attention of the current layer, f32[n, M], and the
    mask bool[n] of tokens kept so far (and sets ``residual_rms``, the median RMS of the residual before the
    norm); ``first()`` the normalised residual of the first token (BOS) f32[M]; ``attend()`` optionally adds that
    layer's attention output; ``advance()`` then applies that layer's MLP block.
    """

    reader: WeightReader
    ids: np.ndarray
    blowup: float = DEFAULT_BLOWUP
    product_dtype: str = "float32"
    track_first: bool = False  # also track the first token's (BOS's) exact residual (:meth:`first`, :meth:`attend`)

    def __post_init__(self):
        self.layer = 0
        self._residual = self.reader.embed_rows(self.ids)
        self._attended = jnp.zeros_like(self._residual)  # mean-field attention outputs so far (not read by the MLPs)
        config = self.reader.config
        self._first = self.reader.embed_rows(np.array([config.bos_token_id if config.bos_token_id is not None else 0]))
        self.keep = np.ones(len(self.ids), bool)

    def current(self) -> tuple[jax.Array, np.ndarray]:
        """(normalised stand-ins f32[n, M] at the input of layer ``self.layer``, kept tokens bool[n])."""
        normalised, rms = _normalise(self._residual + self._attended)
        rms = np.asarray(rms)
        finite = np.isfinite(rms)
        median = np.median(rms[self.keep & finite]) if (self.keep & finite).any() else np.inf
        self.keep &= finite & (rms <= self.blowup * median)
        self.residual_rms = float(median)  # the typical token's residual RMS here: what the attention input is divided by
        return jnp.where(jnp.asarray(self.keep)[:, None], normalised, 0.0), self.keep.copy()

    def content(self) -> jax.Array:
        """The stand-ins' own content at the input of the current layer, f32[n, M] (zero rows for dropped tokens): their
        residual without the mean-field attention outputs (embedding and MLP blocks), divided by the RMS of the whole
        residual (mean-field outputs included), as the content stands in the normalised input the layer reads."""
        _, rms = _normalise(self._residual + self._attended)
        return jnp.where(jnp.asarray(self.keep)[:, None], self._residual / jnp.maximum(rms, 1e-30)[:, None], 0.0)

    def first(self) -> jax.Array:
        """The first token's (BOS's) residual at the input of the current layer, RMS-normalised, f32[M]."""
        return _normalise(self._first)[0][0]

    def attend(self, outputs: jax.Array, first_output: jax.Array) -> None:
        """Add the current layer's attention output: f32[n, M] for the stand-ins, f32[M] for BOS
        (:func:`mean_field_attention`)."""
        self._attended = self._attended + outputs
        self._first = self._first + first_output

    def advance(self) -> jax.Array:
        """Apply the current layer's MLP block (nothing for attention-only models) and move to the next layer;
        returns the stand-ins' new residual f32[n, M] (before mean-field attention and normalisation)."""
        config = self.reader.config
        if not config.attention_only:
            mlp = self.reader.mlp(self.layer, self.product_dtype)
            compute = product_compute_dtype(self.product_dtype)
            self._residual = _mlp_step(self._residual, mlp, config.rms_norm_eps, config.block.activation, compute)
            if self.track_first:
                self._first = _mlp_step(self._first, mlp, config.rms_norm_eps, config.block.activation, compute)
        self.layer += 1
        return self._residual
