"""The clamps ``circuits train`` knows by name and makes by default (light: no JAX)."""

CLAMP_NAMES = ("previous-token", "induction", "copy")
"""Each subcircuit whose attention pattern a run can clamp."""
DEFAULT_CLAMPS = ("none",) + CLAMP_NAMES
"""The runs ``circuits train`` makes by default: unclamped, then each subcircuit clamped."""
