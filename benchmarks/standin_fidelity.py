"""How far the ``prefix-share`` stand-ins are from the real residual stream, layer by layer.

    python benchmarks/standin_fidelity.py [MODEL] [--sequences 4]

The real residual at each layer's input (BOS + 50 random tokens x 2, every position but BOS) and the stand-ins' (the
sampled tokens, with their first-order mean-field attention outputs, as the predictor's pass builds them) are split
into the embedding, the MLP blocks' outputs and the attention layers' outputs so far. For each part: the RMS of its
common part (the mean over positions or tokens) and of its token-specific part (the rest), each token's parts divided by its
whole residual's RMS (as the layer's norm divides it); then the whole residual's, and the cosine between the real and
the stand-ins' common attention parts. A weight-only context model predicts attention from these stand-ins, so where
their common and specific parts drift from the real ones, its BOS logits and content spread drift too.
"""

from __future__ import annotations

import argparse

import jax.numpy as jnp
import numpy as np
from gain_decomposition import components

import circuits
from circuits.analysis import standins
from circuits.analysis.induction import predict_induction
from circuits.analysis.repeated_tokens import repeated_random_tokens


def common_and_specific(vectors: np.ndarray) -> tuple[float, float]:
    """RMS of the mean of ``vectors`` f32[n, M] and of their deviations from it."""
    mean = vectors.mean(0)
    return float(np.sqrt(np.mean(mean**2))), float(np.sqrt(np.mean((vectors - mean) ** 2)))


def per_token_units(parts: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Each part f32[n, M] divided by its token's whole residual RMS, as the layer's norm divides it."""
    whole = sum(parts.values())
    rms = np.sqrt(np.mean(whole**2, axis=-1, keepdims=True))
    return {kind: part / rms for kind, part in parts.items()} | {"whole": whole / rms}


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / max(np.linalg.norm(a) * np.linalg.norm(b), 1e-30))


def standin_states(model) -> dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per layer, the stand-ins at its input as the predictor's pass leaves them: (residual f32[n, M] without the
    mean-field attention outputs, those outputs summed f32[n, M], kept tokens bool[n])."""
    states = {}
    current = standins.TokenStandins.current

    def recording(self):
        states[self.layer] = (np.asarray(self._residual), np.asarray(self._attended), self.keep.copy())
        return current(self)

    standins.TokenStandins.current = recording
    try:
        predict_induction(model)
    finally:
        standins.TokenStandins.current = current
    return states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--sequences", type=int, default=4)
    args = parser.parse_args()
    model = circuits.load(args.model, show_progress=False)
    c = model.config
    tokens = jnp.asarray(repeated_random_tokens(c, batch=args.sequences, seed=0).tokens)
    _, captured = model.run_with_capture(tokens, ("z", "resid_pre", "resid_mid"))
    states = standin_states(model)
    embeddings = np.asarray(model.embed_tokens(jnp.asarray(standins.sample_token_ids(c.vocab_size, standins.DEFAULT_TOKENS, 0))),
                            np.float32)
    print(f"{args.model}: common / token-specific RMS of each part, per token in units of its whole residual's RMS (real | stand-ins)")
    print("layer  " + "  ".join(f"{title:21s}" for title in ("embedding", "MLPs", "attention", "whole")) + "  cos(attention)")
    parts, names = components(model, tokens, captured, c.n_layers - 1)
    parts = parts[:, :, 1:].reshape(len(names), -1, c.d_model)  # every position but BOS
    is_head, is_mlp = (np.array([name.startswith(prefix) for name in names]) for prefix in ("L", "MLP"))
    for layer in range(1, c.n_layers):
        before = np.array([int(name[1:].split("H")[0]) < layer if name.startswith("L") else
                           int(name[3:]) < layer if name.startswith("MLP") else True for name in names])
        real = {"embedding": parts[0], "MLPs": parts[is_mlp & before].sum(0), "attention": parts[is_head & before].sum(0)}
        residual, attended, keep = states[layer]
        stand = {"embedding": embeddings[keep], "MLPs": (residual - embeddings)[keep], "attention": attended[keep]}
        columns = []
        real_units, stand_units = per_token_units(real), per_token_units(stand)
        for kind in real_units:
            (real_common, real_specific), (stand_common, stand_specific) = (common_and_specific(units[kind])
                                                                            for units in (real_units, stand_units))
            columns.append(f"{real_common:.2f}/{real_specific:.2f} | {stand_common:.2f}/{stand_specific:.2f}")
        columns.append(f"{cosine(real['attention'].mean(0), stand['attention'].mean(0)):+.2f}")
        print(f"{layer:5d}  " + "  ".join(f"{column:21s}" for column in columns).rstrip())


if __name__ == "__main__":
    main()
