"""How well each weight-only method names the measured induction heads of real models (the predictor issue's bars).

    python benchmarks/predictor_agreement.py [MODEL ...] [--methods kcomp-token-zgain prefix-share] [--token-seeds 0 1 2]

For each model (default: smollm2-135m gemma-3-270m): prefix matching and previous-token scores measured on BOS + 50
random tokens x 2 (16 sequences, seeds 0, 1, 2), then per method and token seed, with k = heads measuring prefix
matching >= 0.4: how many of the top min(5, k) predicted are such heads, the top-k overlap, Spearman over all heads,
how many of those k heads read from a predicted source that measures previous token >= 0.4, and precision@5.
"""

from __future__ import annotations

import argparse

import numpy as np

import circuits
from circuits.analysis.agreement import precision_at_k, spearman, top_heads
from circuits.analysis.attention import attention_scores
from circuits.analysis.induction import predict_induction
from circuits.analysis.methods import METHODS

THRESHOLD = 0.4


def figures(prediction, prefix: np.ndarray, previous: np.ndarray) -> str:
    predicted = prediction.predicted_induction.scores
    k = int((prefix >= THRESHOLD).sum())
    top = top_heads(predicted, k)
    top_five = sum(prefix[head] >= THRESHOLD for head in top[:5])
    overlap = sum(prefix[head] >= THRESHOLD for head in top)
    inducting = list(zip(*np.nonzero(prefix >= THRESHOLD)))
    sources = sum(previous[prediction.source_of(int(layer), int(head))] >= THRESHOLD for layer, head in inducting)
    return (f"top {min(5, k)} all induction {top_five}/{min(5, k)}, top-{k} overlap {overlap}/{k}, Spearman "
            f"{spearman(predicted, prefix):.3f}, sources {sources}/{len(inducting)}, precision@5 {precision_at_k(predicted, prefix, 5):.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="*", default=["smollm2-135m", "gemma-3-270m"])
    parser.add_argument("--methods", nargs="+", choices=METHODS, default=["kcomp-token-zgain", "token-zgain-rms", "prefix-share"])
    parser.add_argument("--token-seeds", nargs="+", type=int, default=[0, 1, 2])
    args = parser.parse_args()
    for name in args.models:
        model = circuits.load(name, show_progress=False)
        measured = attention_scores(model, seeds=(0, 1, 2))
        prefix, previous = measured["prefix_matching"].scores, measured["previous_token"].scores
        print(f"{name}: {int((prefix >= THRESHOLD).sum())} heads measure prefix matching >= {THRESHOLD}", flush=True)
        for method in args.methods:
            for seed in args.token_seeds:
                prediction = predict_induction(model, method=method, token_seed=seed)
                print(f"  {method:18s} token seed {seed}: {figures(prediction, prefix, previous)}", flush=True)
        del model


if __name__ == "__main__":
    main()
