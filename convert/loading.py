"""The ``circuits.load`` / ``open_weights`` / ``provenance`` faces over a resolved :class:`Checkpoint`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from circuits.convert.checkpoint import Checkpoint, open_checkpoint
from circuits.models.layout import TensorSource

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from circuits.models.transformer import Transformer


def load(path: str | Path | Checkpoint, *, dtype=None, mesh: Mesh | None = None, show_progress: bool = True) -> Transformer:
    """Load a checkpoint as a :class:`Transformer` (with ``.config``).

    path: see ``FORMATS``; e.g. ``"smollm2-135m"``, ``"model.gguf"``, ``"Meta-Llama-3-8B/"``.
    dtype: a jnp dtype or its name (``"float32"``, ``"bfloat16"``); default the checkpoint's
    (float32 for quantized GGUF files).
    mesh: a ``("data", "model")`` mesh (see :func:`circuits.models.make_mesh`) to shard onto.
    """
    return open_checkpoint(path).load(dtype=dtype, mesh=mesh, show_progress=show_progress)


def provenance(path: str | Path | Checkpoint) -> dict[str, str]:
    """Where a model's weights come from (see :meth:`Checkpoint.provenance`)."""
    return open_checkpoint(path).provenance()


def open_weights(path: str | Path | Checkpoint, *, show_progress: bool = True) -> TensorSource:
    """A tensor source for weight-only analysis: HF and GGUF checkpoints are memory-mapped and
    streamed (never loaded whole); caches and the demo model are loaded."""
    return open_checkpoint(path).weights(show_progress=show_progress)
