"""Weight-only analysis at scale: streaming OV + Q/K/V composition on Llama-3-8B shapes, and the naive way.

    python benchmarks/static_analysis.py [--layers 32] [--scratch DIR] [--naive-layers 4]

1. Writes a random bf16 checkpoint with Llama-3-8B shapes (32 layers, 32 heads, 8 KV heads,
   d_model 4096, MLP 14336, vocab 128256; about 16 GB for 32 layers), one shard per layer.
2. Times OV copying scores + all three composition tensors streamed from it, then the weight-only
   induction prediction (``predict_induction``: RoPE-averaged K-composition and token-level terms on
   1024 MLP stand-ins, OV copying as a diagnostic); prints wall times and peak RSS.
3. On a smaller model (SmolLM2-135M shapes, ``--naive-layers`` layers) times the same scores
   written the naive TransformerLens way (every query head expanded, dense M x M OV/QK
   matrices, SVD-based Frobenius norms) against ours, as a ratio.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from circuits.analysis.composition import composition_tensors
from circuits.analysis.induction import predict_induction
from circuits.analysis.ov import ov_copying_scores
from circuits.convert import HFCheckpoint

LLAMA3_8B = dict(vocab=128256, d_model=4096, n_heads=32, n_kv=8, head_dim=128, d_mlp=14336)
SMOLLM2_135M = dict(vocab=49152, d_model=576, n_heads=9, n_kv=3, head_dim=64, d_mlp=1536)


def write_random_checkpoint(directory: Path, n_layers: int, shapes: dict, seed: int = 0) -> None:
    """A random bf16 Llama checkpoint, one safetensors shard per layer (never the whole model in memory)."""
    rng = np.random.default_rng(seed)
    v, m, n, k, d, f = (shapes[x] for x in ("vocab", "d_model", "n_heads", "n_kv", "head_dim", "d_mlp"))
    directory.mkdir(parents=True, exist_ok=True)

    def rand(*shape):
        return (0.02 * rng.standard_normal(shape, dtype=np.float32)).astype(ml_dtypes.bfloat16)

    weight_map = {}

    def write(name: str, tensors: dict) -> None:
        save_file(tensors, str(directory / name))
        weight_map.update(dict.fromkeys(tensors, name))

    write("embed.safetensors", {"model.embed_tokens.weight": rand(v, m), "model.norm.weight": np.ones(m, ml_dtypes.bfloat16)})
    write("head.safetensors", {"lm_head.weight": rand(v, m)})
    for i in range(n_layers):
        p = f"model.layers.{i}."
        write(
            f"layer-{i:03d}.safetensors",
            {
                p + "input_layernorm.weight": (1 + rand(m)).astype(ml_dtypes.bfloat16),
                p + "post_attention_layernorm.weight": np.ones(m, ml_dtypes.bfloat16),
                p + "self_attn.q_proj.weight": rand(n * d, m),
                p + "self_attn.k_proj.weight": rand(k * d, m),
                p + "self_attn.v_proj.weight": rand(k * d, m),
                p + "self_attn.o_proj.weight": rand(m, n * d),
                p + "mlp.gate_proj.weight": rand(f, m),
                p + "mlp.up_proj.weight": rand(f, m),
                p + "mlp.down_proj.weight": rand(m, f),
            },
        )
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    config = dict(
        architectures=["LlamaForCausalLM"], vocab_size=v, hidden_size=m, intermediate_size=f, num_hidden_layers=n_layers,
        num_attention_heads=n, num_key_value_heads=k, head_dim=d, rope_theta=500000.0, max_position_embeddings=8192,
        tie_word_embeddings=False, torch_dtype="bfloat16",
    )
    (directory / "config.json").write_text(json.dumps(config))


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def ours(source) -> float:
    start = time.perf_counter()
    ov_copying_scores(source, show_progress=True)
    composition_tensors(source, show_progress=True)
    return time.perf_counter() - start


def naive(source) -> float:
    """TransformerLens-style: expanded heads, dense M x M matrices, SVD-based Frobenius norms (no baseline)."""
    start = time.perf_counter()
    c = source.config
    f32 = lambda name, layer=None: np.asarray(source.tensor(name, layer), np.float32)  # noqa: E731
    embed, unembed = f32("embed"), f32("unembed") * f32("final_norm")[:, None]
    ov, qk = [], []
    for layer in range(c.n_layers):
        gain = f32("attn_norm", layer)
        wq = (f32("wq", layer) * gain[:, None, None, None]).reshape(c.d_model, c.n_heads, c.head_dim)
        wk = np.repeat(f32("wk", layer) * gain[:, None, None], c.q_per_kv, axis=1)
        wv = np.repeat(f32("wv", layer) * gain[:, None, None], c.q_per_kv, axis=1)
        wo = f32("wo", layer).reshape(c.n_heads, c.head_dim, c.d_model)
        ov.append([wv[:, h] @ wo[h] for h in range(c.n_heads)])
        qk.append([wq[:, h] @ wk[:, h].T for h in range(c.n_heads)])
        for h in range(c.n_heads):  # OV circuit eigenvalues through the M x M matrix W_V W_O W_U W_E
            np.linalg.eigvals(ov[-1][h] @ (unembed @ embed))
    norm = lambda x: np.sqrt((np.linalg.svd(x, compute_uv=False) ** 2).sum())  # noqa: E731
    for l1 in range(c.n_layers):
        for l2 in range(l1 + 1, c.n_layers):
            for j in range(c.n_heads):
                for i in range(c.n_heads):
                    for b in (qk[l2][i], qk[l2][i].T, ov[l2][i]):
                        norm(ov[l1][j] @ b) / (norm(ov[l1][j]) * norm(b))
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--layers", type=int, default=32, help="layers of the 8B-shaped checkpoint")
    parser.add_argument("--scratch", default=None, help="where to write checkpoints (default: a temp dir)")
    parser.add_argument("--naive-layers", type=int, default=3, help="0 skips the naive comparison")
    parser.add_argument("--predict-only", action="store_true", help="time only predict_induction on the 8B shapes")
    parser.add_argument("--analyze", default=None, help=argparse.SUPPRESS)  # internal: analyse DIR in this process
    args = parser.parse_args()
    if args.analyze:
        if not args.predict_only:
            seconds = ours(HFCheckpoint(args.analyze))
            print(f"8B shapes: OV + Q/K/V composition {seconds:.1f} s, peak RSS so far {peak_rss_gb():.2f} GB", flush=True)
        start = time.perf_counter()
        predict_induction(HFCheckpoint(args.analyze), show_progress=True)
        print(f"8B shapes: predict_induction {time.perf_counter() - start:.1f} s, "
              f"peak RSS of the analysing process {peak_rss_gb():.2f} GB")
        return
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        big = Path(scratch) / "llama3-8b-shapes"
        start = time.perf_counter()
        write_random_checkpoint(big, args.layers, LLAMA3_8B)
        print(f"wrote {args.layers}-layer Llama-3-8B-shaped bf16 checkpoint in {time.perf_counter() - start:.0f} s")
        # The analysis runs in a fresh process, so its peak RSS is not the writer's.
        subprocess.run([sys.executable, __file__, "--analyze", str(big)] + ["--predict-only"] * args.predict_only, check=True)
        if not args.naive_layers:
            return

        small = Path(scratch) / "smollm2-shapes"
        write_random_checkpoint(small, args.naive_layers, SMOLLM2_135M)
        source = HFCheckpoint(small)
        ours(source)  # compile
        fast, slow = ours(source), naive(source)
        print(f"SmolLM2-135M shapes, {args.naive_layers} layers: ours {fast:.2f} s, naive {slow:.2f} s, "
              f"speed-up {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
