"""Building blocks shared by every decoder layer: parameters from the layout table, RMSNorm and the gated MLP."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from circuits.models.config import ModelConfig
from circuits.models.layout import PARAMS, canonical_shape, module_params

ACTIVATION_FUNCTIONS = {"silu": jax.nn.silu, "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True)}
"""BlockSpec.activation -> function."""


def create_params(module: nnx.Module, config: ModelConfig, where: str, *, dtype: jnp.dtype, rngs: nnx.Rngs) -> None:
    """Give ``module`` every parameter the layout table places in ``where`` for ``config`` (in table order):
    normal(0, 0.02) weights, zero biases, unit norm gains (0 where gains are offsets from 1)."""
    for name in module_params(config, where):
        shape, init = canonical_shape(name, config), PARAMS[name].init
        if init == "normal":
            value = nnx.initializers.normal(stddev=0.02)(rngs.params(), shape, dtype)
        else:
            value = jnp.full(shape, 0.0 if init == "zeros" else 1.0 - config.block.norm_offset, dtype)
        setattr(module, name, nnx.Param(value))


def einsum(spec: str, *operands: jax.Array, **options) -> jax.Array:
    """``jnp.einsum`` whose float32 products are computed in full float32 on every backend.

    XLA's default matmul precision on GPUs is TF32 (10-bit mantissa inputs); with a float32 operand
    this asks for HIGHEST explicitly, so a float32 model means float32 without any global flag.
    bf16 / fp16 products keep the backend default (float32 accumulation on GPU and CPU).
    """
    full = any(jnp.result_type(operand) == jnp.float32 for operand in operands)
    precision = jax.lax.Precision.HIGHEST if full else jax.lax.Precision.DEFAULT
    return jnp.einsum(spec, *operands, precision=precision, **options)


def rms_norm(x: jax.Array, gain: jax.Array, eps: float, offset: float = 0.0) -> jax.Array:
    """RMSNorm over the last axis: ``(offset + gain) * x / rms(x)``, computed in f32 and returned in x.dtype
    (``offset`` 1 for Gemma's stored gains, 0 for Llama's)."""
    xf = x.astype(jnp.float32)
    normed = xf * jax.lax.rsqrt(jnp.mean(xf * xf, axis=-1, keepdims=True) + eps)
    return ((offset + gain.astype(jnp.float32)) * normed).astype(x.dtype)


class MLP(nnx.Module):
    """Gated feed-forward: ``(act(x W_gate) * (x W_up)) W_down``, act from ``BlockSpec.activation`` (SwiGLU or
    GeGLU); w_gate/w_up [M, F], w_down [F, M]."""

    def __init__(self, config: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.activation = config.block.activation
        create_params(self, config, "mlp", dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        """x [B, T, M] -> [B, T, M]."""
        gate = einsum("btm,mf->btf", x, self.w_gate[...])
        up = einsum("btm,mf->btf", x, self.w_up[...])
        return einsum("btf,fm->btm", ACTIVATION_FUNCTIONS[self.activation](gate) * up, self.w_down[...])
