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

import importlib

__version__ = "0.1.0"

_PUBLIC = {
    "load": "circuits.convert.loading",
    "open_weights": "circuits.convert.loading",
    "open_checkpoint": "circuits.convert.checkpoint",
    "provenance": "circuits.convert.loading",
    "load_tokenizer": "circuits.convert.tokenizer",
}
_PUBLIC.update({
    "CheckpointError": "circuits.convert.errors",
    "TokenizerError": "circuits.convert.tokenizer",
    "ModelDownloadError": "circuits.convert.named_models",
    "ConfigError": "circuits.models.config",
    "MeshError": "circuits.models.sharding",
    "NotEnoughMemoryError": "circuits.world_errors",
    "WriteError": "circuits.world_errors",
    "OutputError": "circuits.utils",
    "DistributedError": "circuits.distributed",
})
"""The error types, so research code can catch them: ``except circuits.CheckpointError``."""
_SUBPACKAGES = {"models", "convert", "analysis", "report", "icl", "formation", "distributed"}

__all__ = sorted(_PUBLIC) + ["report", "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    if name in _SUBPACKAGES:
        return importlib.import_module(f"circuits.{name}")
    raise AttributeError(f"module 'circuits' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC) | _SUBPACKAGES)
