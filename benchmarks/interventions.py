"""Cost of interventions-as-data, and of a one-program ablation sweep vs forwards one by one.

    python benchmarks/interventions.py [MODEL] [--batch 4] [--length 50] [--heads 0]

MODEL defaults to the real smollm2-135m (float32). Prints:
  * a plain jitted forward vs the same forward with interventions (a zero-ablated head and a
    knocked-out set of induction edges), both on BOS + length random tokens x 2;
  * a sweep ablating every head in turn (``--heads`` limits it to the first n heads; 0 = all) as
    ONE program (``circuits.analysis.ablation.sweep_losses``) vs a Python loop of jitted forwards
    that each compute the same loss, after warm-up.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import circuits
from circuits.analysis.ablation import one_head_each, sweep_losses
from circuits.analysis.losses import masked_mean_loss
from circuits.analysis.repeated_tokens import repeated_random_tokens
from circuits.analysis.targets import induction_targets
from circuits.models import Interventions


def best_time(run, repeats: int = 3) -> float:
    jax.block_until_ready(run())  # warm-up and compilation
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", nargs="?", default="smollm2-135m")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--length", type=int, default=50)
    parser.add_argument("--heads", type=int, default=0, help="sweep only the first n heads (0 = all)")
    args = parser.parse_args()

    model = circuits.load(args.model, dtype="float32")
    config = model.config
    data = repeated_random_tokens(config, args.batch, args.length)
    tokens = jnp.asarray(data.tokens)
    sets = one_head_each(config)
    if args.heads:
        sets = sets[: args.heads]
    interventions = Interventions.none(config).ablate(sets[0]).knock_out(induction_targets(tokens), sets[-1])

    plain = best_time(lambda: model(tokens))
    with_interventions = best_time(lambda: model(tokens, interventions))
    print(f"device: {jax.devices()[0].device_kind}; model {args.model}; tokens {tokens.shape[0]} x {tokens.shape[1]}")
    print(f"forward, plain:              {plain * 1e3:8.1f} ms")
    print(f"forward, with interventions: {with_interventions * 1e3:8.1f} ms  ({with_interventions / plain:.2f}x)")

    mask = jnp.asarray(data.later_repeats)
    swept = best_time(lambda: sweep_losses(model, tokens, mask, ablate=sets), repeats=1)
    base = Interventions.none(config)

    def one_by_one():
        return [masked_mean_loss(model(tokens, base.ablate(s)), tokens, mask) for s in sets]

    looped = best_time(one_by_one, repeats=1)
    print(f"ablation sweep over {len(sets)} heads, one program: {swept:7.2f} s")
    print(f"ablation sweep over {len(sets)} heads, loop of forwards: {looped:7.2f} s  (sweep is {looped / swept:.2f}x faster)")
    np.testing.assert_allclose(sweep_losses(model, tokens, mask, ablate=sets), np.asarray(one_by_one()), rtol=1e-4)


if __name__ == "__main__":
    main()
