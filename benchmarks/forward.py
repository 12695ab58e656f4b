"""Tokens/s of the jitted forward vs transformers' PyTorch model on the same weights.

    python benchmarks/forward.py [HF_DIR] [--dtype float32] [--repeats 3]

Without HF_DIR, a random checkpoint with SmolLM2-135M's shapes is written to a temporary
directory first. Prints batch 1 x 512 and 8 x 512 tokens, both libraries, and the ratio.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import jax
import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

import circuits

SMOLLM2_135M_SHAPES = dict(
    vocab_size=49152,
    hidden_size=576,
    intermediate_size=1536,
    num_hidden_layers=30,
    num_attention_heads=9,
    num_key_value_heads=3,
    max_position_embeddings=2048,
    tie_word_embeddings=True,
    rope_theta=100000.0,
)


def best_time(run, repeats: int) -> float:
    run()  # warm-up (and, for JAX, compilation)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", nargs="?", help="HF Llama directory (default: random SmolLM2-135M shapes)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seq", type=int, default=512)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(args.checkpoint) if args.checkpoint else Path(scratch) / "random"
        if not args.checkpoint:
            LlamaForCausalLM(LlamaConfig(**SMOLLM2_135M_SHAPES)).save_pretrained(directory)
        torch_dtype = getattr(torch, args.dtype)
        reference = LlamaForCausalLM.from_pretrained(directory, dtype=torch_dtype).eval()
        model = circuits.load(directory, dtype=args.dtype, show_progress=False)
        vocab = model.config.vocab_size
        print(f"{directory} | {args.dtype} | {jax.devices()[0].platform} | torch threads {torch.get_num_threads()}")
        print(f"{'batch x seq':>12} {'circuits tok/s':>15} {'transformers tok/s':>19} {'ratio':>7}")
        for batch in (1, 8):
            tokens = np.random.default_rng(0).integers(0, vocab, (batch, args.seq)).astype(np.int32)
            torch_tokens = torch.as_tensor(tokens, dtype=torch.long)

            def ours():
                jax.block_until_ready(model(tokens))

            def theirs():
                with torch.inference_mode():
                    reference(torch_tokens, use_cache=False)

            n_tokens = batch * args.seq
            ours_rate = n_tokens / best_time(ours, args.repeats)
            theirs_rate = n_tokens / best_time(theirs, args.repeats)
            print(f"{batch:>5} x {args.seq:<5} {ours_rate:>15.0f} {theirs_rate:>19.0f} {ours_rate / theirs_rate:>6.2f}x")


if __name__ == "__main__":
    main()
