"""Will it fit? Memory estimates checked before loading, so a mode that cannot run fails at once."""

from __future__ import annotations

import os

from circuits.models.config import ModelConfig
from circuits.models.layout import parameter_count


class NotEnoughMemoryError(MemoryError):
    """The chosen mode needs more memory than this machine has available."""


def available_memory_bytes() -> int:
    """MemAvailable from /proc/meminfo (Linux), else physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def validation_memory_bytes(config: ModelConfig, dtype_bytes: int, batch: int, seq_len: int) -> int:
    """Rough peak of a validation run: the loaded model plus captured attention patterns and one chunk of logits."""
    patterns = config.n_layers * batch * config.n_heads * seq_len * seq_len * 4
    logits = 3 * batch * seq_len * config.vocab_size * 4
    return parameter_count(config) * dtype_bytes + patterns + logits


def check_fits(needed: int, mode: str, fix: str) -> None:
    """Raise :class:`NotEnoughMemoryError` naming ``mode`` and ``fix`` when ``needed`` bytes are not available."""
    available = available_memory_bytes()
    if needed > available:
        raise NotEnoughMemoryError(
            f"{mode} needs about {needed / 1e9:.1f} GB of memory but {available / 1e9:.1f} GB is available; fix: {fix}"
        )


def dtype_bytes(dtype) -> int:
    """Bytes per element of a dtype or its name (``"bfloat16"`` included)."""
    import jax.numpy as jnp

    return jnp.dtype(dtype).itemsize
