"""Find induction circuits in language-model checkpoints from the weights, then test them with forward passes.

Public API: :func:`load` (a model), :func:`open_weights` (a streamed tensor source for
weight-only analysis), :func:`load_tokenizer`; sub-packages :mod:`circuits.models`,
:mod:`circuits.convert`, :mod:`circuits.analysis`.
"""

from circuits.loading import load, open_weights
from circuits.tokenizer import load_tokenizer

__version__ = "0.1.0"
__all__ = ["load", "load_tokenizer", "open_weights", "__version__"]
