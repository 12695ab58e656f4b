"""A hand-built demo model with a planted induction circuit, loadable as ``circuits.load("demo-induction")``.

Two attention-only layers, two heads each (multi-head attention: K = N = 2):

* layer 0 head 0, a previous-token head: its query and key read a constant residual
  direction and differ by one step of rotation in the high-frequency RoPE pairs, so the
  attention score peaks at offset -1; its OV circuit writes the attended token's identity
  into a "previous token" subspace.
* layer 1 head 0, an induction head: its query reads the current token, its key reads the
  previous-token subspace (K-composition with layer 0 head 0), both in RoPE pairs so slow
  that they barely rotate, and its OV circuit copies the attended token to the logits.
* the other two heads are small Gaussian noise.

The residual stream (d_model = 3V + 1) holds the token one-hot [0, V), the previous token
[V, 2V), the output [2V, 3V) read by the unembedding, and a constant coordinate 3V.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
from flax import nnx

from circuits.models.config import ModelConfig
from circuits.models.rope import inverse_frequencies
from circuits.models.transformer import Transformer

POSITIONAL_PAIRS = 4  # RoPE pairs used by the previous-token head


def planted_induction_config(vocab_size: int = 64) -> ModelConfig:
    return ModelConfig(
        vocab_size=vocab_size,
        d_model=3 * vocab_size + 1,
        n_layers=2,
        n_heads=2,
        n_kv_heads=2,
        head_dim=vocab_size + 2 * POSITIONAL_PAIRS + 24,
        d_mlp=0,
        rope_theta=1e12,
        max_position_embeddings=1024,
        tie_embeddings=False,
        bos_token_id=0,
    )


def planted_induction_model(
    vocab_size: int = 64,
    *,
    positional_gain: float = 6.0,
    content_gain: float = 6.0,
    logit_gain: float = 8.0,
    noise: float = 0.02,
    seed: int = 0,
) -> Transformer:
    """The demo model (float32). Gains scale the previous-token score, the match score and the copied logit."""
    config = planted_induction_config(vocab_size)
    v, d, const = vocab_size, config.head_dim, 3 * vocab_size
    model = Transformer(config, rngs=nnx.Rngs(seed))
    rng = np.random.default_rng(seed)
    m = config.d_model
    wq = noise * rng.standard_normal((2, m, 2, 1, d))
    wk = noise * rng.standard_normal((2, m, 2, d))
    wv = noise * rng.standard_normal((2, m, 2, d))
    wo = noise * rng.standard_normal((2, 2, 1, d, m))
    half = d // 2
    slow_dims = [i for pair in range(half - v // 2, half) for i in (pair, pair + half)]  # slowest RoPE pairs

    # layer 0, head 0: previous-token head
    angles = inverse_frequencies(config, 1)[:POSITIONAL_PAIRS]
    wq[0, :, 0, 0] = wk[0, :, 0] = wv[0, :, 0] = wo[0, 0, 0] = 0.0
    for pair, angle in enumerate(angles):
        wq[0, const, 0, 0, pair] = positional_gain
        wk[0, const, 0, pair] = positional_gain * np.cos(angle)  # key = query rotated by +1 step
        wk[0, const, 0, pair + half] = positional_gain * np.sin(angle)
    for token in range(v):
        wv[0, token, 0, token] = 1.0
        wo[0, 0, 0, token, v + token] = 1.0

    # layer 1, head 0: induction head
    wq[1, :, 0, 0] = wk[1, :, 0] = wv[1, :, 0] = wo[1, 0, 0] = 0.0
    for token in range(v):
        wq[1, token, 0, 0, slow_dims[token]] = content_gain
        wk[1, v + token, 0, slow_dims[token]] = content_gain
        wv[1, token, 0, token] = 1.0
        wo[1, 0, 0, token, 2 * v + token] = 1.0

    embed = np.zeros((v, m))
    embed[np.arange(v), np.arange(v)] = 1.0
    embed[:, const] = 1.0
    unembed = np.zeros((m, v))
    unembed[2 * v + np.arange(v), np.arange(v)] = logit_gain
    as_f32 = lambda a: jnp.asarray(a, jnp.float32)  # noqa: E731
    model.blocks.attn.wq[...] = as_f32(wq)
    model.blocks.attn.wk[...] = as_f32(wk)
    model.blocks.attn.wv[...] = as_f32(wv)
    model.blocks.attn.wo[...] = as_f32(wo)
    model.embed[...] = as_f32(embed)
    model.unembed[...] = as_f32(unembed)
    return model

