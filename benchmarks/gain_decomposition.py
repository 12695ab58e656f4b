"""Where an induction head's real logit gain comes from: the matching key's logit minus the mean logit of the other
keys, split over the residual stream's components (embedding, each earlier head's output, each MLP's output), on the
key side and on the query side in turn. This is the measurement the weight-only gains of ``prefix-share`` are checked
against.

    python benchmarks/gain_decomposition.py [MODEL] [--heads 10] [--sequences 4]

For the ``--heads`` heads with the highest measured prefix matching, on BOS + 50 random tokens x 2: the total gain
(nats, queries in the second repeat), then per side the part from the embedding, from all MLPs, from all heads, and
the 4 heads that add the most (with their measured previous-token and prefix-matching scores). Pre-norm models without
QK-norm or post-norms only: there the attention logit is linear in each side's residual once the RMS is fixed.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np

import circuits
from circuits.analysis.attention import attention_scores
from circuits.analysis.repeated_tokens import repeated_random_tokens
from circuits.models.rope import rotary_tables


def components(model, tokens, captured, layer: int) -> tuple[np.ndarray, list[str]]:
    """The residual stream at layer ``layer``'s input split into f32[C, B, T, M] parts, and their names."""
    z, before, middle = (np.asarray(captured[name], np.float32) for name in ("z", "resid_pre", "resid_mid"))
    c = model.config
    parts, names = [np.asarray(model.embed_tokens(tokens), np.float32)], ["embed"]
    for earlier in range(layer):
        wo = np.asarray(model.tensor("wo", earlier), np.float32)
        heads = np.einsum("btkgd,kgdm->kgbtm", z[earlier], wo).reshape(c.n_heads, *parts[0].shape)
        parts += list(heads)
        names += [f"L{earlier}H{h}" for h in range(c.n_heads)]
        parts.append(before[earlier + 1] - middle[earlier])
        names.append(f"MLP{earlier}")
    return np.stack(parts), names


def rotate(vectors: np.ndarray, cos: np.ndarray, sin: np.ndarray) -> np.ndarray:
    """RoPE in the half-split layout on [..., T, D]."""
    half = vectors.shape[-1] // 2
    return vectors * cos + np.concatenate([-vectors[..., half:], vectors[..., :half]], -1) * sin


def matching_gain(queries: np.ndarray, keys: np.ndarray, length: int, scale: float) -> np.ndarray:
    """Mean over sequences and second-repeat queries t of logit(t, t - length + 1) minus the mean logit over the other
    keys 1 .. t - 1; queries / keys [..., B, T, D] (rotated) -> [...]."""
    n = queries.shape[-2]
    t = np.arange(length + 1, n)
    match = t - length + 1
    s = np.arange(n)
    others = (s[None] >= 1) & (s[None] < t[:, None]) & (s[None] != match[:, None])
    logits = np.einsum("...btd,...bsd->...bts", queries[..., t, :], keys) * scale
    matched = np.take_along_axis(logits, np.broadcast_to(match[:, None], logits.shape[:-1] + (1,)), -1)[..., 0]
    return (matched - (logits * others).sum(-1) / others.sum(-1)).mean((-1, -2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--heads", type=int, default=10)
    parser.add_argument("--sequences", type=int, default=4)
    args = parser.parse_args()
    model = circuits.load(args.model, show_progress=False)
    c = model.config
    if c.block.post_norms or c.block.qk_norm:
        raise SystemExit(f"{args.model}: the split needs a pre-norm block without QK-norm or post-norms (the logit is then "
                         "linear in each side's residual); choose a Llama-style model")
    measured = attention_scores(model, seeds=(0,))
    prefix, previous = measured["prefix_matching"].scores, measured["previous_token"].scores
    data = repeated_random_tokens(c, batch=args.sequences, seed=0)
    tokens = jnp.asarray(data.tokens)
    _, captured = model.run_with_capture(tokens, ("z", "resid_pre", "resid_mid"))
    residual = np.asarray(captured["resid_pre"], np.float32)
    cos, sin = (np.asarray(a) for a in rotary_tables(c, tokens.shape[1]))

    def label(name: str) -> str:
        layer, head = map(int, name[1:].split("H"))
        return f"{name} ({{:+.2f}}, previous {previous[layer, head]:.2f}, prefix {prefix[layer, head]:.2f})"

    for index in np.argsort(-prefix, axis=None)[: args.heads]:
        layer, head = (int(i) for i in np.unravel_index(index, prefix.shape))
        kv, g = divmod(head, c.q_per_kv)
        parts, names = components(model, tokens, captured, layer)
        rms = np.sqrt(np.mean(np.square(residual[layer]), -1, keepdims=True) + c.rms_norm_eps)
        gain = np.asarray(model.tensor("attn_norm", layer), np.float32)
        wq = np.asarray(model.tensor("wq", layer), np.float32)[:, kv, g]
        wk = np.asarray(model.tensor("wk", layer), np.float32)[:, kv]
        query_parts = rotate(np.einsum("cbtm,m,md->cbtd", parts, gain, wq) / rms, cos, sin)
        key_parts = rotate(np.einsum("cbtm,m,md->cbtd", parts, gain, wk) / rms, cos, sin)
        queries, keys = query_parts.sum(0), key_parts.sum(0)
        total = matching_gain(queries, keys, data.length, c.attention_scale)
        print(f"L{layer}H{head}: prefix matching {prefix[layer, head]:.2f}, gain {total:.2f} nats")
        for side, split in (("keys", matching_gain(queries[None], key_parts, data.length, c.attention_scale)),
                            ("queries", matching_gain(query_parts, keys[None], data.length, c.attention_scale))):
            heads = [(value, name) for value, name in zip(split, names) if name.startswith("L")]
            mlps = sum(value for value, name in zip(split, names) if name.startswith("MLP"))
            largest = sorted(heads, key=lambda pair: -abs(pair[0]))[:4]
            print(f"  {side:8s} embed {split[0]:+.2f}, MLPs {mlps:+.2f}, heads {sum(v for v, _ in heads):+.2f}: "
                  + ", ".join(label(name).format(value) for value, name in largest))


if __name__ == "__main__":
    main()
