"""Find induction circuits in language-model checkpoints from the weights, then test them with forward passes.

The public face, imported lazily so that ``import circuits.models`` stays light:

- :func:`load` (a model), :func:`open_weights` (a streamed tensor source for weight-only
  analysis), :func:`load_tokenizer`, :func:`provenance`, and :func:`open_checkpoint` (a path resolved once
  into a handle that does all four) (from :mod:`circuits.convert`);
- the error types (:class:`CheckpointError`, :class:`TokenizerError`, :class:`ModelDownloadError`,
  :class:`ConfigError`, :class:`MeshError`, :class:`NotEnoughMemoryError`, :class:`WriteError`, :class:`OutputError`, :class:`DistributedError`);
- :func:`report` (the weight-only prediction validated by forward passes, :mod:`circuits.report`);
- sub-packages :mod:`circuits.models`, :mod:`circuits.convert`, :mod:`circuits.analysis`,
  and one per experiment: :mod:`circuits.report`, :mod:`circuits.icl`, :mod:`circuits.formation`;
- :mod:`circuits.distributed` (join a multi-process run before touching JAX's devices: ``initialize``,
  ``is_writer``) and :mod:`circuits.launch` (try one on one machine: ``python -m circuits.launch``).
"""

from __future__ import annotations

from circuits.lazy import lazy_face

__version__ = "0.1.0"

_PUBLIC = {
    "load": "convert.loading",
    "open_weights": "convert.loading",
    "open_checkpoint": "convert.checkpoint",
    "provenance": "convert.loading",
    "load_tokenizer": "convert.tokenizer",
}
_PUBLIC.update({
    "CheckpointError": "convert.errors",
    "TokenizerError": "convert.tokenizer",
    "ModelDownloadError": "convert.named_models",
    "ConfigError": "models.config",
    "MeshError": "models.sharding",
    "NotEnoughMemoryError": "world_errors",
    "WriteError": "world_errors",
    "OutputError": "utils",
    "DistributedError": "distributed",
})
"""The error types, so research code can catch them: ``except circuits.CheckpointError``."""
_SUBPACKAGES = frozenset({"models", "convert", "analysis", "report", "icl", "formation", "distributed"})

__all__ = sorted(_PUBLIC) + ["report", "__version__"]


__getattr__, __dir__ = lazy_face(__name__, _PUBLIC, _SUBPACKAGES)
