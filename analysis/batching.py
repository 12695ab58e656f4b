"""How much of a batch one forward pass takes: every measurement splits its sequences into equal row chunks so
that what it keeps per pass (captured attention patterns, logits and their gradients) stays under one budget.
Peak memory then no longer grows with the batch, and equal chunks keep one compiled program."""

from __future__ import annotations

PASS_BUDGET_BYTES = 128 * 1024**2
"""The activations one forward pass may hold beyond the model (patterns, logits, their softmax and gradients)."""


def rows_per_pass(n_rows: int, bytes_per_row: int, budget: int | None = None) -> int:
    """The largest divisor of ``n_rows`` whose rows take at most ``budget`` bytes (default
    :data:`PASS_BUDGET_BYTES`; at least 1 row)."""
    fitting = max(1, (PASS_BUDGET_BYTES if budget is None else budget) // max(bytes_per_row, 1))
    return max(d for d in range(1, n_rows + 1) if n_rows % d == 0 and d <= fitting)


def row_chunks(n_rows: int, bytes_per_row: int, budget: int | None = None) -> list[slice]:
    """Equal slices over ``n_rows`` sequences, each within ``budget`` (see :func:`rows_per_pass`)."""
    size = rows_per_pass(n_rows, bytes_per_row, budget)
    return [slice(start, start + size) for start in range(0, n_rows, size)]
