"""Will it fit? Memory estimates checked before loading, so a mode that cannot run fails at once."""

from __future__ import annotations

from circuits.models.config import ModelConfig
from circuits.models.layout import parameter_count


def validation_memory_bytes(config: ModelConfig, dtype_bytes: int, batch: int, seq_len: int) -> int:
    """Rough peak of a validation run: the loaded model plus captured attention patterns and one chunk of logits."""
    patterns = config.n_layers * batch * config.n_heads * seq_len * seq_len * 4
    logits = 3 * batch * seq_len * config.vocab_size * 4
    return parameter_count(config) * dtype_bytes + patterns + logits


def dtype_bytes(dtype) -> int:
    """Bytes per element of a dtype or its name (``"bfloat16"`` included)."""
    import jax.numpy as jnp

    return jnp.dtype(dtype).itemsize
