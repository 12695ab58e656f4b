"""The weight-only context model (analysis/context.py) and the mean-field stand-ins, against dense brute force."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import GEMMA_LIKE, QWEN_LIKE, brute_standins, dense_heads, random_transformer

from circuits.analysis.context import ContextProtocol, HeadContext, context_shares, head_context
from circuits.analysis.induction import offset_rotations, predict_induction
from circuits.analysis.standins import TokenStandins, mean_field_attention, sample_token_ids
from circuits.models.config import ModelConfig


def brute_shares(context: HeadContext, gain: np.ndarray, protocol: ContextProtocol, window=None) -> dict[str, np.ndarray]:
    """Zero spread: every key at its logit, one explicit softmax per query, averaged as each measurement averages."""
    n, length = protocol.tokens, protocol.length
    positional, bos, itself = (np.asarray(a, np.float64) for a in (context.positional, context.bos, context.itself))
    totals = {name: np.zeros(itself.shape) for name in ("bos", "itself", "previous", "prefix")}
    for t in range(1, n + 1):
        keys = [s for s in range(t + 1) if window is None or t - s < window]
        logits = []
        for s in keys:
            value = bos[t] if s == 0 else itself if s == t else positional[t - s].copy()
            if 1 <= s < t and (t - s + 1) % length == 0:  # token s - 1 is the query's token
                value = value + gain
            logits.append(value)
        logits = np.stack(logits)
        shares = np.exp(logits - logits.max(0))
        shares /= shares.sum(0)
        share = dict(zip(keys, shares))
        totals["bos"] += share.get(0, 0.0)
        totals["itself"] += share[t]
        totals["previous"] += share.get(t - 1, 0.0)
        if t > length:
            totals["prefix"] += sum(share[s] for s in keys if 1 <= s < t and (t - s + 1) % length == 0)
    return {"bos": totals["bos"] / n, "itself": totals["itself"] / n, "previous": totals["previous"] / n,
            "prefix": totals["prefix"] / (n - length)}


@pytest.mark.parametrize("repeats, window", [(2, None), (3, None), (2, 7)])
def test_shares_without_spread_are_the_exact_softmax(repeats, window):
    protocol = ContextProtocol(length=6, repeats=repeats)
    rng = np.random.default_rng(0)
    shape = (protocol.tokens + 1, 2, 3)
    context = HeadContext(jnp.asarray(rng.normal(size=shape), jnp.float32), jnp.asarray(rng.normal(size=shape) + 2, jnp.float32),
                          jnp.asarray(rng.normal(size=shape[1:]), jnp.float32), jnp.zeros(shape[1:], jnp.float32))
    gain = rng.normal(size=shape[1:]) + 1.0
    ours = context_shares(context, jnp.asarray(gain, jnp.float32), protocol, window)
    expected = brute_shares(context, gain, protocol, window)
    for name in expected:
        np.testing.assert_allclose(np.asarray(ours[name]), expected[name], rtol=1e-4, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(np.asarray(ours["bos"] + ours["itself"] + ours["others"]), 1.0, rtol=1e-5)


def test_shares_with_spread_are_the_expected_softmax_over_random_keys():
    """With content noise on the random keys, the shares are the softmax averaged over that noise: against a brute
    force average over 2000 other draws."""
    protocol = ContextProtocol(length=16, repeats=2)
    rng = np.random.default_rng(1)
    shape = (protocol.tokens + 1, 1, 2)
    spread = np.array([[1.0, 6.0]])
    context = HeadContext(jnp.asarray(rng.normal(size=shape), jnp.float32), jnp.asarray(rng.normal(size=shape) + 2, jnp.float32),
                          jnp.asarray(rng.normal(size=shape[1:]), jnp.float32), jnp.asarray(spread, jnp.float32))
    gain = np.array([[2.0, 3.0]])
    ours = context_shares(context, jnp.asarray(gain, jnp.float32), protocol)
    draws = []
    for _ in range(600):
        noisy = HeadContext(context.positional, context.bos, context.itself, jnp.zeros_like(context.spread))
        noise = rng.normal(size=shape) * np.sqrt(spread)  # one draw per offset: each query's random keys at distinct offsets
        noisy = HeadContext(noisy.positional + noise, noisy.bos, noisy.itself, noisy.spread)
        draws.append(brute_shares(noisy, gain, protocol))
    for name in ("previous", "prefix", "bos"):
        expected = np.mean([d[name] for d in draws], axis=0)
        np.testing.assert_allclose(np.asarray(ours[name]), expected, atol=0.03, err_msg=name)
    without = context_shares(HeadContext(context.positional, context.bos, context.itself, jnp.zeros_like(context.spread)),
                             jnp.asarray(gain, jnp.float32), protocol)
    assert abs(float(ours["prefix"][0, 1] - without["prefix"][0, 1])) > 0.02  # the spread matters (0.03 here)


def test_head_context_is_the_mean_logit_over_token_pairs():
    config = ModelConfig(vocab_size=8, d_model=16, n_layers=1, n_heads=2, n_kv_heads=1, head_dim=8, d_mlp=0, rope_theta=50.0)
    rng = np.random.default_rng(2)
    n, k, g, d = 40, 1, 2, 8
    queries, keys, bos_key = rng.normal(size=(n, k, g, d)) + 0.5, rng.normal(size=(n, k, d)) - 0.3, rng.normal(size=(k, d))
    keep = np.ones(n, bool)
    keep[-5:] = False
    rotations = np.asarray(offset_rotations(config, max_offset=6), np.float64)
    scale = 0.35
    ours = head_context(*(jnp.asarray(a, jnp.float32) for a in (queries, keys)), jnp.asarray(keep), jnp.asarray(bos_key, jnp.float32),
                        jnp.asarray(rotations, jnp.float32), scale)
    q, kk = queries[keep][:, 0], keys[keep][:, 0]  # [n', G, D], [n', D]
    for head in range(g):
        pairs = np.einsum("ad,rde,be->rab", q[:, head], rotations, kk) * scale  # every query token against every key token
        np.testing.assert_allclose(np.asarray(ours.positional)[:, 0, head], pairs.mean(axis=(1, 2)), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.asarray(ours.bos)[:, 0, head], np.einsum("ad,rde,e->ra", q[:, head], rotations, bos_key[0]).mean(1) * scale,
                                   rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(float(ours.itself[0, head]), np.einsum("ad,ad->a", q[:, head], kk).mean() * scale, rtol=1e-4)
        unrotated = q[:, head] @ kk.T * scale  # [a, b]: the content logit's variance over keys b, averaged over queries a
        np.testing.assert_allclose(float(ours.spread[0, head]), unrotated.var(axis=1).mean(), rtol=1e-4)


@pytest.mark.parametrize("post_norm", [False, True])
def test_mean_field_attention_is_the_share_weighted_mix_of_values(post_norm):
    rng = np.random.default_rng(3)
    n, k, g, d, m = 12, 2, 2, 4, 10
    values, first_value, wo = rng.normal(size=(n, k, d)), rng.normal(size=(k, d)), rng.normal(size=(k, g, d, m))
    keep = np.ones(n, bool)
    keep[3] = False
    shares = {name: rng.uniform(size=(k, g)) / 3 for name in ("bos", "itself", "others")}
    gain = rng.uniform(0.5, 2.0, size=m) if post_norm else None
    outputs, first, rms = mean_field_attention(*(jnp.asarray(a, jnp.float32) for a in (values, keep, first_value, wo)),
                                               {key: jnp.asarray(v, jnp.float32) for key, v in shares.items()},
                                               None if gain is None else jnp.asarray(gain, jnp.float32), 1e-6)
    mean_value = values[keep].mean(0)
    raw = []
    for row in range(n):
        out = sum(wo[a, b].T @ (shares["bos"][a, b] * first_value[a] + shares["itself"][a, b] * values[row, a] + shares["others"][a, b] * mean_value[a])
                  for a in range(k) for b in range(g))
        raw.append(out)
    raw = np.stack(raw)
    norm = (lambda x: x / np.sqrt(np.mean(x * x, -1, keepdims=True) + 1e-6) * gain) if post_norm else (lambda x: x)
    np.testing.assert_allclose(np.asarray(outputs)[keep], norm(raw)[keep], rtol=1e-4, atol=1e-5)
    assert np.all(np.asarray(outputs)[~keep] == 0)
    np.testing.assert_allclose(np.asarray(first), norm(sum(wo[a, b].T @ first_value[a] for a in range(k) for b in range(g))), rtol=1e-4)
    np.testing.assert_allclose(float(rms), np.sqrt(np.mean(raw[keep] ** 2, -1)).mean(), rtol=1e-4)


def test_query_side_gain_is_the_mean_matching_logit_over_tokens():
    """The query-side gain against a dense n x n logit matrix: query a carries what induction heads copied for token a,
    key b is token b's stand-in; gain = mean of the diagonal minus the mean of all entries, in nats (kept rows only)."""
    from circuits.analysis.induction import _query_side_gain
    from circuits.analysis.weights import AttentionWeights

    rng = np.random.default_rng(0)
    n, m, k, g, d = 12, 10, 2, 3, 4
    copied, standins = rng.normal(size=(n, m)), rng.normal(size=(n, m))
    wq, wk = rng.normal(size=(m, k, g, d)), rng.normal(size=(m, k, d))
    keep = np.arange(n) % 5 != 3
    weights = AttentionWeights(*(jnp.asarray(a, jnp.float32) for a in (wq, wk, wk, rng.normal(size=(k, g, d, m)))))
    gain = np.asarray(_query_side_gain(jnp.asarray(copied, jnp.float32), weights, jnp.asarray(standins, jnp.float32), jnp.asarray(keep), 0.5))
    for kv in range(k):
        for q in range(g):
            logits = (copied[keep] @ wq[:, kv, q]) @ (standins[keep] @ wk[:, kv]).T * 0.5  # [query token, key token]
            np.testing.assert_allclose(gain[kv, q], np.diag(logits).mean() - logits.mean(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("overrides", [dict(), QWEN_LIKE, GEMMA_LIKE], ids=["llama", "qkv-biases", "gemma3-block"])
def test_prefix_share_is_the_context_share_of_the_summed_source_gains(overrides, monkeypatch):
    """prefix-share: each head's score is its context's prefix share at the gain its sources add (their predicted
    previous-token share times their gain in nats at its input) plus the query-side gain of what earlier layers' heads
    copied (each head's output times its predicted prefix share, summed over earlier layers), its source the largest
    key-side term; the mean field is first order: each layer's attention output and its heads' copies are computed
    from the stand-ins' own content (embeddings through the MLP blocks, dense brute force) as it stands in the
    normalised residual (divided by the RMS of content plus earlier layers' mean-field outputs), not from earlier
    layers' mean-field outputs."""
    import circuits.analysis.induction as induction

    calls = {name: [] for name in ("layer_context", "_query_side_gain", "_copied_outputs", "mean_field_attention")}
    for name, records in calls.items():
        original = getattr(induction, name)
        monkeypatch.setattr(induction, name, lambda *args, _original=original, _records=records: _records.append((args, _original(*args)))
                            or _records[-1][1])
    residual_rms = []  # what each layer's attention input is divided by, as the stand-ins report it
    current = TokenStandins.current
    monkeypatch.setattr(TokenStandins, "current", lambda self: (current(self), residual_rms.append(self.residual_rms))[0])
    model = random_transformer(n_layers=3, **overrides)
    c = model.config
    protocol = ContextProtocol(10, 2)
    prediction = predict_induction(model, method="prefix-share", n_tokens=64, context=protocol)
    scores, previous = prediction.predicted_induction.scores, prediction.previous_token.scores
    assert np.all((scores >= 0) & (scores <= 1)) and np.all((previous >= 0) & (previous <= 1))
    assert prediction.settings.context == protocol and "mean-field" in prediction.settings.standins
    np.testing.assert_allclose(prediction.edge_strength, previous[:, :, None, None] * prediction.token_gain, rtol=1e-5, atol=1e-7)
    key_side = prediction.edge_strength.sum(axis=(0, 1))

    content = brute_standins(model, sample_token_ids(c.vocab_size, 64, 0), normalise=False)
    layer_rms = [float(output_rms) for _, (_, _, output_rms) in calls["mean_field_attention"]]
    copies = [np.asarray(out) / (layer_rms[layer] if c.block.post_norms else 1.0) for layer, (_, out) in enumerate(calls["_copied_outputs"])]
    for layer, ((args, _), context) in enumerate(zip(calls["mean_field_attention"], (out for _, out in calls["layer_context"]))):
        _, _, wv, _ = dense_heads(model, layer)
        bias = np.asarray(model.tensor("bv", layer), np.float64) if c.block.qkv_bias else np.zeros((c.n_kv_heads, c.head_dim))
        values, keep = np.asarray(args[0]), np.asarray(args[1])
        # the content's part of the normalised residual: content / RMS(content + earlier layers' mean-field outputs)
        residual = content[layer] + sum(np.asarray(out[0], np.float64) for _, out in calls["mean_field_attention"][:layer])
        own = content[layer] / np.sqrt((residual**2).mean(-1, keepdims=True))
        expected = np.stack([own @ wv[kv * c.q_per_kv] + bias[kv] for kv in range(c.n_kv_heads)], axis=1)
        np.testing.assert_allclose(values[keep], expected[keep], rtol=1e-3, atol=1e-4)  # first order: the stand-ins' own content
        copied_values = np.asarray(calls["_copied_outputs"][layer][0][0])  # the copies come from the same content values
        np.testing.assert_allclose(copied_values[keep], expected[keep], rtol=1e-3, atol=1e-4)

        query_side = np.zeros(c.n_heads)
        if layer > 0:
            (copied, _, _, _, _), gain = calls["_query_side_gain"][layer - 1]
            np.testing.assert_allclose(np.asarray(copied), sum(copies[:layer]), rtol=1e-5, atol=1e-6)
            query_side = np.asarray(gain).reshape(-1) / residual_rms[layer]  # nats at the reading layer's input
            # zero only where nothing was copied (a sliding window that hides the matching key from every earlier head)
            assert (np.abs(query_side).max() > 0) == bool(np.abs(sum(copies[:layer])).max() > 0)
        window = c.sliding_window if c.layer_kinds[layer] == "sliding_attention" else None
        zero, summed = (context_shares(context, jnp.asarray(gain.reshape(c.n_kv_heads, -1), jnp.float32), protocol, window)
                        for gain in (np.zeros(c.n_heads), key_side[layer] + query_side))
        np.testing.assert_allclose(previous[layer], np.asarray(zero["previous"]).reshape(-1), rtol=1e-5)
        np.testing.assert_allclose(scores[layer], np.asarray(summed["prefix"]).reshape(-1), rtol=1e-4, atol=1e-6)
    for layer, head in [(1, 0), (2, 5)]:
        source = np.unravel_index(np.argmax(prediction.edge_strength[:, :, layer, head]), scores.shape)
        assert prediction.source_of(layer, head) == tuple(int(i) for i in source)
