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
    knockout_heads: bool[L, K, G] or None. ... in the heads marked True.
    """

    head_scale: jax.Array
    head_replacement: jax.Array
    knockout_edges: jax.Array | None = None
    knockout_heads: jax.Array | None = None

    @classmethod
    def none(cls, config: ModelConfig) -> "Interventions":
        """Identity interventions: every head kept, nothing knocked out."""
        shape = (config.n_layers, config.n_kv_heads, config.q_per_kv)
        return cls(
            head_scale=jnp.ones(shape, jnp.float32),
            head_replacement=jnp.zeros(shape + (config.head_dim,), jnp.float32),
        )

    def ablate(self, heads: jax.Array, replacement: jax.Array | None = None) -> "Interventions":
        """Zero-ablate (or, with ``replacement`` f32[L,K,G,D], mean-ablate) heads where ``heads`` bool[L,K,G] is True."""
        scale = jnp.where(heads, 0.0, self.head_scale)
        repl = self.head_replacement if replacement is None else replacement.astype(jnp.float32)
        return dataclasses.replace(self, head_scale=scale, head_replacement=repl)

    def knock_out(self, edges: jax.Array, heads: jax.Array) -> "Interventions":
        """Block attention edges ``edges`` bool[B,T,S] in heads ``heads`` bool[L,K,G]."""
        return dataclasses.replace(self, knockout_edges=edges, knockout_heads=heads)

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
        if problems:
            raise ValueError("bad interventions: " + "; ".join(problems))


def check_capture(capture: tuple[str, ...]) -> tuple[str, ...]:
    """Validate capture names; returns them sorted (a canonical static argument)."""
    unknown = sorted(set(capture) - set(CAPTURE_NAMES))
    if unknown:
        raise ValueError(f"cannot capture {unknown}; known activations: {', '.join(CAPTURE_NAMES)}")
    return tuple(sorted(set(capture)))
