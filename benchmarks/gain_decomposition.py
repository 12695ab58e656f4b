"""Where an induction head's real logit gain comes from: the matching key's logit minus the mean logit of the other
keys, split over the residual stream's components (embedding, each earlier head's output, each MLP's output), on the
key side and on the query side in turn. This is the measurement the weight-only gains of ``prefix-share`` are checked
against.

    python benchmarks/gain_decomposition.py [MODEL] [--heads 10] [--sequences 4]

For the ``--heads`` heads with the highest measured prefix matching, on BOS + 50 random tokens x 2: the total gain
(nats, queries in the second repeat), then per side the part from the embedding, from all MLPs, from all heads, and
the 4 heads that add the most (with their measured previous-token and prefix-matching scores). Every norm divides by
the RMS it has in the real forward pass (the residual's, with QK-norm each head's query and key, with post-norms each
layer's attention output), so the logit is linear in each side's components and they add up to the total; a query or
key bias is one more component.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

import circuits
from circuits.analysis.attention import attention_scores
from circuits.analysis.repeated_tokens import repeated_random_tokens
from circuits.models.rope import apply_rotary, rotary_tables


def rms(x: np.ndarray, eps: float) -> np.ndarray:
    """RMS over the last axis, as the model's norms take it (with their epsilon ``eps``), keeping the axis."""
    return np.sqrt(np.mean(np.square(x), -1, keepdims=True) + eps)


def components(model, tokens, captured, layer: int) -> tuple[np.ndarray, list[str]]:
    """The residual stream at layer ``layer``'s input split into f32[C, B, T, M] parts, and their names (a head's part
    of a post-attention norm's output is its raw output over that layer's output RMS, times the gain)."""
    z, before, middle = (np.asarray(captured[name], np.float32) for name in ("z", "resid_pre", "resid_mid"))
    c = model.config
    parts, names = [np.asarray(model.embed_tokens(tokens), np.float32)], ["embed"]
    for earlier in range(layer):
        wo = np.asarray(model.tensor("wo", earlier), np.float32)
        heads = np.einsum("btkgd,kgdm->kgbtm", z[earlier], wo).reshape(c.n_heads, *parts[0].shape)
        if c.block.post_norms:
            gain = c.block.norm_offset + np.asarray(model.tensor("post_attn_norm", earlier), np.float32)
            heads = heads / rms(heads.sum(0), c.rms_norm_eps) * gain
        parts += list(heads)
        names += [f"L{earlier}H{h}" for h in range(c.n_heads)]
        parts.append(before[earlier + 1] - middle[earlier])
        names.append(f"MLP{earlier}")
    return np.stack(parts), names


def projected(model, parts: np.ndarray, residual: np.ndarray, layer: int, kind: str, kv: int, g: int) -> np.ndarray:
    """Each part's share f32[C (+1 with a bias), B, T, D] of head (kv, g)'s query (``kind`` "q") or key ("k") at layer
    ``layer``, before RoPE: through the attention norm (at the residual's real RMS), W and, with QK-norm, the head's
    real query or key RMS; a bias is the last part."""
    c = model.config
    gain = c.block.norm_offset + np.asarray(model.tensor("attn_norm", layer), np.float32)
    weight = np.asarray(model.tensor(f"w{kind}", layer), np.float32)
    weight = weight[:, kv, g] if kind == "q" else weight[:, kv]
    shares = np.einsum("cbtm,m,md->cbtd", parts, gain, weight) / rms(residual, c.rms_norm_eps)
    if c.block.qkv_bias:
        bias = np.asarray(model.tensor(f"b{kind}", layer), np.float32)
        shares = np.concatenate([shares, np.broadcast_to(bias[kv, g] if kind == "q" else bias[kv], shares[:1].shape)])
    if c.block.qk_norm:
        shares = shares / rms(shares.sum(0), c.rms_norm_eps) * (c.block.norm_offset + np.asarray(model.tensor(f"{kind}_norm", layer), np.float32))
    return shares


def rotate(vectors: np.ndarray, cos: jnp.ndarray, sin: jnp.ndarray) -> np.ndarray:
    """The model's own RoPE (:func:`~circuits.models.rope.apply_rotary`) on [..., T, D]."""
    flat = jnp.asarray(vectors.reshape(-1, *vectors.shape[-2:]))
    return np.asarray(apply_rotary(flat, cos, sin)).reshape(vectors.shape)


def matching_gain(queries: np.ndarray, keys: np.ndarray, length: int, scale: float, window: int | None) -> np.ndarray:
    """Mean over sequences and second-repeat queries t of logit(t, t - length + 1) minus the mean logit over the other
    visible keys 1 .. t - 1; queries / keys [..., B, T, D] (rotated) -> [...]."""
    n = queries.shape[-2]
    t = np.arange(length + 1, n)
    match = t - length + 1
    s = np.arange(n)
    others = (s[None] >= 1) & (s[None] < t[:, None]) & (s[None] != match[:, None])
    if window is not None:
        others &= t[:, None] - s[None] < window
    logits = np.einsum("...btd,...bsd->...bts", queries[..., t, :], keys) * scale
    matched = np.take_along_axis(logits, np.broadcast_to(match[:, None], logits.shape[:-1] + (1,)), -1)[..., 0]
    return (matched - (logits * others).sum(-1) / others.sum(-1)).mean((-1, -2))


def pattern_of(queries: np.ndarray, keys: np.ndarray, scale: float, window: int | None) -> np.ndarray:
    """The attention pattern f32[B, T, S] of rotated queries and keys [B, T, D]: the check that the parts add up."""
    n = queries.shape[1]
    t, s = np.arange(n)[:, None], np.arange(n)[None]
    visible = (s <= t) & ((t - s < window) if window is not None else True)
    logits = np.where(visible, np.einsum("btd,bsd->bts", queries, keys) * scale, -np.inf)
    shares = np.exp(logits - logits.max(-1, keepdims=True))
    return shares / shares.sum(-1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--heads", type=int, default=10)
    parser.add_argument("--sequences", type=int, default=4)
    args = parser.parse_args()
    model = circuits.load(args.model, show_progress=False)
    c = model.config
    measured = attention_scores(model, seeds=(0,))
    prefix, previous = measured["prefix_matching"].scores, measured["previous_token"].scores
    data = repeated_random_tokens(c, batch=args.sequences, seed=0)
    tokens = jnp.asarray(data.tokens)
    _, captured = model.run_with_capture(tokens, ("z", "resid_pre", "resid_mid", "attn_pattern"))
    patterns = np.asarray(captured["attn_pattern"], np.float32)  # [L, B, K, G, T, S]
    residual = np.asarray(captured["resid_pre"], np.float32)
    tables = {kind: rotary_tables(c, tokens.shape[1], kind) for kind in set(c.layer_kinds)}

    def label(name: str) -> str:
        layer, head = map(int, name[1:].split("H"))
        return f"{name} ({{:+.2f}}, previous {previous[layer, head]:.2f}, prefix {prefix[layer, head]:.2f})"

    for index in np.argsort(-prefix, axis=None)[: args.heads]:
        layer, head = (int(i) for i in np.unravel_index(index, prefix.shape))
        kv, g = divmod(head, c.q_per_kv)
        parts, names = components(model, tokens, captured, layer)
        names = names + ["bias"] * c.block.qkv_bias
        cos, sin = tables[c.layer_kinds[layer]]
        window = c.sliding_window if c.layer_kinds[layer] == "sliding_attention" else None
        query_parts, key_parts = (rotate(projected(model, parts, residual[layer], layer, kind, kv, g), cos, sin) for kind in ("q", "k"))
        queries, keys = query_parts.sum(0), key_parts.sum(0)
        total = matching_gain(queries, keys, data.length, c.attention_scale, window)
        error = np.abs(pattern_of(queries, keys, c.attention_scale, window) - patterns[layer, :, kv, g]).max()
        print(f"L{layer}H{head}: prefix matching {prefix[layer, head]:.2f}, gain {total:.2f} nats (the parts' sum gives the "
              f"real pattern to {error:.1e})")
        for side, split in (("keys", matching_gain(queries[None], key_parts, data.length, c.attention_scale, window)),
                            ("queries", matching_gain(query_parts, keys[None], data.length, c.attention_scale, window))):
            heads = [(value, name) for value, name in zip(split, names) if name.startswith("L")]
            mlps = sum(value for value, name in zip(split, names) if name.startswith("MLP"))
            largest = sorted(heads, key=lambda pair: -abs(pair[0]))[:4]
            bias = f", bias {split[-1]:+.2f}" if c.block.qkv_bias else ""
            print(f"  {side:8s} embed {split[0]:+.2f}, MLPs {mlps:+.2f}{bias}, heads {sum(v for v, _ in heads):+.2f}: "
                  + ", ".join(label(name).format(value) for value, name in largest))


if __name__ == "__main__":
    main()
