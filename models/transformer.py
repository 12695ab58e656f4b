"""The decoder-only transformer (Llama layout and the block parts of :class:`~circuits.models.config.BlockSpec`)
as a Flax NNX module with layers scanned by ``lax.scan``."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from circuits.models.attention import Attention
from circuits.models.config import ModelConfig
from circuits.models.interventions import Interventions, check_capture, per_layer_fields
from circuits.models.layers import MLP, create_params, einsum, rms_norm
from circuits.models.layout import PARAMS
from circuits.models.rope import layer_rotary_tables

reading_jit = functools.partial(nnx.jit, graph_updates=False)
"""``nnx.jit`` for functions that only read a model: without graph updates the compiled program does not return
the model's state, so no call writes a second copy of the weights back into the model (plain ``nnx.jit`` returns
every parameter and swaps the copies in, doubling the weights' memory for the length of each call)."""


class DecoderBlock(nnx.Module):
    """Pre-norm block: ``x + attn(norm(x))`` then ``x + mlp(norm(x))`` (no MLP when attention-only); with
    ``BlockSpec.post_norms`` each output is RMS-normalised again (``post_attn_norm``, ``post_mlp_norm``) before it
    joins the residual, as in Gemma 3."""

    def __init__(self, config: ModelConfig, *, dtype: jnp.dtype, rngs: nnx.Rngs):
        self.eps = config.rms_norm_eps
        self.block = config.block
        create_params(self, config, "block", dtype=dtype, rngs=rngs)
        self.attn = Attention(config, dtype=dtype, rngs=rngs)
        self.mlp = None if config.attention_only else MLP(config, dtype=dtype, rngs=rngs)

    def _norm(self, name: str, x: jax.Array) -> jax.Array:
        return rms_norm(x, getattr(self, name)[...], self.eps, self.block.norm_offset)

    def __call__(self, x, cos, sin, layer_interventions, knockout_edges, capture, window=None):
        """x [B, T, M] -> (x [B, T, M], ({capture name: this layer's activation}, copy attention f32[B, T, S] or None)).

        The copy attention is the summed pattern of this layer's ideal-copy heads (``Interventions.copy_heads``);
        ``window``: this layer's sliding window int32[] (None: full causal attention).
        """
        captured = {}
        if "resid_pre" in capture:
            captured["resid_pre"] = x
        copies = layer_interventions is not None and layer_interventions.get("copy_heads") is not None
        clamps = layer_interventions is not None and layer_interventions.get("pattern_heads") is not None
        need_pattern = "attn_pattern" in capture or knockout_edges is not None or copies or clamps
        attn_out, pattern, z = self.attn(
            self._norm("attn_norm", x), cos, sin, layer_interventions, knockout_edges, need_pattern, window
        )
        x = x + (self._norm("post_attn_norm", attn_out) if self.block.post_norms else attn_out)
        if "resid_mid" in capture:
            captured["resid_mid"] = x
        if self.mlp is not None:
            mlp_out = self.mlp(self._norm("mlp_norm", x))
            x = x + (self._norm("post_mlp_norm", mlp_out) if self.block.post_norms else mlp_out)
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
    """Llama-style decoder with explicit grouped-query attention and the block parts of ``config.block``.

    Parameters: the canonical layout of :mod:`circuits.models.layout`, per-layer ones stacked on a leading
    [L] axis under ``blocks`` (``blocks.attn.wq``, ``blocks.mlp.w_gate``, ...); ``unembed`` is None when
    tied. :meth:`tensor` reads any of them by its canonical name.

    ``model(tokens)`` runs the jitted forward: int tokens [B, T] -> f32 logits [B, T, V].
    """

    def __init__(self, config: ModelConfig, *, dtype: jnp.dtype = jnp.float32, rngs: nnx.Rngs):
        self.config = config
        self.embed = nnx.Param(nnx.initializers.normal(stddev=0.02)(rngs.params(), (config.vocab_size, config.d_model), dtype))

        @nnx.split_rngs(splits=config.n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make_blocks(rngs: nnx.Rngs) -> DecoderBlock:
            return DecoderBlock(config, dtype=dtype, rngs=rngs)

        self.blocks = make_blocks(rngs)
        self.final_norm = nnx.Param(jnp.full((config.d_model,), 1.0 - config.block.norm_offset, dtype))
        self.unembed = (
            None
            if config.tie_embeddings
            else nnx.Param(nnx.initializers.normal(stddev=0.02)(rngs.params(), (config.d_model, config.vocab_size), dtype))
        )

    @property
    def dtype(self) -> jnp.dtype:
        return self.embed[...].dtype

    @property
    def description(self) -> str:
        return f"in-memory {self.config.architecture} model"

    def __repr__(self) -> str:
        c = self.config
        return (f"Transformer({c.architecture}: {c.n_layers} layers x {c.n_heads} heads ({c.n_kv_heads} KV), d_model {c.d_model}, "
                f"vocabulary {c.vocab_size}, {self.dtype})")

    def tensor(self, name: str, layer: int | None = None) -> jax.Array:
        """Canonical parameter ``name`` (of ``layer`` for per-layer ones), e.g. ``tensor("wq", 3)`` [M, K, G, D].

        With this, a loaded model is itself a tensor source for the weight-only analysis.
        """
        if name == "unembed":
            return self.unembedding()
        module = PARAMS[name].module
        if module == "model":
            return getattr(self, name)[...]
        holder = {"attn": self.blocks.attn, "mlp": self.blocks.mlp, "block": self.blocks}[module]
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
        x = self.embed_tokens(tokens) if embeddings is None else embeddings.astype(self.dtype)
        cos, sin, geometry = _layer_geometry(config, seq_len)
        per_layer, edges = _layer_interventions(interventions)

        @nnx.scan(in_axes=(nnx.Carry, 0, 0, 0), out_axes=(nnx.Carry, 0))
        def run_layers(x, block, layer_interventions, layer):
            return block(x, cos[layer["rope"]], sin[layer["rope"]], layer_interventions, edges, capture, layer.get("window"))

        x, (captured, copy_attention) = run_layers(x, self.blocks, per_layer, geometry)
        logits = self.residual_logits(x)
        if copy_attention is not None:
            logits = logits + _ideal_copy_logits(copy_attention, interventions, config.vocab_size)
        return logits, captured

    def embed_tokens(self, tokens: jax.Array) -> jax.Array:
        """int tokens [B, T] -> the input residual stream [B, T, M] (times sqrt(M), in the model's dtype, with
        ``BlockSpec.embed_scale``)."""
        x = jnp.take(self.embed[...], tokens, axis=0)
        return x * jnp.asarray(self.config.d_model**0.5, x.dtype) if self.config.block.embed_scale else x

    def residual_logits(self, x: jax.Array) -> jax.Array:
        """Final RMSNorm and unembedding: residual stream [..., M] -> f32 logits [..., V]."""
        x = rms_norm(x, self.final_norm[...], self.config.rms_norm_eps, self.config.block.norm_offset)
        return einsum("...m,mv->...v", x, self.unembedding()).astype(jnp.float32)

    def run_layers_from(self, x: jax.Array, first_layer: jax.Array | int, interventions: Interventions | None = None) -> jax.Array:
        """Traceable: the residual stream x [B, T, M] at the input of layer ``first_layer`` -> the residual
        after the last layer, running only layers ``first_layer`` .. L-1 (interventions apply as in
        :meth:`forward`; ideal copies are not supported here).

        ``first_layer`` may be traced: one compiled program serves every start layer (a ``fori_loop``
        over dynamically indexed layer parameters), e.g. for sweeps that reuse a clean prefix. Under
        differentiation each layer is recomputed in the backward pass, which then keeps only each layer's input
        residual: saving the layer's intermediates would also save its indexed parameters, a stacked second copy
        of every block's weights.
        """
        if interventions is not None and interventions.copy_heads is not None:
            raise ValueError("run_layers_from does not support ideal-copy interventions; use forward")
        cos, sin, geometry = _layer_geometry(self.config, x.shape[1])
        per_layer, edges = _layer_interventions(interventions)
        graphdef, state = nnx.split(self.blocks)

        def layer_slice(tree, layer):
            return jax.tree.map(lambda a: jax.lax.dynamic_index_in_dim(a, layer, keepdims=False), tree)

        @functools.partial(jax.checkpoint, prevent_cse=False)  # no effect without differentiation
        def body(layer, x):
            block = nnx.merge(graphdef, layer_slice(state, layer))
            here = layer_slice(geometry, layer)
            x, _ = block(x, cos[here["rope"]], sin[here["rope"]], None if per_layer is None else layer_slice(per_layer, layer),
                         edges, (), here.get("window"))
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
    return {name: getattr(interventions, name) for name in per_layer_fields()}, interventions.knockout_edges


def _layer_geometry(config: ModelConfig, seq_len: int):
    """(cos, sin f32[R, T, D] of the R attention kinds, {"rope": int32[L] row of each layer, "window": int32[L]
    keys each layer's query sees (only when a sliding window is shorter than the sequence)}): the per-layer data
    scanned with the blocks."""
    cos, sin, rows = layer_rotary_tables(config, seq_len)
    geometry = {"rope": jnp.asarray(rows)}
    if config.has_sliding_layers and config.sliding_window < seq_len:
        windows = [config.sliding_window if kind == "sliding_attention" else seq_len for kind in config.layer_kinds]
        geometry["window"] = jnp.asarray(windows, jnp.int32)
    return cos, sin, geometry


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


@functools.partial(reading_jit, static_argnames=("capture",))
def _jitted_forward(model: Transformer, tokens, interventions, capture):
    return model.forward(tokens, interventions, capture)
