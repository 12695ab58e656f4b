"""``circuits.load``: one entry point for every checkpoint format."""

from __future__ import annotations

from pathlib import Path

import jax
from flax import nnx
from jax.sharding import Mesh

from circuits.convert.build import build_transformer, resolve_dtype
from circuits.convert.errors import CheckpointError
from circuits.convert.gguf_checkpoint import GGUFCheckpoint
from circuits.convert.hf_checkpoint import HFCheckpoint
from circuits.convert.named_models import NAMED_MODELS, fetch_named_model
from circuits.convert.orbax_cache import cache_dtype, is_cache, load_cache
from circuits.models.demo import DEMO_NAME, planted_induction_model
from circuits.models.transformer import Transformer
from circuits.utils import remove_stale_partials

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


def load(path: str | Path, *, dtype=None, mesh: Mesh | None = None, show_progress: bool = True) -> Transformer:
    """Load a checkpoint as a :class:`Transformer` (with ``.config``).

    path: see ``FORMATS``; e.g. ``"smollm2-135m"``, ``"model.gguf"``, ``"Meta-Llama-3-8B/"``.
    dtype: a jnp dtype or its name (``"float32"``, ``"bfloat16"``); default the checkpoint's
    (float32 for quantized GGUF files).
    mesh: a ``("data", "model")`` mesh (see :func:`circuits.models.make_mesh`) to shard onto.
    """
    path = resolve(path)
    kind = checkpoint_kind(path)
    if kind == "demo":
        if mesh is not None:
            raise ValueError("the demo model is tiny; load it without a mesh")
        model = planted_induction_model()
        return model if dtype is None else _cast(model, resolve_dtype(dtype, None))
    if kind == "cache":
        return load_cache(path, dtype=dtype, mesh=mesh)
    source = GGUFCheckpoint(path) if kind == "gguf" else HFCheckpoint(path)
    return build_transformer(source, dtype=dtype, mesh=mesh, show_progress=show_progress)


def _cast(model: Transformer, dtype) -> Transformer:
    """The same model with every parameter cast to ``dtype``."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(lambda x: x.astype(dtype), state))


def provenance(path: str | Path, opened=None) -> dict[str, str]:
    """Where a model's weights come from: ``source`` (as given), ``file`` (resolved), ``format`` (with the
    stored number format and any quantisation) and, for a named model, its ``description``.

    ``opened``: the checkpoint reader already open on ``path`` (e.g. from :func:`open_weights`), so it is
    not opened twice."""
    name = str(path)
    facts = {"source": name}
    if name in NAMED_MODELS:
        facts["description"] = NAMED_MODELS[name].description
    resolved = resolve(path)
    kind = checkpoint_kind(resolved)
    facts["file"] = str(resolved)
    if kind == "demo":
        facts["format"] = "planted demo model, built in code, float32"
    elif kind == "cache":
        facts["format"] = f"Orbax cache written by circuits convert, {cache_dtype(resolved)}"
    else:
        reader = opened if isinstance(opened, (GGUFCheckpoint, HFCheckpoint)) else (GGUFCheckpoint if kind == "gguf" else HFCheckpoint)(resolved)
        facts["format"] = reader.storage
    return facts


def open_weights(path: str | Path, *, show_progress: bool = True):
    """A tensor source for weight-only analysis: HF and GGUF checkpoints are memory-mapped and
    streamed (never loaded whole); caches and the demo model are loaded."""
    path = resolve(path)
    kind = checkpoint_kind(path)
    if kind == "hf":
        return HFCheckpoint(path)
    if kind == "gguf":
        return GGUFCheckpoint(path)
    return load(path, show_progress=show_progress)
