"""The weight-only readers follow the block description: on Gemma 3 and Qwen2 blocks, what they hand the analysis is
what the forward computes (norm offsets, post-norms, embedding scale, GeGLU, per-layer RoPE)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from helpers import GEMMA_LIKE, random_transformer

from circuits.analysis import predict_induction
from circuits.analysis.rope import layer_rope_averages, rope_average
from circuits.analysis.standins import _mlp_step
from circuits.analysis.weights import WeightReader
from circuits.models.layers import rms_norm


@pytest.fixture(scope="module")
def gemma_like():
    return random_transformer(seed=3, **GEMMA_LIKE)


def test_embedding_rows_are_what_the_forward_reads(gemma_like):
    ids = np.array([0, 5, 39])
    np.testing.assert_allclose(np.asarray(WeightReader(gemma_like).embed_rows(ids)),
                               np.asarray(gemma_like.embed_tokens(jnp.asarray(ids)[None]))[0], rtol=1e-6)


def test_stand_in_mlp_step_is_the_blocks_mlp_half(gemma_like):
    """x + post_norm(GeGLU(pre_norm(x))) with (1 + w) gains, against the model's own modules."""
    config, layer = gemma_like.config, 1
    x = jnp.asarray(np.random.default_rng(0).normal(size=(7, config.d_model)), jnp.float32)
    ours = _mlp_step(x, WeightReader(gemma_like).mlp(layer), config.rms_norm_eps, config.block.activation)
    blocks = gemma_like.blocks

    graphdef, state = nnx.split(blocks)
    block = nnx.merge(graphdef, jax.tree.map(lambda a: a[layer], state))
    expected = x + block._norm("post_mlp_norm", block.mlp(block._norm("mlp_norm", x[None])))[0]
    np.testing.assert_allclose(np.asarray(ours), np.asarray(expected), rtol=2e-5, atol=2e-5)


def test_folded_attention_weights_include_offset_and_post_norm_gains(gemma_like):
    config, layer = gemma_like.config, 2
    reader = WeightReader(gemma_like)
    w = reader.attention(layer)
    gain = 1.0 + np.asarray(gemma_like.tensor("attn_norm", layer))
    post = 1.0 + np.asarray(gemma_like.tensor("post_attn_norm", layer))
    np.testing.assert_allclose(np.asarray(w.wv), np.asarray(gemma_like.tensor("wv", layer)) * gain[:, None, None], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(w.wo), np.asarray(gemma_like.tensor("wo", layer)) * post, rtol=1e-6)
    x = jnp.asarray(np.random.default_rng(1).normal(size=(3, config.d_model)), jnp.float32)
    normed = rms_norm(x, gemma_like.tensor("attn_norm", layer), config.rms_norm_eps, 1.0)
    unit = x / jnp.sqrt(jnp.mean(x * x, axis=-1, keepdims=True) + config.rms_norm_eps)
    np.testing.assert_allclose(np.asarray(jnp.einsum("nm,mkd->nkd", unit, w.wv)),
                               np.asarray(jnp.einsum("nm,mkd->nkd", normed, gemma_like.tensor("wv", layer))), rtol=1e-4, atol=1e-5)


def test_each_layer_gets_its_own_rope_average(gemma_like):
    config = gemma_like.config
    averages = layer_rope_averages(config, (8, 64))
    np.testing.assert_array_equal(averages[0], rope_average(config, (8, 64), "sliding_attention"))
    np.testing.assert_array_equal(averages[1], rope_average(config, (8, 64), "full_attention"))
    assert np.abs(averages[0] - averages[1]).max() > 1e-2  # bases 100 and 10000 differ


@pytest.mark.parametrize("family", ["qwen2", "gemma3"])
def test_prediction_runs_on_every_family_and_streams_like_the_loaded_model(make_hf, family):
    import circuits

    directory, _ = make_hf(family)
    streamed = predict_induction(circuits.open_weights(directory), n_tokens=64)
    loaded = predict_induction(circuits.load(directory, show_progress=False), n_tokens=64)
    assert np.isfinite(streamed.predicted_induction.scores).all()
    np.testing.assert_allclose(streamed.predicted_induction.scores, loaded.predicted_induction.scores, rtol=1e-4, atol=1e-6)
