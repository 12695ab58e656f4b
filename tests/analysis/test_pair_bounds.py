"""Exact pruning of prefix-share's pair terms: the bound on each pair's gain, and the same report from fewer pairs."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import GEMMA_LIKE, QWEN_LIKE, random_transformer

from circuits.analysis.induction import predict_induction
from circuits.analysis.pair_bounds import EdgeFrontier, read_rms, sources_to_compute, written_rms


def brute_gains(values, wo, queries, wk, keep, scale):
    """f64[A, G, K, H]: scale * (mean_t v_t W_O W_K^T q_t - v_bar W_O W_K^T q_bar) over the kept rows, pair by pair."""
    v, q = values[keep].astype(np.float64), queries[keep].astype(np.float64)
    gains = np.zeros(wo.shape[:2] + queries.shape[1:3])
    for a, g, k, h in np.ndindex(gains.shape):
        written = v[:, a] @ wo[a, g]  # [n, M]
        read = q[:, k, h] @ wk[:, k].T  # [n, M]
        gains[a, g, k, h] = scale * ((written * read).sum(1).mean() - written.mean(0) @ read.mean(0))
    return gains


def test_the_bound_holds_for_every_pair_and_is_reached_when_aligned():
    rng = np.random.default_rng(0)
    n, a, g, k, h, d, m = 40, 2, 3, 2, 2, 4, 12
    values, queries = rng.normal(size=(n, a, d)), rng.normal(size=(n, k, h, d)) + 0.5
    wo, wk = rng.normal(size=(a, g, d, m)), rng.normal(size=(m, k, d))
    keep = rng.random(n) > 0.2
    bounds = 0.7 * np.asarray(written_rms(jnp.asarray(values, jnp.float32), jnp.asarray(keep), jnp.asarray(wo, jnp.float32)))[:, :, None, None] \
        * np.asarray(read_rms(jnp.asarray(queries, jnp.float32), jnp.asarray(keep), jnp.asarray(wk, jnp.float32)))[None, None]
    gains = brute_gains(values, wo, queries, wk, keep, 0.7)
    assert np.all(np.abs(gains) <= bounds * (1 + 1e-5))
    assert np.abs(gains).max() < 0.8 * bounds.max()  # random directions: far from the bound

    # a head that writes its value, read back by a key map that returns it to the query, whose query is that value:
    # the bound is reached
    own, eye = values[:, :1], np.eye(d)
    aligned = brute_gains(own, eye[None, None], own[:, :, None], eye[:, None], keep, 1.0)[0, 0, 0, 0]
    bound = np.asarray(written_rms(jnp.asarray(own, jnp.float32), jnp.asarray(keep), jnp.asarray(eye[None, None], jnp.float32)))[0, 0] \
        * np.asarray(read_rms(jnp.asarray(own[:, :, None], jnp.float32), jnp.asarray(keep), jnp.asarray(eye[:, None], jnp.float32)))[0, 0]
    np.testing.assert_allclose(aligned, bound, rtol=1e-5)


def test_sources_are_computed_until_no_other_can_change_the_report():
    """A top head first gets the source with the largest bound, then every source whose bound beats its best edge;
    a source whose bound is under the top edges and under every top head's best edge is never computed."""
    bounds = np.array([[5.0, 0.1], [3.0, 0.1], [1.0, 0.1], [0.2, 0.1]])
    edges = np.full(bounds.shape, np.nan)
    frontier = EdgeFrontier(n_edges=1)
    top = np.array([True, False])
    computed = np.zeros(4, bool)
    first = sources_to_compute(bounds, computed, edges, frontier, top)
    assert first.tolist() == [True, False, False, False]
    computed |= first
    edges[0] = [2.5, 0.05]
    frontier.add_edges(edges[0])
    second = sources_to_compute(bounds, computed, edges, frontier, top)
    assert second.tolist() == [False, True, False, False]  # only source 1 can still beat 2.5
    computed |= second
    edges[1] = [1.0, 0.0]
    frontier.add_edges(edges[1])
    assert not sources_to_compute(bounds, computed, edges, frontier, top).any()


@pytest.mark.parametrize("overrides", [dict(), QWEN_LIKE, GEMMA_LIKE], ids=["llama", "qkv-biases", "gemma3-block"])
def test_bounded_pairs_report_what_every_pair_reports(overrides):
    """pairs="bounded" gives the same scores, the same top edges and the same sources of the top heads as every pair,
    computing fewer pairs (the others NaN). Every KV group's second query head writes 100x less, as heads that barely
    write do in trained models: their edges cannot reach the top, and the bound shows it without computing them."""
    model = random_transformer(n_layers=3, **overrides)  # the Gemma-3-like block declares 3 layers
    wo = model.blocks.attn.wo[...]  # [L, K, G, D, M]
    model.blocks.attn.wo[...] = wo * jnp.where(jnp.arange(wo.shape[2]) == 1, 0.01, 1.0)[None, None, :, None, None]
    n_edges = 3
    full = predict_induction(model, n_tokens=64, n_edges=n_edges)
    bounded = predict_induction(model, n_tokens=64, n_edges=n_edges, pairs="bounded")
    assert bounded.settings.pairs == "bounded" and full.settings.pairs == "all"
    np.testing.assert_allclose(bounded.predicted_induction.scores, full.predicted_induction.scores, rtol=1e-4, atol=1e-6)
    assert [(e.prev_layer, e.prev_head, e.layer, e.head) for e in bounded.edges] == [(e.prev_layer, e.prev_head, e.layer, e.head) for e in full.edges]
    np.testing.assert_allclose([e.score for e in bounded.edges], [e.score for e in full.edges], rtol=1e-4, atol=1e-7)
    for layer, head, _ in full.predicted_induction.top(n_edges):
        assert bounded.source_of(layer, head) == full.source_of(layer, head)
    layers = full.token_gain.shape[0]
    valid = np.arange(layers)[:, None, None, None] < np.arange(layers)[None, None, :, None]
    valid = np.broadcast_to(valid, full.token_gain.shape)
    computed = np.isfinite(bounded.token_gain[valid])
    assert 0 < computed.mean() < 1
    np.testing.assert_allclose(bounded.token_gain[valid][computed], full.token_gain[valid][computed], rtol=1e-4, atol=1e-6)


def test_bounded_pairs_need_prefix_share():
    with pytest.raises(ValueError, match="prefix-share only"):
        predict_induction(random_transformer(n_layers=2), method="kcomp-token-zgain", n_tokens=16, pairs="bounded")
    with pytest.raises(ValueError, match="unknown pairs mode"):
        predict_induction(random_transformer(n_layers=2), n_tokens=16, pairs="some")


def test_bounded_pairs_refuse_a_multi_process_run(monkeypatch):
    """Its thresholds come from every pair computed so far, which a process holding a share of the pairs does not see."""
    from circuits import distributed

    monkeypatch.setattr(distributed, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="runs in one process"):
        predict_induction(random_transformer(n_layers=2), n_tokens=16, pairs="bounded")
