"""A checkpoint path resolved once into a :class:`Checkpoint`: its kind, config, provenance and default dtype
from metadata alone (importing this loads no JAX, so ``circuits info`` stays fast); loading the model or
streaming its weights imports the rest on first use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from circuits.convert.cache_marker import cache_config, cache_dtype, is_cache
from circuits.convert.dtypes import resolve_dtype
from circuits.convert.errors import CheckpointError
from circuits.convert.gguf_checkpoint import GGUFCheckpoint
from circuits.convert.hf_checkpoint import HFCheckpoint
from circuits.convert.named_models import DEMO_NAME, NAMED_MODELS, fetch_named_model
from circuits.models.config import ModelConfig
from circuits.models.layout import TensorSource, largest_stacked_param, parameter_count
from circuits.utils import remove_stale_partials
from circuits.world_errors import check_fits

if TYPE_CHECKING:
    from jax.sharding import Mesh

    from circuits.models.transformer import Transformer

FORMATS = (
    "an HF model directory (config.json + *.safetensors)",
    "its model.safetensors.index.json or model.safetensors file",
    "a .gguf file",
    "a directory written by `circuits convert`",
    f"a model name ({', '.join(NAMED_MODELS)}, fetched on first use)",
    f"the demo name {DEMO_NAME!r}",
)


def resolve(path: str | Path) -> str | Path:
    """``path`` itself, or for a named model the local GGUF file (fetched on first use)."""
    return fetch_named_model(str(path)) if str(path) in NAMED_MODELS else path


def checkpoint_kind(path: str | Path) -> str:
    """Which reader handles ``path`` (after :func:`resolve`): ``"demo"``, ``"cache"``, ``"gguf"`` or ``"hf"``;
    raises a clear error for anything else."""
    if str(path) == DEMO_NAME:
        return "demo"
    path = Path(path)
    if not path.exists():
        remove_stale_partials(path)  # a cache moved aside by a killed `convert --force` is put back
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory; fix: give {', '.join(FORMATS)}")
    if is_cache(path):
        return "cache"
    if path.suffix == ".gguf":
        return "gguf"
    if path.is_dir() or path.name.endswith((".safetensors", ".safetensors.index.json")):
        return "hf"
    raise CheckpointError(path, [f"unknown checkpoint format {path.suffix or path.name!r}"], f"give {', '.join(FORMATS)}")


class Checkpoint:
    """A checkpoint path resolved once (a named model fetched, its kind detected), and everything done with it:
    :attr:`config` (metadata only), :meth:`provenance`, :meth:`weights` (a tensor source), :meth:`load` (a
    model) and :meth:`tokenizer`. The HF or GGUF reader is opened once and shared by all of them, and a model
    loaded once serves as the tensor source afterwards (a GGUF file is dequantised once).
    """

    def __init__(self, path: str | Path):
        self.source = str(path)
        self.path = Path(resolve(path))
        self.kind = checkpoint_kind(self.path)
        self._reader: HFCheckpoint | GGUFCheckpoint | None = None
        self._model: Transformer | None = None

    def reader(self) -> HFCheckpoint | GGUFCheckpoint:
        """The HF or GGUF reader (memory-mapped, nothing read yet), opened on first use."""
        if self.kind not in ("hf", "gguf"):
            raise ValueError(f"{self.source} is a {self.kind} checkpoint, which has no streaming reader")
        if self._reader is None:
            self._reader = GGUFCheckpoint(self.path) if self.kind == "gguf" else HFCheckpoint(self.path)
        return self._reader

    @property
    def config(self) -> ModelConfig:
        """The model's config, read from metadata alone (no weights are loaded)."""
        if self._model is not None:
            return self._model.config
        if self.kind == "demo":
            from circuits.models.demo import planted_induction_config

            return planted_induction_config()
        if self.kind == "cache":
            return cache_config(self.path)
        return self.reader().config

    @property
    def dtype(self):
        """The dtype the model loads in by default (the checkpoint's own; float32 for quantised GGUF files)."""
        if self.kind == "demo":
            return np.dtype(np.float32)
        if self.kind == "cache":
            return resolve_dtype(cache_dtype(self.path), None)
        return self.reader().dtype

    def load(self, *, dtype=None, mesh: Mesh | None = None, show_progress: bool = True) -> Transformer:
        """The model as a :class:`Transformer` (see :func:`circuits.convert.loading.load`); kept, so a later
        :meth:`weights` reuses it."""
        from circuits.convert.build import build_transformer, cast_model
        from circuits.convert.orbax_cache import load_cache
        from circuits.models.demo import planted_induction_model

        if self.kind == "demo":
            model = planted_induction_model()
            if mesh is not None:  # built in code: the built model is the tensor source of the sharded one
                model = build_transformer(model, dtype=dtype, mesh=mesh, show_progress=False)
            elif dtype is not None:
                model = cast_model(model, resolve_dtype(dtype, None))
        elif self.kind == "cache":
            model = load_cache(self.path, dtype=dtype, mesh=mesh)
        else:
            config, dtype_ = self.reader().config, resolve_dtype(dtype, self.reader().dtype)
            needed = parameter_count(config) + 2 * largest_stacked_param(config)  # the model, one stacked parameter in flight
            check_fits(needed * dtype_.itemsize, f"loading {self.source} in {dtype_}",
                       "load with --dtype bfloat16, spread the model over a --mesh, or raise the memory limit")
            model = build_transformer(self.reader(), dtype=dtype, mesh=mesh, show_progress=show_progress)
        self._model = model
        return model

    def weights(self, *, show_progress: bool = True) -> TensorSource:
        """A tensor source for weight-only analysis: the model if it is loaded already, else HF and GGUF
        checkpoints memory-mapped and streamed (never loaded whole); caches and the demo model are loaded."""
        if self._model is not None:
            return self._model
        if self.kind in ("hf", "gguf"):
            return self.reader()
        return self.load(show_progress=show_progress)

    def provenance(self) -> dict[str, str]:
        """Where the weights come from: ``source`` (as given), ``file`` (resolved), ``format`` (with the stored
        number format and any quantisation), for a named model its ``description`` and ``licence``, and for a
        GGUF file the hyper-parameters it left out and that took the architecture's defaults (``defaults``)."""
        facts = {"source": self.source}
        if self.source in NAMED_MODELS:
            facts["description"] = NAMED_MODELS[self.source].description
            facts["licence"] = NAMED_MODELS[self.source].licence
        facts["file"] = str(self.path)
        if self.kind == "demo":
            facts["format"] = "planted demo model, built in code, float32"
        elif self.kind == "cache":
            facts["format"] = f"Orbax cache written by circuits convert, {cache_dtype(self.path)}"
        else:
            facts["format"] = self.reader().storage
            defaults = getattr(self.reader(), "defaults", None)
            if defaults:
                facts["defaults"] = ", ".join(f"{name}={value}" for name, value in defaults.items())
        return facts

    def tokenizer(self):
        """The model's ``tokenizers.Tokenizer`` (see :func:`circuits.convert.tokenizer.load_tokenizer`)."""
        from circuits.convert.tokenizer import tokenizer_at

        opened = self._reader.file if isinstance(self._reader, GGUFCheckpoint) else None  # a vocabulary needs no valid model
        return tokenizer_at(self.path, self.kind, opened)


def open_checkpoint(path: str | Path | Checkpoint) -> Checkpoint:
    """``path`` resolved once into a :class:`Checkpoint` (a Checkpoint is returned as it is)."""
    return path if isinstance(path, Checkpoint) else Checkpoint(path)
