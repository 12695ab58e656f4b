"""GPU benchmark: precision, forward speed against transformers, sweeps and weight-only analysis, side by side.

    python benchmarks/gpu.py [--quick]

Everything is random weights made on the device (no checkpoint, no network); both libraries get the
same weights (copied through DLPack). Rows:
  1. float32 logits against a float32 reference (transformers with TF32 off), Llama-3-8B shapes, 2 layers;
     bf16 logits of both libraries against that reference;
  2. forward tokens/s, Llama-3-8B shapes, 8 layers, bf16, 1 x 2048 and 8 x 2048, with model FLOP utilisation;
  3. forward tokens/s, SmolLM2-135M shapes, float32, 8 x 512;
  4. 270-head ablation sweep (SmolLM2 shapes, 4 x 101 tokens): ``sweep_losses`` vs a loop of forwards;
  5. weight-only ``predict_induction`` on 32-layer Llama-3-8B shapes (bf16, on the device), cold and warm.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx
from forward import best_time
from transformers import LlamaConfig, LlamaForCausalLM

from circuits.analysis.ablation import one_head_each, sweep_losses
from circuits.analysis.induction import predict_induction
from circuits.analysis.losses import masked_mean_loss
from circuits.analysis.repeated_tokens import repeated_random_tokens
from circuits.models import Interventions, ModelConfig, Transformer

LLAMA3_8B = dict(vocab_size=128256, d_model=4096, n_heads=32, n_kv_heads=8, head_dim=128, d_mlp=14336, rope_theta=500000.0)
SMOLLM2 = dict(vocab_size=49152, d_model=576, n_heads=9, n_kv_heads=3, head_dim=64, d_mlp=1536, rope_theta=100000.0)
H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 SXM
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # cpu: only to smoke-test this script on small shapes


def random_model(shapes: dict, n_layers: int, dtype, seed: int = 0, tied: bool = False) -> Transformer:
    """Our model with random weights (std 0.02, norm gains 1 + small noise), made on the device."""
    config = ModelConfig(n_layers=n_layers, max_position_embeddings=8192, tie_embeddings=tied, **shapes)
    model = Transformer(config, dtype=dtype, rngs=nnx.Rngs(seed))
    keys = iter(jax.random.split(jax.random.key(seed + 1), 64))
    for path, variable in nnx.iter_graph(model):
        if isinstance(variable, nnx.Param) and path[-1].endswith("norm"):
            variable[...] = (1.0 + 0.1 * jax.random.normal(next(keys), variable[...].shape)).astype(dtype)
    return model


def as_torch(array: jax.Array) -> torch.Tensor:
    return torch.from_dlpack(jax.block_until_ready(array)).to(DEVICE)


def cast(model: Transformer, dtype) -> Transformer:
    """The same weights in ``dtype`` (rounded once, as transformers' .to(dtype) does)."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(lambda x: x.astype(dtype), state))


def torch_twin(model: Transformer, dtype: torch.dtype) -> LlamaForCausalLM:
    """transformers' Llama with exactly our weights (canonical layout -> HF's nn.Linear layout)."""
    c = model.config
    config = LlamaConfig(
        vocab_size=c.vocab_size, hidden_size=c.d_model, intermediate_size=c.d_mlp, num_hidden_layers=c.n_layers,
        num_attention_heads=c.n_heads, num_key_value_heads=c.n_kv_heads, head_dim=c.head_dim, rope_theta=c.rope_theta,
        max_position_embeddings=c.max_position_embeddings, rms_norm_eps=c.rms_norm_eps, tie_word_embeddings=c.tie_embeddings,
        attn_implementation="sdpa",
    )
    torch.set_default_dtype(dtype)
    with torch.device(DEVICE):
        twin = LlamaForCausalLM(config).eval()
    torch.set_default_dtype(torch.float32)
    m, n, d = c.d_model, c.n_heads, c.head_dim
    with torch.no_grad():
        twin.model.embed_tokens.weight.copy_(as_torch(model.tensor("embed")))
        twin.model.norm.weight.copy_(as_torch(model.tensor("final_norm")))
        if not c.tie_embeddings:
            twin.lm_head.weight.copy_(as_torch(model.tensor("unembed")).T)
        for i, layer in enumerate(twin.model.layers):
            attention, mlp = layer.self_attn, layer.mlp
            attention.q_proj.weight.copy_(as_torch(model.tensor("wq", i)).reshape(m, n * d).T)
            attention.k_proj.weight.copy_(as_torch(model.tensor("wk", i)).reshape(m, -1).T)
            attention.v_proj.weight.copy_(as_torch(model.tensor("wv", i)).reshape(m, -1).T)
            attention.o_proj.weight.copy_(as_torch(model.tensor("wo", i)).reshape(n * d, m).T)
            mlp.gate_proj.weight.copy_(as_torch(model.tensor("w_gate", i)).T)
            mlp.up_proj.weight.copy_(as_torch(model.tensor("w_up", i)).T)
            mlp.down_proj.weight.copy_(as_torch(model.tensor("w_down", i)).T)
            layer.input_layernorm.weight.copy_(as_torch(model.tensor("attn_norm", i)))
            layer.post_attention_layernorm.weight.copy_(as_torch(model.tensor("mlp_norm", i)))
    return twin


def torch_logits(twin, tokens: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return twin(torch.as_tensor(tokens, device=DEVICE), use_cache=False).logits.float().cpu().numpy()


def relative_error(x: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(x - reference).max() / np.abs(reference).max())


def precision_rows() -> None:
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    tokens = np.random.default_rng(0).integers(0, LLAMA3_8B["vocab_size"], (1, 256)).astype(np.int32)
    fp32 = random_model(LLAMA3_8B, 2, jnp.float32)
    reference = torch_logits(torch_twin(fp32, torch.float32), tokens)
    ours_fp32 = np.asarray(fp32(tokens))
    bf16 = cast(fp32, jnp.bfloat16)
    ours_bf16 = np.asarray(bf16(tokens))
    theirs_bf16 = torch_logits(torch_twin(fp32, torch.bfloat16), tokens)
    print(f"fp32 logits vs fp32 reference (8B shapes, 2 layers, 256 tokens): relative max error {relative_error(ours_fp32, reference):.1e}")
    ours_error, theirs_error = relative_error(ours_bf16, reference), relative_error(theirs_bf16, reference)
    print(f"bf16 logits vs fp32 reference: ours {ours_error:.4f}, transformers {theirs_error:.4f} ({ours_error / theirs_error:.2f}x)")
    del fp32, bf16


def flops_per_token(config: ModelConfig, seq: int) -> float:
    """2 x parameters touched per token (projections, MLP, unembedding) + causal attention (QK and AV)."""
    m, n, k, d, f = config.d_model, config.n_heads, config.n_kv_heads, config.head_dim, config.d_mlp
    per_layer = m * (n + 2 * k) * d + n * d * m + 3 * m * f
    return 2 * (config.n_layers * per_layer + m * config.vocab_size) + 2 * config.n_layers * n * d * seq


def forward_rows(shapes: dict, n_layers: int, dtype, torch_dtype, batches: tuple[int, ...], seq: int, label: str) -> None:
    model = random_model(shapes, n_layers, dtype, tied=shapes is SMOLLM2)
    twin = torch_twin(model, torch_dtype)
    for batch in batches:
        tokens = np.random.default_rng(batch).integers(0, shapes["vocab_size"], (batch, seq)).astype(np.int32)
        device_tokens = jnp.asarray(tokens)
        torch_tokens = torch.as_tensor(tokens, device=DEVICE)

        def ours():
            jax.block_until_ready(model(device_tokens))

        def theirs():
            with torch.inference_mode():
                twin(torch_tokens, use_cache=False)
            if DEVICE == "cuda":
                torch.cuda.synchronize()

        n_tokens = batch * seq
        ours_rate, theirs_rate = n_tokens / best_time(ours, 5), n_tokens / best_time(theirs, 5)
        mfu = ours_rate * flops_per_token(model.config, seq) / H100_BF16_PEAK
        print(f"forward {label}, {batch} x {seq}: ours {ours_rate:,.0f} tok/s, transformers {theirs_rate:,.0f} tok/s "
              f"({ours_rate / theirs_rate:.2f}x), ours {100 * mfu:.0f}% of bf16 peak")


def sweep_rows() -> None:
    model = random_model(SMOLLM2, 30, jnp.float32, tied=True)
    data = repeated_random_tokens(model.config, 4, 50)
    tokens, mask = jnp.asarray(data.tokens), jnp.asarray(data.later_repeats)
    sets = one_head_each(model.config)
    swept = best_time(lambda: sweep_losses(model, tokens, mask, ablate=sets, show_progress=False), 1)
    base = Interventions.none(model.config)

    def loop():
        return jax.block_until_ready([masked_mean_loss(model(tokens, base.ablate(s)), tokens, mask) for s in sets])

    looped = best_time(loop, 1)
    print(f"270-head ablation sweep (4 x 101 tokens): sweep_losses {swept:.2f} s, loop of forwards {looped:.2f} s ({looped / swept:.1f}x)")


def analysis_rows(n_layers: int) -> None:
    model = random_model(LLAMA3_8B, n_layers, jnp.bfloat16)
    for run in ("cold", "warm"):
        start = time.perf_counter()
        predict_induction(model)
        print(f"predict_induction, {n_layers}-layer Llama-3-8B shapes (bf16, weights on the device), {run}: {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="8-layer analysis instead of 32")
    args = parser.parse_args()
    print(f"device: {jax.devices()[0].device_kind}; jax {jax.__version__}; torch {torch.__version__}", flush=True)
    precision_rows()
    forward_rows(LLAMA3_8B, 8, jnp.bfloat16, torch.bfloat16, (1, 8), 2048, "Llama-3-8B shapes, 8 layers, bf16")
    forward_rows(SMOLLM2, 30, jnp.float32, torch.float32, (8,), 512, "SmolLM2 shapes, fp32")
    sweep_rows()
    analysis_rows(8 if args.quick else 32)


if __name__ == "__main__":
    main()
