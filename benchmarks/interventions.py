"""Cost of interventions-as-data, and of a one-program ablation sweep vs forwards one by one.

    python benchmarks/interventions.py [MODEL] [--batch 4] [--length 50] [--heads 0]

MODEL defaults to the real smollm2-135m (float32). Prints:
  * a plain jitted forward vs the same forward with interventions (a zero-ablated head and a
    knocked-out set of induction edges), both on BOS + length random tokens x 2;
  * a sweep ablating every head in turn (``--heads`` limits it to the first n heads; 0 = all), side by
    side: ``sweep_losses`` (clean prefix reused, each set run from its first touched layer), the
    earlier one-program sweep (every set a full forward, ``lax.map`` over the sets), and a Python loop
    of jitted forwards; all after warm-up, and checked equal;
  * the gradient estimate of every head's ablation (``estimate_sweep_losses``: one forward and one
    backward) with its time and its agreement with the exact sweep (Spearman, top-9 overlap).
"""

from __future__ import annotations

import argparse
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from scipy import stats

import circuits
from circuits.analysis.ablation import estimate_sweep_losses, one_head_each, sweep_losses
from circuits.analysis.losses import masked_mean_loss
from circuits.analysis.repeated_tokens import repeated_random_tokens
from circuits.analysis.targets import induction_targets
from circuits.models import Interventions


@functools.partial(jax.jit, static_argnames=("graphdef", "chunk"))
def full_forward_sweep(graphdef, state, tokens, loss_mask, ablate, chunk):
    """The earlier one-program sweep: every head set is a full forward from the embeddings."""
    base = Interventions.none(graphdef_config(graphdef, state))

    def one(ablate_i):
        model = nnx.merge(graphdef, jax.tree.map(lambda x: x, state))
        logits, _ = model.forward(tokens, base.ablate(ablate_i))
        return masked_mean_loss(logits, tokens, loss_mask)

    return jax.lax.map(one, ablate, batch_size=chunk)


def graphdef_config(graphdef, state):
    return nnx.merge(graphdef, state).config


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
    n = len(sets)
    start = time.perf_counter()  # compilation included: it is about 1 s
    exact = sweep_losses(model, tokens, mask, ablate=sets, show_progress=False)
    swept = time.perf_counter() - start
    print(f"ablation sweep over {n} heads, sweep_losses (prefix reuse):  {swept:7.2f} s", flush=True)
    graphdef, state = nnx.split(model)
    chunk = max(1, min(len(sets), 2 * 1024**3 // (3 * tokens.size * config.vocab_size * 4)))
    start = time.perf_counter()  # compilation included, as for the others
    earlier_losses = jax.block_until_ready(full_forward_sweep(graphdef, state, tokens, mask, jnp.asarray(sets), chunk))
    earlier = time.perf_counter() - start
    print(f"ablation sweep over {n} heads, earlier one-program sweep:    {earlier:7.2f} s  ({earlier / swept:.2f}x slower)", flush=True)
    base = Interventions.none(config)

    def one_by_one():
        return [masked_mean_loss(model(tokens, base.ablate(s)), tokens, mask) for s in sets]

    start = time.perf_counter()
    looped_losses = jax.block_until_ready(one_by_one())
    looped = time.perf_counter() - start
    print(f"ablation sweep over {n} heads, loop of jitted forwards:      {looped:7.2f} s  ({looped / swept:.2f}x slower)", flush=True)
    np.testing.assert_allclose(exact, np.asarray(looped_losses), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(exact, np.asarray(earlier_losses), rtol=1e-5, atol=1e-5)

    estimated = estimate_sweep_losses(model, tokens, mask, ablate=sets)
    estimate_time = best_time(lambda: estimate_sweep_losses(model, tokens, mask, ablate=sets), repeats=2)
    top = lambda x: set(np.argsort(-x)[:9])  # noqa: E731
    print(f"gradient estimate of all {n} ablations: {estimate_time:.2f} s = {estimate_time / plain:.1f} forwards; "
          f"Spearman with the exact sweep {stats.spearmanr(estimated, exact).statistic:.3f}, "
          f"top-9 overlap {len(top(estimated) & top(exact))}/9")


if __name__ == "__main__":
    main()
