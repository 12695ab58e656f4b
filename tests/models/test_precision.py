"""Float32 means float32 on every backend: the jitted programs ask for HIGHEST precision explicitly.

XLA's default matmul precision on GPUs is TF32. These checks read the lowered program, so they run
(and fail on a regression) on a CPU, where the default happens to be float32 anyway.
"""

import re

import jax.numpy as jnp
import numpy as np
from flax import nnx
from helpers import random_transformer

from circuits.models import ModelConfig, Transformer
from circuits.models.interventions import Interventions
from circuits.models.transformer import _jitted_forward


def dot_precisions(lowered_text: str) -> list[str]:
    """The precision config of every dot_general in a lowered StableHLO program ('' when none is set)."""
    found = []
    for line in lowered_text.splitlines():
        if "dot_general" in line:
            match = re.search(r"precision = \[(\w+), (\w+)\]", line)
            found.append(match.group(1) if match else "")
    return found


def test_float32_forward_requests_highest_precision_for_every_product():
    model = random_transformer()
    tokens = jnp.zeros((2, 7), jnp.int32)
    heads = np.zeros((3, 2, 3), bool)
    heads[1, 0, 1] = True
    interventions = Interventions.none(model.config).ablate(heads)
    for capture, intervene in (((), None), (("attn_pattern", "z"), interventions)):
        precisions = dot_precisions(_jitted_forward.lower(model, tokens, intervene, capture).as_text())
        assert len(precisions) >= 9 and set(precisions) == {"HIGHEST"}, precisions


def test_bfloat16_forward_keeps_the_fast_default():
    config = ModelConfig(vocab_size=40, d_model=24, n_layers=2, n_heads=6, n_kv_heads=2, head_dim=4, d_mlp=32)
    model = Transformer(config, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    precisions = dot_precisions(_jitted_forward.lower(model, jnp.zeros((1, 5), jnp.int32), None, ()).as_text())
    assert precisions and "HIGHEST" not in precisions


def test_weight_only_products_request_highest_precision():
    from circuits.analysis.composition import left_factors, squared_product_norms
    from circuits.analysis.induction import _earlier_heads, _edge_terms, _later_heads
    from circuits.analysis.weights import WeightReader

    model = random_transformer()
    w = WeightReader(model).attention(1)
    standins = jnp.ones((8, model.config.d_model), jnp.float32)
    earlier, later = _earlier_heads(w, standins), _later_heads(w, standins)
    programs = [
        _edge_terms.lower(earlier, later, jnp.ones(8, bool), model.config.attention_scale).as_text(),
        squared_product_norms.lower(left_factors(w), w, "k").as_text(),
    ]
    for text in programs:
        precisions = dot_precisions(text)
        assert precisions and set(precisions) == {"HIGHEST"}, precisions


def test_fused_attention_path_equals_the_materialised_one():
    """Without capture or knockout the forward runs jax.nn.dot_product_attention; with a captured
    pattern it materialises it. Both give the same logits and the same z (fp32, 1e-5)."""
    model = random_transformer(n_layers=3, scale=0.15)
    tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, (2, 33)).astype(np.int32)
    fused_text = _jitted_forward.lower(model, jnp.asarray(tokens), None, ("z",)).as_text()
    materialised_text = _jitted_forward.lower(model, jnp.asarray(tokens), None, ("attn_pattern", "z")).as_text()
    assert fused_text != materialised_text  # really two programs
    fused_logits, fused = model.run_with_capture(tokens, ("z",))
    logits, materialised = model.run_with_capture(tokens, ("attn_pattern", "z"))
    np.testing.assert_allclose(np.asarray(fused_logits), np.asarray(logits), atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(fused["z"]), np.asarray(materialised["z"]), atol=1e-5, rtol=1e-5)
    heads = np.zeros((3, 2, 3), bool)
    heads[2, 1, 0] = True
    ablated = Interventions.none(model.config).ablate(heads)  # head scaling works on the fused path too
    np.testing.assert_allclose(
        np.asarray(model(tokens, ablated)), np.asarray(model.run_with_capture(tokens, ("attn_pattern",), ablated)[0]), atol=1e-5, rtol=1e-5
    )
