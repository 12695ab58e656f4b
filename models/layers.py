"""Building blocks shared by every decoder layer: RMSNorm and the SwiGLU MLP."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from circuits.models.config import ModelConfig

WEIGHT_INIT = nnx.initializers.normal(stddev=0.02)


def einsum(spec: str, *operands: jax.Array, **options) -> jax.Array:
    """``jnp.einsum`` whose float32 products are computed in full float32 on every backend.

    XLA's default matmul precision on GPUs is TF32 (10-bit mantissa inputs); with a float32 operand
    this asks for HIGHEST explicitly, so a float32 model means float32 without any global flag.
    bf16 / fp16 products keep the backend default (float32 accumulation on GPU and CPU).
    """
    full = any(jnp.result_type(operand) == jnp.float32 for operand in operands)
    precision = jax.lax.Precision.HIGHEST if full else jax.lax.Precision.DEFAULT
    return jnp.einsum(spec, *operands, precision=precision, **options)


def rms_norm(x: jax.Array, scale: jax.Array, eps: float) -> jax.Array:
    """RMSNorm over the last axis, statistics in f32, as HF's LlamaRMSNorm: scale * (x / rms(x))."""
    xf = x.astype(jnp.float32)
    normed = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return scale * normed.astype(x.dtype)


class MLP(nnx.Module):
    """SwiGLU feed-forward: ``(silu(x W_gate) * (x W_up)) W_down``; w_gate/w_up [M, F], w_down [F, M]."""

    def __init__(self, config: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        m, f = config.d_model, config.d_mlp
        self.w_gate = nnx.Param(WEIGHT_INIT(rngs.params(), (m, f), dtype))
        self.w_up = nnx.Param(WEIGHT_INIT(rngs.params(), (m, f), dtype))
        self.w_down = nnx.Param(WEIGHT_INIT(rngs.params(), (f, m), dtype))

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, T, M] -> [B, T, M]."""
        gate = einsum("btm,mf->btf", x, self.w_gate[...])
        up = einsum("btm,mf->btf", x, self.w_up[...])
        return einsum("btf,fm->btm", jax.nn.silu(gate) * up, self.w_down[...])
