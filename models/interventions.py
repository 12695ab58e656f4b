"""Interventions as data: a pytree handed to the jitted forward, never a hook.

Changing the values (which heads, which edges) reuses the compiled program;
``jax.vmap`` over a stacked ``Interventions`` runs a sweep as one program, and
``jax.grad`` flows into ``head_scale``.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from circuits.models.config import ModelConfig

CAPTURE_NAMES = ("attn_pattern", "z", "resid_pre", "resid_mid", "resid_post")
"""Activations :meth:`Transformer.run_with_capture` can return, each stacked on a leading [L] axis:
``attn_pattern`` f32[L,B,K,G,T,S], ``z`` (per-head attention output before W_O) [L,B,T,K,G,D],
``resid_pre`` / ``resid_mid`` / ``resid_post`` [L,B,T,M] (before attention, after attention, after MLP)."""

PER_LAYER = {"per_layer": True}
"""Field metadata of the :class:`Interventions` fields with a leading [L] axis: the layer loop hands each layer
its slice of exactly these (declared once, here, so a new per-layer field cannot be silently ignored)."""

def batch_axis(axis: int, **metadata) -> dict:
    """Field metadata of the :class:`Interventions` fields that hold one entry per sequence, on ``axis``: a row
    chunk of the batch takes its slice of exactly these (:meth:`Interventions.rows`)."""
    return {**metadata, "batch_axis": axis}


KNOCKOUT_LOGIT = -1e9
"""Added to the attention logit of a knocked-out edge: large and finite, so a fully masked row stays finite."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Interventions:
    """What to change in a forward pass.

    head_scale: f32[L, K, G]. Multiplies each head's output z; 1 keeps, 0 zero-ablates.
    head_replacement: f32[L, K, G, D]. Added as ``(1 - head_scale) * replacement``, so a
        head with scale 0 outputs the replacement (mean ablation) instead of zeros.
    knockout_edges: bool[B, T, S] or None. Query t may not attend key s where True ...
    knockout_heads: bool[L, K, G] or None. ... in the heads marked True. A float gate in [0, 1] instead
        mixes each head's pattern towards its knocked-out pattern (1 = knocked out; its gradient at 0 is
        the first-order knockout effect).
    pattern_override: f32[L, B, T, S] or None. Attention pattern (rows sum to 1) that replaces ...
    pattern_heads: bool[L, K, G] or None. ... the computed pattern of the heads marked True (a clamp:
        no gradient reaches their queries and keys).
    copy_tokens: int[B, S] or None. The token an ideal copy of key s writes (-1: nothing) ...
    copy_heads: bool[L, K, G] or None. ... for the heads marked True, whose own output is removed: each adds
        ``copy_gain / n_marked_heads`` times its attention-weighted one-hot of ``copy_tokens`` to the logits.
    copy_gain: f32[] logit added when every marked head attends to one key.
    """

    head_scale: jax.Array = dataclasses.field(metadata=PER_LAYER)
    head_replacement: jax.Array = dataclasses.field(metadata=PER_LAYER)
    knockout_edges: jax.Array | None = dataclasses.field(default=None, metadata=batch_axis(0))
    knockout_heads: jax.Array | None = dataclasses.field(default=None, metadata=PER_LAYER)
    pattern_override: jax.Array | None = dataclasses.field(default=None, metadata=batch_axis(1, **PER_LAYER))
    pattern_heads: jax.Array | None = dataclasses.field(default=None, metadata=PER_LAYER)
    copy_tokens: jax.Array | None = dataclasses.field(default=None, metadata=batch_axis(0))
    copy_heads: jax.Array | None = dataclasses.field(default=None, metadata=PER_LAYER)
    copy_gain: jax.Array | float = 1.0

    @classmethod
    def none(cls, config: ModelConfig) -> "Interventions":
        """Identity interventions: every head kept, nothing knocked out."""
        shape = (config.n_layers, config.n_kv_heads, config.q_per_kv)
        return cls(
            head_scale=jnp.ones(shape, jnp.float32),
            head_replacement=jnp.zeros(shape + (config.head_dim,), jnp.float32),
        )

    def rows(self, start, size: int) -> "Interventions":
        """The same interventions for sequences ``start`` .. ``start + size`` of the batch (every per-sequence field
        sliced; ``start`` may be traced)."""
        sliced = {}
        for field in dataclasses.fields(self):
            value, axis = getattr(self, field.name), field.metadata.get("batch_axis")
            if axis is not None and value is not None:
                sliced[field.name] = jax.lax.dynamic_slice_in_dim(value, start, size, axis=axis)
        return dataclasses.replace(self, **sliced)

    def ablate(self, heads: jax.Array, replacement: jax.Array | None = None) -> "Interventions":
        """Zero-ablate (or, with ``replacement`` f32[L,K,G,D], mean-ablate) heads where ``heads`` bool[L,K,G] is True."""
        scale = jnp.where(heads, 0.0, self.head_scale)
        repl = self.head_replacement if replacement is None else replacement.astype(jnp.float32)
        return dataclasses.replace(self, head_scale=scale, head_replacement=repl)

    def knock_out(self, edges: jax.Array, heads: jax.Array) -> "Interventions":
        """Block attention edges ``edges`` bool[B,T,S] in heads ``heads`` bool[L,K,G]."""
        return dataclasses.replace(self, knockout_edges=edges, knockout_heads=heads)

    def clamp_pattern(self, pattern: jax.Array, heads: jax.Array) -> "Interventions":
        """Fix the attention pattern of heads ``heads`` bool[L,K,G] to ``pattern`` f32[L,B,T,S]."""
        return dataclasses.replace(self, pattern_override=pattern.astype(jnp.float32), pattern_heads=heads)

    def ideal_copy(self, tokens: jax.Array, heads: jax.Array, gain: float) -> "Interventions":
        """Replace the output of heads ``heads`` bool[L,K,G] by an ideal copy of the tokens they attend to.

        ``tokens`` int[B, S]: what each key position writes (-1 for nothing). Their own output is
        zero-ablated; instead the logits get ``gain / n_heads * sum over heads of pattern @ one_hot(tokens)``.
        """
        ablated = self.ablate(heads, jnp.where(heads[..., None], 0.0, self.head_replacement))
        return dataclasses.replace(ablated, copy_tokens=tokens, copy_heads=heads, copy_gain=gain)

    def check(self, config: ModelConfig) -> None:
        """Raise ``ValueError`` naming the field whose shape does not fit ``config``."""
        expected = (config.n_layers, config.n_kv_heads, config.q_per_kv)
        problems = []
        if tuple(self.head_scale.shape) != expected:
            problems.append(f"head_scale has shape {tuple(self.head_scale.shape)}, expected [L,K,G] = {expected}")
        if tuple(self.head_replacement.shape) != expected + (config.head_dim,):
            problems.append(
                f"head_replacement has shape {tuple(self.head_replacement.shape)}, "
                f"expected [L,K,G,D] = {expected + (config.head_dim,)}"
            )
        if (self.knockout_edges is None) != (self.knockout_heads is None):
            problems.append("knockout_edges and knockout_heads must be given together (use .knock_out)")
        if self.knockout_heads is not None and tuple(self.knockout_heads.shape) != expected:
            problems.append(f"knockout_heads has shape {tuple(self.knockout_heads.shape)}, expected {expected}")
        for pair in (("pattern_override", "pattern_heads"), ("copy_tokens", "copy_heads")):
            given = [getattr(self, name) is not None for name in pair]
            if given[0] != given[1]:
                problems.append(f"{pair[0]} and {pair[1]} must be given together")
            if given[1] and tuple(getattr(self, pair[1]).shape) != expected:
                problems.append(f"{pair[1]} has shape {tuple(getattr(self, pair[1]).shape)}, expected {expected}")
        if self.pattern_override is not None and (
            self.pattern_override.ndim != 4 or self.pattern_override.shape[0] != config.n_layers
        ):
            problems.append(f"pattern_override has shape {tuple(self.pattern_override.shape)}, expected [L,B,T,S] with L = {config.n_layers}")
        if problems:
            raise ValueError("bad interventions: " + "; ".join(problems))


def per_layer_fields() -> tuple[str, ...]:
    """Names of the :class:`Interventions` fields that the layer loop slices per layer (leading [L] axis)."""
    return tuple(field.name for field in dataclasses.fields(Interventions) if field.metadata.get("per_layer"))


def check_capture(capture: tuple[str, ...]) -> tuple[str, ...]:
    """Validate capture names; returns them sorted (a canonical static argument)."""
    unknown = sorted(set(capture) - set(CAPTURE_NAMES))
    if unknown:
        raise ValueError(f"cannot capture {unknown}; known activations: {', '.join(CAPTURE_NAMES)}")
    return tuple(sorted(set(capture)))
