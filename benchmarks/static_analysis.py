"""Weight-only analysis at scale: streaming OV + Q/K/V composition and ``predict_induction`` on the seed papers'
model shapes, each phase against this machine's measured GEMM rate, and the naive way.

    python benchmarks/static_analysis.py [--shapes llama3-8b|internlm2-20b] [--format safetensors|gguf-q4_k]
                                         [--layers N] [--predict-only] [--naive-layers 3] [--scratch DIR] [--cold]

1. Measures this machine's GEMM rate (4096 x 4096 products, float32 and bfloat16 inputs, float32 accumulation).
2. Writes a random checkpoint with the chosen shapes: Llama-3-8B (32 layers, 32 heads, 8 KV heads, d_model 4096,
   MLP 14336, vocab 128256; bf16 safetensors, 16 GB, one shard per layer) or InternLM2-20B (48 layers, 48 heads,
   8 KV heads, d_model 6144, MLP 16384, vocab 92544, InternLM2's fused ``wqkv``; 40 GB); ``--format gguf-q4_k``
   writes the model as one GGUF file of random Q4_K blocks instead (4.5 GB at 8B), dequantised layer by layer.
3. In a fresh process (its peak RSS is the analysis's own; with ``--cold`` after dropping the page cache) times OV copying + all three composition tensors, then
   ``predict_induction``, and prints each phase of the prediction: seconds, GFLOP, GFLOP/s and the fraction of the
   measured float32 GEMM rate.
4. On SmolLM2-135M shapes (``--naive-layers`` layers) times the same scores the naive TransformerLens way
   (every query head expanded, dense M x M matrices, SVD-based Frobenius norms) against ours, as a ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ml_dtypes
import numpy as np
from safetensors.numpy import save_file

from circuits.analysis import phases
from circuits.analysis.composition import composition_tensors
from circuits.analysis.induction import predict_induction
from circuits.analysis.methods import METHODS, PAIR_MODES
from circuits.analysis.ov import ov_copying_scores
from circuits.analysis.standins import DEFAULT_TOKENS
from circuits.convert import open_weights

SHAPES = {
    "llama3-8b": dict(family="llama", layers=32, vocab=128256, d_model=4096, n_heads=32, n_kv=8, head_dim=128, d_mlp=14336),
    "internlm2-20b": dict(family="internlm2", layers=48, vocab=92544, d_model=6144, n_heads=48, n_kv=8, head_dim=128, d_mlp=16384),
}
SMOLLM2_135M = dict(family="llama", layers=30, vocab=49152, d_model=576, n_heads=9, n_kv=3, head_dim=64, d_mlp=1536)
GGUF_NAMES = {"embed": "token_embd.weight", "final_norm": "output_norm.weight", "unembed": "output.weight",
              "attn_norm": "attn_norm.weight", "q": "attn_q.weight", "k": "attn_k.weight", "v": "attn_v.weight",
              "o": "attn_output.weight", "mlp_norm": "ffn_norm.weight", "gate": "ffn_gate.weight", "up": "ffn_up.weight",
              "down": "ffn_down.weight"}
Q4_K_BLOCK = 144  # bytes per 256 values; float16 super-block scales d and dmin at byte offsets 0 and 2


def random_layers(n_layers: int, shapes: dict, seed: int = 0):
    """Yield ({name: float32 array in HF [out, in] layout}) for the embeddings, then per layer (``q`` .. ``down``)."""
    rng = np.random.default_rng(seed)
    v, m, n, k, d, f = (shapes[x] for x in ("vocab", "d_model", "n_heads", "n_kv", "head_dim", "d_mlp"))

    def rand(*shape):
        return 0.02 * rng.standard_normal(shape, dtype=np.float32)

    yield {"embed": rand(v, m), "final_norm": np.ones(m, np.float32), "unembed": rand(v, m)}
    for _ in range(n_layers):
        yield {"attn_norm": 1 + rand(m), "q": rand(n * d, m), "k": rand(k * d, m), "v": rand(k * d, m), "o": rand(m, n * d),
               "mlp_norm": np.ones(m, np.float32), "gate": rand(f, m), "up": rand(f, m), "down": rand(m, f)}


def write_random_checkpoint(directory: Path, n_layers: int, shapes: dict, seed: int = 0) -> None:
    """A random bf16 HF checkpoint, one safetensors shard per layer (never the whole model in memory): Llama's layout,
    or InternLM2's (fused ``wqkv``, its own names) for ``shapes["family"] == "internlm2"``."""
    directory.mkdir(parents=True, exist_ok=True)
    internlm2 = shapes["family"] == "internlm2"
    weight_map = {}

    def write(name: str, tensors: dict) -> None:
        save_file({key: value.astype(ml_dtypes.bfloat16) for key, value in tensors.items()}, str(directory / name))
        weight_map.update(dict.fromkeys(tensors, name))

    layers = random_layers(n_layers, shapes, seed)
    top = next(layers)
    if internlm2:
        write("embed.safetensors", {"model.tok_embeddings.weight": top["embed"], "model.norm.weight": top["final_norm"]})
        write("head.safetensors", {"output.weight": top["unembed"]})
    else:
        write("embed.safetensors", {"model.embed_tokens.weight": top["embed"], "model.norm.weight": top["final_norm"]})
        write("head.safetensors", {"lm_head.weight": top["unembed"]})
    for i, t in enumerate(layers):
        p = f"model.layers.{i}."
        if internlm2:  # random weights: the order of the packed rows does not matter here
            tensors = {p + "attention_norm.weight": t["attn_norm"], p + "attention.wqkv.weight": np.concatenate([t["q"], t["k"], t["v"]]),
                       p + "attention.wo.weight": t["o"], p + "ffn_norm.weight": t["mlp_norm"], p + "feed_forward.w1.weight": t["gate"],
                       p + "feed_forward.w3.weight": t["up"], p + "feed_forward.w2.weight": t["down"]}
        else:
            tensors = {p + "input_layernorm.weight": t["attn_norm"], p + "post_attention_layernorm.weight": t["mlp_norm"],
                       p + "self_attn.q_proj.weight": t["q"], p + "self_attn.k_proj.weight": t["k"], p + "self_attn.v_proj.weight": t["v"],
                       p + "self_attn.o_proj.weight": t["o"], p + "mlp.gate_proj.weight": t["gate"], p + "mlp.up_proj.weight": t["up"],
                       p + "mlp.down_proj.weight": t["down"]}
        write(f"layer-{i:03d}.safetensors", tensors)
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    v, m, n, k, d, f = (shapes[x] for x in ("vocab", "d_model", "n_heads", "n_kv", "head_dim", "d_mlp"))
    config = dict(
        architectures=["InternLM2ForCausalLM" if internlm2 else "LlamaForCausalLM"], vocab_size=v, hidden_size=m,
        intermediate_size=f, num_hidden_layers=n_layers, num_attention_heads=n, num_key_value_heads=k, head_dim=d,
        rope_theta=1000000.0 if internlm2 else 500000.0, max_position_embeddings=8192, tie_word_embeddings=False,
        torch_dtype="bfloat16", rms_norm_eps=1e-5, **({"bias": False} if internlm2 else {}),
    )
    (directory / "config.json").write_text(json.dumps(config))


def write_random_gguf(path: Path, n_layers: int, shapes: dict, seed: int = 0) -> None:
    """A random llama GGUF file with every matrix in Q4_K (random quant bytes, small finite scales) and float32 norms."""
    import gguf

    rng = np.random.default_rng(seed)
    v, m, n, k, d, f = (shapes[x] for x in ("vocab", "d_model", "n_heads", "n_kv", "head_dim", "d_mlp"))
    writer = gguf.GGUFWriter(str(path), "llama")
    for add, value in [(writer.add_block_count, n_layers), (writer.add_context_length, 8192), (writer.add_embedding_length, m),
                       (writer.add_feed_forward_length, f), (writer.add_head_count, n), (writer.add_head_count_kv, k),
                       (writer.add_rope_freq_base, 500000.0), (writer.add_layer_norm_rms_eps, 1e-5),
                       (writer.add_rope_dimension_count, d), (writer.add_vocab_size, v), (writer.add_file_type, 15)]:
        add(value)
    scale = np.frombuffer(np.float16(2e-4).tobytes(), np.uint8)

    def add(name: str, shape: tuple[int, ...]) -> None:
        if len(shape) == 1:
            writer.add_tensor(name, np.ones(shape, np.float32))
            return
        rows, columns = shape
        blocks = rng.integers(0, 256, (rows, columns // 256, Q4_K_BLOCK), dtype=np.uint8)
        blocks[..., 0:2] = scale
        blocks[..., 2:4] = scale
        data = blocks.reshape(rows, -1)
        writer.add_tensor(name, data, raw_shape=data.shape, raw_dtype=gguf.GGMLQuantizationType.Q4_K)

    add(GGUF_NAMES["embed"], (v, m))
    add(GGUF_NAMES["final_norm"], (m,))
    add(GGUF_NAMES["unembed"], (v, m))
    for i in range(n_layers):
        for key, shape in [("attn_norm", (m,)), ("q", (n * d, m)), ("k", (k * d, m)), ("v", (k * d, m)), ("o", (m, n * d)),
                           ("mlp_norm", (m,)), ("gate", (f, m)), ("up", (f, m)), ("down", (m, f))]:
            add(f"blk.{i}.{GGUF_NAMES[key]}", shape)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def peak_rss_gb() -> float:
    """This process's peak resident set (VmHWM) in GB: unlike ``ru_maxrss`` it does not inherit the peak of the
    process that started this one (the checkpoint writer)."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM"))) / 1e6


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


def print_phases(log: phases.PhaseLog, rate: float) -> None:
    """Each phase: seconds, GFLOP, achieved GFLOP/s and its fraction of the float32 GEMM ``rate`` (GFLOP/s)."""
    print(f"  {'phase':44s} {'seconds':>8s} {'calls':>6s} {'GFLOP':>9s} {'GFLOP/s':>8s} {'of GEMM rate':>12s}")
    for name, seconds, flop, calls in log.rows():
        achieved = flop / seconds / 1e9 if seconds > 0 else 0.0
        share = f"{achieved / rate:.2f}" if flop else "-"
        print(f"  {name:44s} {seconds:8.1f} {calls:6d} {flop / 1e9:9.0f} {achieved:8.1f} {share:>12s}")


def analyze(path: str, predict_only: bool, label: str, method: str, n_tokens: int, pairs: str) -> None:
    """Time the weight-only scores and the prediction (``method``, ``n_tokens`` stand-ins, ``pairs``) on the checkpoint at
    ``path`` (this process: its peak RSS)."""
    rates = {dtype: phases.gemm_rate(dtype, size=4096) for dtype in ("float32", "bfloat16")}
    print(f"GEMM rate of this machine: float32 {rates['float32']:.0f} GFLOP/s, bfloat16 inputs {rates['bfloat16']:.0f} GFLOP/s", flush=True)
    if not predict_only:
        seconds = ours(open_weights(path, show_progress=False))
        print(f"{label}: OV + Q/K/V composition {seconds:.1f} s, peak RSS so far {peak_rss_gb():.2f} GB", flush=True)
    start = time.perf_counter()
    with phases.recording() as log:
        predict_induction(open_weights(path, show_progress=False), method=method, n_tokens=n_tokens, pairs=pairs, show_progress=True)
    print(f"{label}: predict_induction ({method}, {n_tokens} stand-ins, pairs {pairs}) {time.perf_counter() - start:.1f} s, "
          f"peak RSS of the analysing process {peak_rss_gb():.2f} GB")
    print_phases(log, rates["float32"])


def drop_page_cache() -> None:
    """Write dirty pages back, then drop the page cache (Linux, root only): the next read comes from disk."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("1\n")
    except OSError as err:
        sys.exit(f"error: --cold could not drop the page cache ({err.strerror}); fix: run as root, or leave --cold out")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shapes", default="llama3-8b", choices=sorted(SHAPES))
    parser.add_argument("--format", default="safetensors", choices=["safetensors", "gguf-q4_k"])
    parser.add_argument("--layers", type=int, default=None, help="layers of the checkpoint (default: the model's own)")
    parser.add_argument("--scratch", default=None, help="where to write checkpoints (default: a temp dir)")
    parser.add_argument("--naive-layers", type=int, default=3, help="0 skips the naive comparison")
    parser.add_argument("--predict-only", action="store_true", help="time only predict_induction on the large shapes")
    parser.add_argument("--method", default=METHODS[0], choices=METHODS, help="the prediction method timed (default: the library's)")
    parser.add_argument("--tokens", type=int, default=DEFAULT_TOKENS, help="token stand-ins of the prediction (default: the library's)")
    parser.add_argument("--pairs", default=PAIR_MODES[0], choices=PAIR_MODES, help="which head pairs get their terms (default: all)")
    parser.add_argument("--cold", action="store_true", help="drop the OS page cache before the analysis (needs root), so that "
                        "the checkpoint is read from disk as on a first run, not from the pages its writing left in memory")
    parser.add_argument("--analyze", default=None, help=argparse.SUPPRESS)  # internal: analyse PATH in this process
    args = parser.parse_args()
    shapes = SHAPES[args.shapes]
    n_layers = args.layers or shapes["layers"]
    label = f"{args.shapes} shapes ({args.format})"
    if args.analyze:
        analyze(args.analyze, args.predict_only, label, args.method, args.tokens, args.pairs)
        return
    if args.format == "gguf-q4_k" and shapes["family"] != "llama":
        parser.error("--format gguf-q4_k writes llama GGUF files; use it with --shapes llama3-8b")
    with tempfile.TemporaryDirectory(dir=args.scratch) as scratch:
        start = time.perf_counter()
        if args.format == "gguf-q4_k":
            big = Path(scratch) / f"{args.shapes}.gguf"
            write_random_gguf(big, n_layers, shapes)
        else:
            big = Path(scratch) / args.shapes
            write_random_checkpoint(big, n_layers, shapes)
        print(f"wrote a {n_layers}-layer {label} checkpoint in {time.perf_counter() - start:.0f} s", flush=True)
        if args.cold:
            drop_page_cache()
        # The analysis runs in a fresh process, so its peak RSS is not the writer's.
        subprocess.run([sys.executable, __file__, "--analyze", str(big), "--shapes", args.shapes, "--format", args.format,
                        "--method", args.method, "--tokens", str(args.tokens), "--pairs", args.pairs] + ["--predict-only"] * args.predict_only, check=True)
        if not args.naive_layers:
            return

        small = Path(scratch) / "smollm2-shapes"
        write_random_checkpoint(small, args.naive_layers, SMOLLM2_135M)
        source = open_weights(small, show_progress=False)
        ours(source)  # compile
        fast, slow = ours(source), naive(source)
        print(f"SmolLM2-135M shapes, {args.naive_layers} layers: ours {fast:.2f} s, naive {slow:.2f} s, "
              f"speed-up {slow / fast:.1f}x")


if __name__ == "__main__":
    main()
