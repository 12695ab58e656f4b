"""Dtype names as numpy dtypes (bfloat16 through ml_dtypes), without importing JAX."""

from __future__ import annotations

import numpy as np

NAMES = ("float32", "bfloat16", "float16")
"""The dtypes a model loads in."""


def resolve_dtype(dtype, default) -> np.dtype:
    """A numpy dtype (the same objects ``jnp.dtype`` returns) from a dtype object, its name (``"bfloat16"``), or
    None (``default``). ml_dtypes, slow to import, is imported only for bfloat16."""
    chosen = default if dtype is None else dtype
    if isinstance(chosen, str) and chosen == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    try:
        return np.dtype(chosen)
    except TypeError as err:
        raise ValueError(f"unknown dtype {dtype!r}; use {', '.join(NAMES)}") from err
