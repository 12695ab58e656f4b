"""Measured head scores against brute-force loops, on the planted demo model and on random models."""

import numpy as np
import pytest
from helpers import random_transformer

import circuits
from circuits.analysis.agreement import (
    ablation_effect,
    heads_for_fraction,
    precision_at_k,
    random_heads,
    spearman,
)
from circuits.analysis.attention import attention_scores, copying_scores
from circuits.analysis.repeated_tokens import repeated_random_tokens


@pytest.fixture(scope="module")
def model():
    return random_transformer(seed=1, n_layers=2, n_heads=4, n_kv_heads=2, vocab_size=30)


def brute_force_attention_scores(pattern, tokens):
    """Loops over the captured pattern [L, B, K, G, T, S]: prefix matching, previous token, duplicate token."""
    n_layers, batch, k, g, seq, _ = pattern.shape
    scores = {name: np.zeros((n_layers, k * g)) for name in ("prefix_matching", "previous_token", "duplicate_token")}
    counts = dict.fromkeys(scores, 0)
    for b in range(batch):
        for t in range(seq):
            keys = {
                "prefix_matching": [s for s in range(1, t + 1) if tokens[b, s - 1] == tokens[b, t]],
                "previous_token": [t - 1] if t >= 1 else [],
                "duplicate_token": [s for s in range(t) if tokens[b, s] == tokens[b, t]],
            }
            for name, chosen in keys.items():
                if chosen:
                    counts[name] += 1
                    scores[name] += pattern[:, b, :, :, t][..., chosen].sum(-1).reshape(n_layers, k * g)
    return {name: scores[name] / counts[name] for name in scores}


def test_attention_scores_match_brute_force(model):
    data = repeated_random_tokens(model.config, batch=3, length=12, repeats=3, seed=2)
    _, captured = model.run_with_capture(data.tokens, ("attn_pattern",))
    expected = brute_force_attention_scores(np.asarray(captured["attn_pattern"], np.float64), data.tokens)
    measured = attention_scores(model, data)
    for name, scores in expected.items():
        np.testing.assert_allclose(measured[name].scores, scores, atol=1e-5, err_msg=name)
        assert measured[name].preprocessing is None and "3 sequences" in measured[name].source


def test_copying_score_matches_brute_force(model):
    tokens = repeated_random_tokens(model.config, batch=2, length=8, seed=4)
    _, captured = model.run_with_capture(tokens.tokens, ("attn_pattern", "z"))
    pattern, z = np.asarray(captured["attn_pattern"], np.float64), np.asarray(captured["z"], np.float64)
    c = model.config
    unembed = np.asarray(model.final_norm[...], np.float64)[:, None] * np.asarray(model.unembedding(), np.float64)
    wo = np.asarray(model.blocks.attn.wo[...], np.float64)
    queries = range(9, 17)
    expected = np.zeros((c.n_layers, c.n_heads))
    for layer in range(c.n_layers):
        for h in range(c.n_heads):
            k, g = divmod(h, c.q_per_kv)
            shares = []
            for b in range(2):
                for t in queries:
                    logits = np.maximum(z[layer, b, t, k, g] @ wo[layer, k, g] @ unembed, 0.0)
                    attended = tokens.tokens[b, np.argmax(pattern[layer, b, k, g, t])]
                    context = set(tokens.tokens[b, : t + 1].tolist())
                    total = sum(logits[v] for v in context)
                    shares.append(logits[attended] / total if total > 0 else 0.0)
            expected[layer, h] = np.mean(shares)
    np.testing.assert_allclose(copying_scores(model, tokens).scores, expected, atol=1e-5)


def test_demo_heads_are_measured_where_they_were_planted():
    demo = circuits.load("demo-induction")
    scores = attention_scores(demo, seeds=(0, 1))
    assert scores["prefix_matching"].top(1)[0][:2] == (1, 0)
    assert scores["prefix_matching"].scores[1, 0] > 0.9
    assert scores["previous_token"].top(1)[0][:2] == (0, 0)
    assert scores["previous_token"].source.endswith("seeds 0, 1")
    copying = copying_scores(demo)
    assert copying.top(1)[0][:2] == (1, 0) and copying.scores[1, 0] > 5 * np.delete(copying.scores.ravel(), 2).max()


def test_ablating_the_planted_induction_head_destroys_in_context_copying():
    demo = circuits.load("demo-induction")
    data = repeated_random_tokens(demo.config, batch=8, length=30, seed=3)
    prefix = attention_scores(demo, data)["prefix_matching"]
    effect = ablation_effect(demo, data, prefix, 1, seeds=(0, 1, 2))
    assert effect.heads == [(1, 0)]
    assert effect.increase > 2.0 and effect.increase > 5 * max(effect.random_increase, 0.01)
    mean = ablation_effect(demo, data, prefix, 1, seeds=(0,), mode="mean")
    assert mean.mode == "mean" and mean.increase > 2.0


def test_rank_agreement_metrics():
    predicted = np.array([[0.9, 0.1], [0.5, 0.3]])
    measured = np.array([[0.8, 0.0], [0.2, 0.6]])
    assert precision_at_k(predicted, measured, 2) == 0.5  # top-2 predicted {(0,0),(1,0)}, measured {(0,0),(1,1)}
    assert spearman(predicted, measured) == pytest.approx(0.8)  # ranks 4,1,3,2 vs 4,1,2,3: 1 - 6*2/(4*15)
    assert spearman(predicted, predicted * 3 + 1) == pytest.approx(1.0)


def test_head_counts_and_layer_matched_random_heads():
    assert heads_for_fraction(30, 9, 0.03) == 9 and heads_for_fraction(30, 9, 0.01) == 3
    like = [(3, 1), (3, 4), (7, 0)]
    drawn = random_heads(30, 9, 3, seed=5, like=like)
    assert sorted(layer for layer, _ in drawn) == [3, 3, 7] and len(set(drawn)) == 3
    assert random_heads(30, 9, 3, seed=5, like=like) == drawn  # seeded
    assert len(set(random_heads(30, 9, 20, seed=1))) == 20
