"""Convert-once cache: a model saved as an Orbax checkpoint plus its config, restorable onto a mesh."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from circuits.convert.build import abstract_model, leaf_name, resolve_dtype
from circuits.convert.errors import CheckpointError
from circuits.models.config import ModelConfig
from circuits.models.sharding import check_mesh_fits, param_sharding
from circuits.models.transformer import Transformer

MARKER = "circuits_cache.json"
FORMAT_VERSION = 1


def is_cache(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def save_cache(model: Transformer, destination: str | Path, *, overwrite: bool = False) -> Path:
    """Write ``model`` to ``destination`` (a new directory); written to a temporary sibling, then renamed."""
    destination = Path(destination).absolute()
    if destination.exists() and not overwrite:
        raise FileExistsError(f"{destination} already exists; choose a new directory or pass overwrite=True (--force)")
    staging = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _, state = nnx.split(model)
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(staging / "params", nnx.to_pure_dict(state))
            checkpointer.wait_until_finished()
        meta = {"format_version": FORMAT_VERSION, "dtype": str(model.dtype), "config": model.config.to_dict()}
        (staging / MARKER).write_text(json.dumps(meta, indent=2))
        if destination.exists():
            shutil.rmtree(destination)
        staging.rename(destination)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return destination


def cache_dtype(path: str | Path) -> str:
    """The dtype a cache was written in (its marker file's ``dtype``)."""
    return str(json.loads((Path(path) / MARKER).read_text()).get("dtype"))


def load_cache(path: str | Path, *, dtype=None, mesh: Mesh | None = None) -> Transformer:
    """Restore a model written by :func:`save_cache`, cast to ``dtype`` and sharded over ``mesh``."""
    path = Path(path).absolute()  # Orbax refuses relative paths
    meta = json.loads((path / MARKER).read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(path, [f"cache format {meta.get('format_version')} is not {FORMAT_VERSION}"], "convert the source again")
    config = ModelConfig.from_dict(meta["config"])
    stored_dtype = resolve_dtype(meta["dtype"], None)
    dtype = resolve_dtype(dtype, stored_dtype)
    if mesh is not None:
        check_mesh_fits(mesh, config.n_kv_heads)
    graphdef, abstract_state = abstract_model(config, stored_dtype)

    def target(path_, leaf):
        sharding = param_sharding(leaf_name(path_), leaf.shape, mesh) if mesh is not None else None
        return jax.ShapeDtypeStruct(leaf.shape, stored_dtype, sharding=sharding)

    targets = jax.tree_util.tree_map_with_path(target, nnx.to_pure_dict(abstract_state))
    try:
        with ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(path / "params", targets)
    except (FileNotFoundError, ValueError) as err:
        raise CheckpointError(path, [f"orbax checkpoint is incomplete or corrupt: {err}"], "convert the source again") from err
    if dtype != stored_dtype:
        restored = jax.tree.map(lambda x: x.astype(dtype), restored)
    nnx.replace_by_pure_dict(abstract_state, restored)
    return nnx.merge(graphdef, abstract_state)
