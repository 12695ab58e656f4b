"""Weight-only scores against brute-force products of the full matrices, plus invariances."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import dense_heads, random_transformer

from circuits.analysis.composition import composition_baseline, composition_tensors
from circuits.analysis.ov import ov_copying_scores


def brute_ov_scores(model, fold=True, center=False):
    c = model.config
    embed = np.asarray(model.tensor("embed"), np.float64)
    unembed = np.asarray(model.unembedding(), np.float64)
    if fold:
        unembed = unembed * np.asarray(model.tensor("final_norm"), np.float64)[:, None]
    if center:
        unembed = unembed - unembed.mean(axis=1, keepdims=True)
    scores = np.zeros((c.n_layers, c.n_heads))
    for layer in range(c.n_layers):
        _, _, wv, wo = dense_heads(model, layer, fold)
        for h in range(c.n_heads):
            full = embed @ wv[h] @ wo[h] @ unembed  # [V, V]
            eig = np.linalg.eigvals(full)
            scores[layer, h] = eig.sum().real / np.abs(eig).sum()
    return scores


@pytest.mark.parametrize("fold, center", [(True, False), (False, False), (True, True)])
@pytest.mark.parametrize("tied", [False, True])
def test_ov_copying_matches_full_vocab_eigenvalues(fold, center, tied):
    model = random_transformer(tie_embeddings=tied)
    result = ov_copying_scores(model, fold_norms=fold, center_unembed=center, return_eigenvalues=True)
    np.testing.assert_allclose(result.scores, brute_ov_scores(model, fold, center), atol=1e-5)
    assert result.preprocessing.fold_norms == fold and result.preprocessing.center_unembed == center
    assert result.eigenvalues.shape == (3, 6, 4)
    assert np.asarray(result).shape == (3, 6)


def brute_composition(model, kind, fold=True):
    c = model.config
    heads = [dense_heads(model, layer, fold) for layer in range(c.n_layers)]
    out = np.zeros((c.n_layers, c.n_heads, c.n_layers, c.n_heads))
    for l1 in range(c.n_layers):
        _, _, wv1, wo1 = heads[l1]
        for l2 in range(l1 + 1, c.n_layers):
            wq2, wk2, wv2, wo2 = heads[l2]
            for j in range(c.n_heads):
                a = wv1[j] @ wo1[j]
                for i in range(c.n_heads):
                    b = {"q": wq2[i] @ wk2[i].T, "k": wk2[i] @ wq2[i].T, "v": wv2[i] @ wo2[i]}[kind]
                    out[l1, j, l2, i] = np.linalg.norm(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b))
    return out


def test_composition_matches_brute_force():
    model = random_transformer(n_layers=4)
    results = composition_tensors(model, baseline_seeds=2)
    for kind in "qkv":
        np.testing.assert_allclose(results[kind].scores, brute_composition(model, kind), atol=1e-5)
        lower = np.tril(np.ones((4, 4), bool))  # layer pairs with l1 >= l2
        assert np.all(results[kind].scores.transpose(0, 2, 1, 3)[lower] == 0)


def test_composition_chunking_gives_same_scores(monkeypatch):
    import circuits.analysis.composition as composition

    model = random_transformer(n_layers=5)
    whole = composition_tensors(model, ("q",), baseline_seeds=2)["q"].scores
    monkeypatch.setattr(composition, "CHUNK_BYTES", 1)
    np.testing.assert_allclose(composition_tensors(model, ("q",), baseline_seeds=2)["q"].scores, whole, atol=1e-6)


def test_mha_model_composition_matches_brute_force():
    model = random_transformer(n_heads=3, n_kv_heads=3, head_dim=8, d_model=16)
    results = composition_tensors(model, ("k", "v"), fold_norms=False, baseline_seeds=2)
    for kind in "kv":
        np.testing.assert_allclose(results[kind].scores, brute_composition(model, kind, fold=False), atol=1e-5)


def test_head_permutation_permutes_scores():
    """Swapping two KV groups of layer 1 (with their query heads) swaps the matching score rows/columns."""
    model = random_transformer()
    before_ov = ov_copying_scores(model).scores
    before = composition_tensors(model, baseline_seeds=2)
    for name, axis in (("wq", 2), ("wk", 2), ("wv", 2), ("wo", 1)):
        holder = model.blocks.attn
        value = getattr(holder, name)[...]
        swapped = value.at[1].set(jnp.flip(value[1], axis=axis - 1))
        getattr(holder, name)[...] = swapped
    order = np.array([3, 4, 5, 0, 1, 2])  # flat heads of KV group 1 then group 0
    after_ov = ov_copying_scores(model).scores
    np.testing.assert_allclose(after_ov[1], before_ov[1][order], atol=1e-5)
    np.testing.assert_allclose(after_ov[[0, 2]], before_ov[[0, 2]], atol=1e-6)
    after = composition_tensors(model, baseline_seeds=2)
    for kind in "qkv":
        np.testing.assert_allclose(after[kind].scores[1, :, 2], before[kind].scores[1, order, 2], atol=1e-5)
        np.testing.assert_allclose(after[kind].scores[0, :, 1], before[kind].scores[0, :, 1][:, order], atol=1e-5)


def test_scaling_values_against_outputs_changes_nothing():
    model = random_transformer()
    before_ov = ov_copying_scores(model).scores
    before = composition_tensors(model, baseline_seeds=2)
    model.blocks.attn.wv[...] = model.blocks.attn.wv[...] * 7.0
    model.blocks.attn.wo[...] = model.blocks.attn.wo[...] / 7.0
    np.testing.assert_allclose(ov_copying_scores(model).scores, before_ov, atol=1e-5)
    after = composition_tensors(model, baseline_seeds=2)
    for kind in "qkv":
        np.testing.assert_allclose(after[kind].scores, before[kind].scores, atol=1e-5)


def test_random_baseline_is_what_gaussian_weights_score():
    model = random_transformer()
    mean, std = composition_baseline(model.config, "k", seeds=4)
    assert 0 < mean < 1 and std > 0
    # Gaussian weights of these shapes score close to the baseline; the baseline depends on shape only
    assert composition_baseline(model.config, "k", seeds=4) == (mean, std)


def test_streaming_from_checkpoint_equals_in_memory(make_llama):
    import circuits
    from circuits.convert import HFCheckpoint

    directory, _ = make_llama("stream", dtype=__import__("torch").bfloat16)
    source = HFCheckpoint(directory)
    model = circuits.load(directory, show_progress=False)
    np.testing.assert_allclose(ov_copying_scores(source).scores, ov_copying_scores(model).scores, atol=1e-6)
    streamed = composition_tensors(source, ("k",), baseline_seeds=2)["k"]
    assert streamed.preprocessing.weights_dtype == "bfloat16"
    np.testing.assert_allclose(
        streamed.scores, composition_tensors(model, ("k",), baseline_seeds=2)["k"].scores, atol=1e-6
    )
    assert streamed.preprocessing.product_dtype == "bfloat16"  # bf16 checkpoint: bf16 products, f32 sums
    exact = composition_tensors(source, ("k", "q"), baseline_seeds=2, product_dtype="float32")
    assert exact["k"].preprocessing.product_dtype == "float32"
    fast = composition_tensors(source, ("q",), baseline_seeds=2)["q"]
    for kind, scores in (("k", streamed.scores), ("q", fast.scores)):
        later = np.triu(np.ones((2, 2), bool), 1)[:, None, :, None]
        np.testing.assert_allclose(scores, exact[kind].scores, rtol=2e-2, atol=1e-4)
        assert np.abs(scores - exact[kind].scores)[np.broadcast_to(later, scores.shape)].max() > 0  # really bf16


def test_token_k_composition_matches_full_vocab_eigenvalues():
    from circuits.analysis.induction import token_k_composition

    model = random_transformer(n_layers=3)
    terms = token_k_composition(model)
    embed = np.asarray(model.tensor("embed"), np.float64)
    c = model.config
    for l1 in range(c.n_layers):
        for l2 in range(c.n_layers):
            if l1 >= l2:
                assert np.all(np.isnan(terms[l1, :, l2]))
                continue
            _, _, wv1, wo1 = dense_heads(model, l1)
            wq2, wk2, _, _ = dense_heads(model, l2)
            for j in range(c.n_heads):
                for i in range(c.n_heads):
                    virtual = embed @ wq2[i] @ wk2[i].T @ wo1[j].T @ wv1[j].T @ embed.T  # [V, V]
                    eig = np.linalg.eigvals(virtual)
                    assert abs(terms[l1, j, l2, i] - eig.sum().real / np.abs(eig).sum()) < 1e-5


def test_planted_circuit_is_ranked_first_from_weights_alone():
    import circuits
    from circuits.analysis.induction import predict_induction

    model = circuits.load("demo-induction")
    prediction = predict_induction(model, method="kcomp-token-zgain")
    assert prediction.predicted_induction.top(1)[0][:2] == (1, 0)
    first = prediction.edges[0]
    assert (first.prev_layer, first.prev_head, first.layer, first.head) == (0, 0, 1, 0)
    assert first.token_term > 0.9  # the virtual QK circuit matches token to previous token
    assert prediction.ov_copying.scores[1, 0] > 0.99
    ratio = prediction.k_composition.ratio()
    assert ratio[0, 0, 1, 0] > 1.5 and ratio[0, 0, 1, 0] == ratio.max()  # noise heads sit near 1x baseline


def test_demo_model_really_does_induction():
    """Forward-pass check of the planted circuit: attention to t-1 and to the token after the earlier copy."""
    import jax

    import circuits
    from circuits.analysis.repeated_tokens import repeated_random_tokens

    model = circuits.load("demo-induction")
    tokens = repeated_random_tokens(model.config, 8, 40).tokens
    logits, captured = model.run_with_capture(tokens, ("attn_pattern",))
    pattern = np.asarray(captured["attn_pattern"])  # [L, B, K, G, T, S]
    t = np.arange(41, 81)
    assert pattern[0, :, 0, 0, t, t - 1].mean() > 0.95
    assert pattern[1, :, 0, 0, t, t - 39].mean() > 0.5
    nll = -np.take_along_axis(np.asarray(jax.nn.log_softmax(logits))[:, :-1], np.asarray(tokens)[:, 1:, None], -1)
    assert nll[:, 40:].mean() < nll[:, :40].mean() - 4


def test_widened_bf16_products_equal_bf16_products():
    """Operands stored in bfloat16 give the same edge terms whether the product runs on bf16 inputs or on the same
    values widened to float32 (a product of two bf16 values is exact in float32; only the summation order differs)."""
    import jax

    from circuits.analysis.induction import EarlierHeads, LaterHeads, _edge_terms

    keys = iter(jax.random.split(jax.random.key(0), 6))
    a, g, k, h, d, m, n = 2, 2, 2, 3, 8, 64, 16

    def normal(shape, dtype=jnp.float32):
        return jax.random.normal(next(keys), shape, jnp.float32).astype(dtype)

    earlier = EarlierHeads(normal((a, g, d, m), jnp.bfloat16), jnp.eye(d)[None].repeat(a, 0), jnp.ones((a, g)), normal((n, a, d)))
    later = LaterHeads(normal((m, k, d), jnp.bfloat16), jnp.eye(d)[None, None].repeat(k, 0).repeat(h, 1), jnp.ones((k, h)),
                       normal((n, k, h, d)))
    keep = jnp.arange(n) < n - 3
    narrow = _edge_terms(earlier, later, keep, 0.5, "bfloat16")
    wide = _edge_terms(earlier, later, keep, 0.5, "float32")
    for x, y in zip(narrow, wide):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-5)


def test_phases_are_recorded_only_when_asked():
    from circuits.analysis import phases
    from circuits.analysis.induction import predict_induction

    model = random_transformer(n_layers=3)
    with phases.phase("outside", 10.0) as done:
        assert done is not jnp.asarray and done(3) == 3
    with phases.recording() as log:
        predict_induction(model)
    rows = {name: (seconds, flop, calls) for name, seconds, flop, calls in log.rows()}
    assert "outside" not in rows
    assert rows["stand-ins: MLP blocks"][2] == 3 and rows["read attention weights"][2] == 3
    edge_seconds, edge_flop, edge_calls = rows["edge terms: P = W_O W_K and its traces"]
    assert edge_calls >= 1 and edge_flop > 0 and edge_seconds > 0
