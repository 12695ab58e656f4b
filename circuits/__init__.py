"""Find induction circuits in language-model checkpoints from the weights, then test them with forward passes.

Public API: :func:`load`; sub-packages :mod:`circuits.models`, :mod:`circuits.convert`,
:mod:`circuits.analysis`.
"""

from circuits.loading import load

__version__ = "0.1.0"
__all__ = ["load", "__version__"]
