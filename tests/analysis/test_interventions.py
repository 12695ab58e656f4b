"""Interventions as data: ablation, mean ablation, KV-group ablation, knockout, sweeps, no recompiles."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import random_tokens, random_transformer
from scipy import stats

import circuits
from circuits.analysis.ablation import (
    _sweep_chunk,
    estimate_sweep_losses,
    heads_mask,
    kv_group_heads,
    mean_head_outputs,
    one_head_each,
    sweep_losses,
)
from circuits.analysis.losses import masked_mean_loss
from circuits.analysis.targets import category_targets, induction_targets
from circuits.models import Interventions, make_mesh, shard_tokens
from circuits.models.transformer import _jitted_forward

VOCAB = 40


@pytest.fixture(scope="module")
def model():
    return random_transformer(seed=3, n_layers=3, n_heads=6, n_kv_heads=2)


@pytest.fixture(scope="module")
def tokens():
    return random_tokens(3, 24, VOCAB, seed=5)


def with_zeroed(model, name: str, layer: int, index=()):
    """A copy of ``model`` with parameter ``name`` of ``layer`` (optionally a sub-index) set to zero."""
    from flax import nnx

    copy = nnx.clone(model)
    holder = copy.blocks.attn
    holder_value = getattr(holder, name)[...]
    getattr(holder, name)[...] = holder_value.at[(layer,) + tuple(index)].set(0.0)
    return copy


def test_no_interventions_equals_plain_forward(model, tokens):
    np.testing.assert_array_equal(np.asarray(model(tokens, Interventions.none(model.config))), np.asarray(model(tokens)))


def test_zero_ablating_every_head_of_a_layer_removes_that_attention_block(model, tokens):
    heads = heads_mask(model.config, [(1, h) for h in range(6)])
    ablated = model(tokens, Interventions.none(model.config).ablate(heads))
    without_block = with_zeroed(model, "wo", 1)(tokens)
    np.testing.assert_allclose(np.asarray(ablated), np.asarray(without_block), atol=1e-5)
    assert np.abs(np.asarray(ablated) - np.asarray(model(tokens))).max() > 1e-2


def test_kv_group_ablation_equals_zeroing_the_shared_values(model, tokens):
    heads = kv_group_heads(model.config, [(2, 1)])
    assert heads[2, 1].all() and heads.sum() == 3
    ablated = model(tokens, Interventions.none(model.config).ablate(heads))
    np.testing.assert_allclose(np.asarray(ablated), np.asarray(with_zeroed(model, "wv", 2, (slice(None), 1))(tokens)), atol=1e-5)


def test_mean_ablation_replaces_the_head_output_by_its_mean(model, tokens):
    means = mean_head_outputs(model, tokens)
    _, clean = model.run_with_capture(tokens, ("z",))
    np.testing.assert_allclose(np.asarray(means), np.asarray(clean["z"]).mean(axis=(1, 2)), atol=1e-6)
    heads = heads_mask(model.config, [(0, 4)])
    _, captured = model.run_with_capture(tokens, ("z",), Interventions.none(model.config).ablate(heads, means))
    z = np.asarray(captured["z"])  # [L, B, T, K, G, D]
    np.testing.assert_allclose(z[0, :, :, 1, 1], np.broadcast_to(np.asarray(means)[0, 1, 1], z[0, :, :, 1, 1].shape), atol=1e-6)
    np.testing.assert_allclose(z[0, :, :, 0], np.asarray(clean["z"])[0, :, :, 0], atol=1e-6)  # other heads of layer 0 untouched


def test_knocking_out_everything_but_bos_leaves_attention_on_bos(model, tokens):
    seq = tokens.shape[1]
    edges = np.broadcast_to(np.arange(seq)[None, :] > 0, (tokens.shape[0], seq, seq))
    all_heads = np.ones((3, 2, 3), bool)
    _, captured = model.run_with_capture(tokens, ("attn_pattern",), Interventions.none(model.config).knock_out(edges, all_heads))
    pattern = np.asarray(captured["attn_pattern"])
    np.testing.assert_allclose(pattern[..., 0], 1.0, atol=1e-6)


def test_knockout_renormalises_the_remaining_attention(model, tokens):
    """Knocking out edges in one head equals zeroing them in its clean pattern and renormalising (layer 0 only,
    whose input does not depend on the knockout)."""
    edges = np.random.default_rng(0).random((tokens.shape[0], 24, 24)) < 0.3
    edges[:, :, 0] = False  # every query keeps at least BOS
    heads = heads_mask(model.config, [(0, 2)])
    _, clean = model.run_with_capture(tokens, ("attn_pattern",))
    _, knocked = model.run_with_capture(tokens, ("attn_pattern",), Interventions.none(model.config).knock_out(edges, heads))
    expected = np.asarray(clean["attn_pattern"])[0, :, 0, 2] * ~edges
    expected /= expected.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(knocked["attn_pattern"])[0, :, 0, 2], expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(knocked["attn_pattern"])[0, :, 1], np.asarray(clean["attn_pattern"])[0, :, 1], atol=1e-6)


def test_changing_masks_does_not_recompile(model, tokens):
    config = model.config
    base = Interventions.none(config)
    edges = np.zeros((3, 24, 24), bool)
    model(tokens, base.ablate(heads_mask(config, [(0, 0)])))
    model(tokens, base.knock_out(edges, heads_mask(config, [(0, 0)])))
    compiled = _jitted_forward.jitted_fn._cache_size()
    for layer, head in [(1, 2), (2, 5)]:
        model(tokens, base.ablate(heads_mask(config, [(layer, head)]), jnp.ones((3, 2, 3, 4))))
        model(tokens, base.knock_out(~edges, heads_mask(config, [(layer, head)])))
    assert _jitted_forward.jitted_fn._cache_size() == compiled

    mask = np.ones(23, bool)
    sets = one_head_each(config)
    sweep_losses(model, tokens, mask, ablate=sets, chunk=4)
    before = _sweep_chunk._cache_size()
    sweep_losses(model, tokens, mask, ablate=sets[::-1], chunk=4)
    assert _sweep_chunk._cache_size() == before  # new sets, every start layer: still one program


def loss_of(model, tokens, interventions, mask):
    return float(masked_mean_loss(model(tokens, interventions), jnp.asarray(tokens), jnp.asarray(mask)))


@pytest.mark.parametrize("chunk", [1, 5, None])
def test_one_program_sweep_equals_forwards_one_by_one(model, tokens, chunk):
    config = model.config
    mask = np.arange(23) >= 10
    sets = one_head_each(config)
    swept = sweep_losses(model, tokens, mask, ablate=sets, chunk=chunk)
    expected = [loss_of(model, tokens, Interventions.none(config).ablate(s), mask) for s in sets]
    np.testing.assert_allclose(swept, expected, rtol=1e-5)

    edges = np.asarray(induction_targets(tokens))
    knocked = sweep_losses(model, tokens, mask, knock_out=sets[:4], edges=edges, chunk=chunk)
    expected = [loss_of(model, tokens, Interventions.none(config).knock_out(edges, s), mask) for s in sets[:4]]
    np.testing.assert_allclose(knocked, expected, rtol=1e-5)


def test_prefix_reusing_sweep_handles_any_mix_of_sets(model, tokens):
    """Sets spanning several layers, sets that touch nothing, and a per-sequence loss mask."""
    config = model.config
    rng = np.random.default_rng(0)
    sets = rng.random((7,) + (config.n_layers, config.n_kv_heads, config.q_per_kv)) < 0.2
    sets[0] = False  # nothing ablated: the clean loss
    sets[1] = False
    sets[1, 2, 1, 2] = True  # only the last layer
    mask = rng.random((tokens.shape[0], 23)) < 0.5
    replacement = rng.normal(size=(config.n_layers, config.n_kv_heads, config.q_per_kv, config.head_dim)).astype(np.float32)
    swept = sweep_losses(model, tokens, mask, ablate=sets, replacement=replacement, chunk=2)
    base = dataclasses.replace(Interventions.none(config), head_replacement=jnp.asarray(replacement))
    expected = [loss_of(model, tokens, base.ablate(s), mask) for s in sets]
    np.testing.assert_allclose(swept, expected, rtol=1e-5, atol=1e-6)
    assert swept[0] == pytest.approx(loss_of(model, tokens, None, mask), rel=1e-6)


def test_sweep_shows_a_progress_bar_that_can_be_turned_off(model, tokens, capsys):
    sets = one_head_each(model.config)
    sweep_losses(model, tokens, np.ones(23, bool), ablate=sets, chunk=3)
    assert f"sweep over {len(sets)} head sets" in capsys.readouterr().err
    sweep_losses(model, tokens, np.ones(23, bool), ablate=sets, chunk=3, show_progress=False)
    assert "sweep over" not in capsys.readouterr().err


def test_gradient_estimates_are_the_first_order_change_of_exact_ablation(model, tokens):
    config = model.config
    mask = np.arange(23) >= 10
    sets = one_head_each(config)
    clean = loss_of(model, tokens, None, mask)
    estimated = estimate_sweep_losses(model, tokens, mask, ablate=sets) - clean
    epsilon = 1e-3  # central differences of each head's scale around 1: -dL/ds

    def scaled(s, value):
        return loss_of(model, tokens, dataclasses.replace(Interventions.none(config), head_scale=jnp.where(s, value, 1.0)), mask)

    stepped = np.array([(scaled(s, 1 - epsilon) - scaled(s, 1 + epsilon)) / (2 * epsilon) for s in sets])
    np.testing.assert_allclose(estimated, stepped, atol=1e-3 + 5e-3 * np.abs(stepped).max())

    # on a model whose heads act in a near-linear regime it also tracks the exact ablations and knockouts
    mild = random_transformer(seed=3, scale=0.15, n_layers=3, n_heads=6, n_kv_heads=2)
    exact = sweep_losses(mild, tokens, mask, ablate=sets, show_progress=False)
    assert stats.pearsonr(estimate_sweep_losses(mild, tokens, mask, ablate=sets), exact).statistic > 0.8
    edges = np.asarray(induction_targets(tokens))
    knocked = sweep_losses(mild, tokens, mask, knock_out=sets, edges=edges, show_progress=False)
    assert stats.pearsonr(estimate_sweep_losses(mild, tokens, mask, knock_out=sets, edges=edges), knocked).statistic > 0.8


def test_a_full_knockout_gate_equals_boolean_knockout(model, tokens):
    config = model.config
    edges = np.asarray(induction_targets(tokens))
    heads = heads_mask(config, [(1, 2), (2, 0)])
    base = Interventions.none(config)
    gated = base.knock_out(jnp.asarray(edges), jnp.asarray(heads, jnp.float32))
    np.testing.assert_allclose(np.asarray(model(tokens, gated)), np.asarray(model(tokens, base.knock_out(edges, heads))), atol=1e-5)


def test_sweep_on_a_mesh_equals_unsharded(make_llama):
    directory, _ = make_llama("mesh", num_attention_heads=8, num_key_value_heads=4, vocab_size=256)
    tokens = random_tokens(4, 20, 256)
    mesh = make_mesh(data=2, model=4)
    sharded = circuits.load(directory, mesh=mesh, show_progress=False)
    plain = circuits.load(directory, show_progress=False)
    sets = one_head_each(plain.config)[:6]
    mask = np.ones(19, bool)
    np.testing.assert_allclose(
        sweep_losses(sharded, shard_tokens(tokens, mesh), mask, ablate=sets),
        sweep_losses(plain, tokens, mask, ablate=sets),
        rtol=1e-5,
    )


def test_induction_and_category_targets_by_hand():
    tokens = np.array([[0, 5, 6, 7, 5, 6]])
    targets = np.asarray(induction_targets(tokens))[0]
    expected = np.zeros((6, 6), bool)
    expected[4, 2] = True  # query 5 at t=4 -> key after the earlier 5
    expected[5, 3] = True  # query 6 at t=5 -> key after the earlier 6
    np.testing.assert_array_equal(targets, expected)

    categories = -np.ones(10, int)
    categories[[5, 8]] = 1  # 5 and 8 share a category; 6, 7 have none
    fuzzy = np.asarray(category_targets(np.array([[0, 5, 6, 8, 7, 8]]), categories))[0]
    expected = np.zeros((6, 6), bool)
    expected[3, 2] = True  # 8 at t=3 -> key after the 5 (same category)
    expected[5, 2] = expected[5, 4] = True  # 8 at t=5 -> after the 5 and after the earlier 8
    np.testing.assert_array_equal(fuzzy, expected)


def test_bad_interventions_are_refused(model, tokens):
    wrong = dataclasses.replace(Interventions.none(model.config), head_scale=jnp.ones((2, 2, 3)))
    with pytest.raises(ValueError, match="head_scale has shape"):
        model(tokens, wrong)
    with pytest.raises(ValueError, match="needs the edges"):
        sweep_losses(model, tokens, np.ones(23, bool), knock_out=one_head_each(model.config))


def test_row_chunks_change_no_result(model, monkeypatch):
    """A pass budget too small for one sequence splits every measurement into one-row passes: sweeps, their
    gradient estimates (knockouts too) and the attention and copying scores come out the same."""
    from circuits.analysis import batching
    from circuits.analysis.attention import attention_scores, copying_scores

    batch = random_tokens(4, 24, VOCAB, seed=9)
    later = np.zeros(23, bool)
    later[12:] = True
    sets = one_head_each(model.config)[::5]
    edges = induction_targets(batch)

    def measure():
        return (sweep_losses(model, batch, later, ablate=sets), estimate_sweep_losses(model, batch, later, ablate=sets),
                sweep_losses(model, batch, later, knock_out=sets, edges=edges),
                estimate_sweep_losses(model, batch, later, knock_out=sets, edges=edges),
                attention_scores(model, batch)["prefix_matching"].scores, copying_scores(model, batch).scores)

    whole = measure()
    monkeypatch.setattr(batching, "PASS_BUDGET_BYTES", 1)
    assert batching.rows_per_pass(4, 10) == 1
    for chunked, full in zip(measure(), whole):
        np.testing.assert_allclose(chunked, full, rtol=1e-5, atol=1e-6)


def test_measurements_never_hold_a_second_copy_of_the_weights(tokens):
    """A forward keeps the model's own parameter arrays (a jitted call that returned the model's state would swap in
    fresh copies, two copies of the weights for its length), and a backward pass through the layers keeps no
    stacked copy of the blocks' weights (only each layer's input residual)."""
    from flax import nnx

    from circuits.analysis.ablation import SweepData, _intervention_base, _loss_sum_gradients
    from circuits.analysis.attention import attention_scores

    wide = random_transformer(seed=4, n_layers=4, d_model=64, d_mlp=256, n_heads=4, n_kv_heads=2, head_dim=16, vocab_size=VOCAB)
    before = {path: variable[...] for path, variable in nnx.iter_graph(wide) if isinstance(variable, nnx.Param)}
    wide(tokens)
    attention_scores(wide, tokens)
    sweep_losses(wide, tokens, np.arange(23) >= 10, ablate=one_head_each(wide.config)[:2], show_progress=False)
    after = {path: variable[...] for path, variable in nnx.iter_graph(wide) if isinstance(variable, nnx.Param)}
    assert all(after[path] is array for path, array in before.items())

    data = SweepData.make(tokens[:1, :8], np.arange(7) >= 3)
    graphdef, state = nnx.split(wide)
    base = _intervention_base(wide.config, one_head_each(wide.config), None, None, None)
    compiled = _loss_sum_gradients.lower(graphdef, state, data, base, jnp.int32(0), 1).compile()
    block_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(nnx.state(wide.blocks)))
    assert compiled.memory_analysis().temp_size_in_bytes < block_bytes / 2  # at most one layer's weights at a time
