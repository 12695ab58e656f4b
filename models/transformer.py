"""The decoder-only transformer (Llama layout) as a Flax NNX module with layers scanned by ``lax.scan``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from circuits.models.attention import Attention
from circuits.models.config import ModelConfig
from circuits.models.interventions import Interventions, check_capture
from circuits.models.layers import MLP, WEIGHT_INIT, einsum, rms_norm
from circuits.models.layout import ATTENTION_PARAMS, MLP_PARAMS
from circuits.models.rope import rotary_tables


class DecoderBlock(nnx.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))`` (no MLP when attention-only)."""

    def __init__(self, config: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.eps = config.rms_norm_eps
        self.attn_norm = nnx.Param(jnp.ones((config.d_model,), dtype))
        self.attn = Attention(config, dtype=dtype, rngs=rngs)
        if config.attention_only:
            self.mlp_norm = None
            self.mlp = None
        else:
            self.mlp_norm = nnx.Param(jnp.ones((config.d_model,), dtype))
            self.mlp = MLP(config, dtype=dtype, rngs=rngs)

    def __call__(self, x, cos, sin, layer_interventions, knockout_edges, capture):
        """x [B, T, M] -> (x [B, T, M], ({capture name: this layer's activation}, copy attention f32[B, T, S] or None)).

        The copy attention is the summed pattern of this layer's ideal-copy heads (``Interventions.copy_heads``).
        """
        captured = {}
        if "resid_pre" in capture:
            captured["resid_pre"] = x
        copies = layer_interventions is not None and layer_interventions.get("copy_heads") is not None
        clamps = layer_interventions is not None and layer_interventions.get("pattern_heads") is not None
        need_pattern = "attn_pattern" in capture or knockout_edges is not None or copies or clamps
        attn_out, pattern, z = self.attn(
            rms_norm(x, self.attn_norm[...], self.eps), cos, sin, layer_interventions, knockout_edges, need_pattern
        )
        x = x + attn_out
        if "resid_mid" in capture:
            captured["resid_mid"] = x
        if self.mlp is not None:
            x = x + self.mlp(rms_norm(x, self.mlp_norm[...], self.eps))
        if "resid_post" in capture:
            captured["resid_post"] = x
        if "attn_pattern" in capture:
            captured["attn_pattern"] = pattern
        if "z" in capture:
            captured["z"] = z
        copy_attention = None
        if copies:
            copy_attention = einsum("bkgts,kg->bts", pattern, layer_interventions["copy_heads"].astype(pattern.dtype))
        return x, (captured, copy_attention)


class Transformer(nnx.Module):
    """Llama-style decoder with explicit grouped-query attention.

    Parameters: the canonical layout of :mod:`circuits.models.layout`, per-layer ones stacked on a leading
    [L] axis under ``blocks`` (``blocks.attn.wq``, ``blocks.mlp.w_gate``, ...); ``unembed`` is None when
    tied. :meth:`tensor` reads any of them by its canonical name.

    ``model(tokens)`` runs the jitted forward: int tokens [B, T] -> f32 logits [B, T, V].
    """

    def __init__(self, config: ModelConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embed = nnx.Param(WEIGHT_INIT(rngs.params(), (config.vocab_size, config.d_model), dtype))

        @nnx.split_rngs(splits=config.n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(rngs: nnx.Rngs) -> DecoderBlock:
            return DecoderBlock(config, dtype=dtype, rngs=rngs)

        self.blocks = make_blocks(rngs)
        self.final_norm = nnx.Param(jnp.ones((config.d_model,), dtype))
        self.unembed = (
            None
            if config.tie_embeddings
            else nnx.Param(WEIGHT_INIT(rngs.params(), (config.d_model, config.vocab_size), dtype))
        )

    @property
    def dtype(self) -> jnp.dtype:
        return self.embed[...].dtype

    @property
    def description(self) -> str:
        return f"in-memory {self.config.architecture} model"

    def tensor(self, name: str, layer: int | None = None) -> jax.Array:
        """Canonical parameter ``name`` (of ``layer`` for per-layer ones), e.g. ``tensor("wq", 3)`` [M, K, G, D].

        With this, a loaded model is itself a tensor source for the weight-only analysis.
        """
        if name == "unembed":
            return self.unembedding()
        if name in ("embed", "final_norm"):
            return getattr(self, name)[...]
        holder = self.blocks.attn if name in ATTENTION_PARAMS else self.blocks.mlp if name in MLP_PARAMS else self.blocks
        return getattr(holder, name)[...][layer]

    def unembedding(self) -> jax.Array:
        """W_U [M, V] (the embedding's transpose when tied)."""
        return self.embed[...].T if self.unembed is None else self.unembed[...]

    def forward(
        self,
        tokens: jax.Array,
        interventions: Interventions | None = None,
        capture: tuple[str, ...] = (),
        embeddings: jax.Array | None = None,
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Traceable forward (use inside your own jit / vmap / grad).

        tokens int[B, T] -> (logits f32[B, T, V], {name: activation stacked on [L]}).
        ``embeddings`` [B, T, M], when given, is the input residual stream in place of the token
        embeddings (continuous inputs such as exemplar vectors); tokens then only give the shape.
        """
        config = self.config
        seq_len = tokens.shape[1]
        x = jnp.take(self.embed[...], tokens, axis=0) if embeddings is None else embeddings.astype(self.dtype)
        cos, sin = rotary_tables(config, seq_len)
        per_layer, edges = _layer_interventions(interventions)

        @nnx.scan(in_axes=(nnx.Carry, 0, 0), out_axes=(nnx.Carry, 0))
        def run_layers(x, block, layer_interventions):
            return block(x, cos, sin, layer_interventions, edges, capture)

        x, (captured, copy_attention) = run_layers(x, self.blocks, per_layer)
        logits = self.residual_logits(x)
        if copy_attention is not None:
            logits = logits + _ideal_copy_logits(copy_attention, interventions, config.vocab_size)
        return logits, captured

    def residual_logits(self, x: jax.Array) -> jax.Array:
        """Final RMSNorm and unembedding: residual stream [..., M] -> f32 logits [..., V]."""
        x = rms_norm(x, self.final_norm[...], self.config.rms_norm_eps)
        return einsum("...m,mv->...v", x, self.unembedding()).astype(jnp.float32)

    def run_layers_from(self, x: jax.Array, first_layer: jax.Array | int, interventions: Interventions | None = None) -> jax.Array:
        """Traceable: the residual stream x [B, T, M] at the input of layer ``first_layer`` -> the residual
        after the last layer, running only layers ``first_layer`` .. L-1 (interventions apply as in
        :meth:`forward`; ideal copies are not supported here).

        ``first_layer`` may be traced: one compiled program serves every start layer (a ``fori_loop``
        over dynamically indexed layer parameters), e.g. for sweeps that reuse a clean prefix.
        """
        if interventions is not None and interventions.copy_heads is not None:
            raise ValueError("run_layers_from does not support ideal-copy interventions; use forward")
        cos, sin = rotary_tables(self.config, x.shape[1])
        per_layer, edges = _layer_interventions(interventions)
        graphdef, state = nnx.split(self.blocks)

        def layer_slice(tree, layer):
            return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, layer, keepdims=False), tree)

        def body(layer, x):
            block = nnx.merge(graphdef, layer_slice(state, layer))
            x, _ = block(x, cos, sin, None if per_layer is None else layer_slice(per_layer, layer), edges, ())
            return x

        return jax.lax.fori_loop(first_layer, self.config.n_layers, body, x)

    def __call__(self, tokens, interventions: Interventions | None = None) -> jax.Array:
        """Jitted forward: int tokens [B, T] (numpy or jax) -> f32 logits [B, T, V]."""
        logits, _ = self.run_with_capture(tokens, (), interventions)
        return logits

    def run_with_capture(
        self, tokens, capture: tuple[str, ...], interventions: Interventions | None = None
    ) -> tuple[jax.Array, dict[str, jax.Array]]:
        """Jitted forward that also returns the activations named in ``capture`` (see CAPTURE_NAMES)."""
        tokens = _check_tokens(tokens, self.config)
        if interventions is not None:
            interventions.check(self.config)
        return _jitted_forward(self, tokens, interventions, check_capture(tuple(capture)))


def _layer_interventions(interventions: Interventions | None):
    """(per-layer fields {name: [L, ...] array or None}, knockout edges [B, T, S] or None) for the layer loop."""
    if interventions is None:
        return None, None
    names = ("head_scale", "head_replacement", "knockout_heads", "pattern_override", "pattern_heads", "copy_heads")
    return {name: getattr(interventions, name) for name in names}, interventions.knockout_edges


def _ideal_copy_logits(copy_attention: jax.Array, interventions: Interventions, vocab_size: int) -> jax.Array:
    """f32[B, T, V]: copy_gain / n_copy_heads * sum over layers of copy_attention [L, B, T, S] @ one_hot(copy_tokens)."""
    written = jax.nn.one_hot(interventions.copy_tokens, vocab_size, dtype=jnp.float32)  # -1 -> all zeros
    n_heads = jnp.maximum(interventions.copy_heads.sum(), 1).astype(jnp.float32)
    return interventions.copy_gain / n_heads * einsum("lbts,bsv->btv", copy_attention, written)


def _check_tokens(tokens, config: ModelConfig) -> jax.Array:
    if isinstance(tokens, jax.Array):
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise TypeError(f"tokens must be integers, got {tokens.dtype}")
        if tokens.ndim != 2:
            raise ValueError(f"tokens must have shape [batch, seq], got {tuple(tokens.shape)}")
        return tokens
    array = np.asarray(tokens)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"tokens must be integers, got {array.dtype}")
    if array.ndim != 2:
        raise ValueError(f"tokens must have shape [batch, seq], got {array.shape}")
    if array.size and (array.min() < 0 or array.max() >= config.vocab_size):
        raise ValueError(f"token ids must lie in [0, {config.vocab_size}), got [{array.min()}, {array.max()}]")
    return jnp.asarray(array, dtype=jnp.int32)


@functools.partial(nnx.jit, static_argnames=("capture",))
def _jitted_forward(model: Transformer, tokens, interventions, capture):
    return model.forward(tokens, interventions, capture)
