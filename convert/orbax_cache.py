"""Convert-once cache: a model saved as an Orbax checkpoint plus its config, restorable onto a mesh."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import Mesh

from circuits.convert.build import abstract_model, leaf_name, resolve_dtype
from circuits.convert.errors import CheckpointError, read_json_object
from circuits.models.config import ConfigError, ModelConfig
from circuits.models.sharding import check_mesh_fits, param_sharding
from circuits.models.transformer import Transformer
from circuits.utils import remove_stale_partials, swap_in

MARKER = "circuits_cache.json"
FORMAT_VERSION = 2
"""2: odd checksum weights (every single-value change is caught) and the block description in the config."""


def is_cache(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


@jax.jit
def _checksum(array: jax.Array) -> jax.Array:
    """uint32 checksum of an array's bits: a position-weighted sum mod 2^32 (computed where the array lives,
    sharded or not). Every weight is odd, so multiplying by it is a bijection mod 2^32 and a change of any one
    value (a flipped sign bit too) always changes the sum; a lost or moved value changes it as well."""
    bits = jax.lax.bitcast_convert_type(array, {1: jnp.uint8, 2: jnp.uint16, 4: jnp.uint32}[array.dtype.itemsize]).astype(jnp.uint32)
    weights = (jax.lax.iota(jnp.uint32, bits.size).reshape(bits.shape) * jnp.uint32(2654435761)) | jnp.uint32(1)
    return jnp.sum(bits * weights, dtype=jnp.uint32)


def _checksums(tree: dict) -> dict[str, int]:
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return {jax.tree_util.keystr(path): int(_checksum(leaf)) for path, leaf in leaves}


def check_destination(destination: str | Path, *, overwrite: bool, source: str | Path | None = None) -> Path:
    """Refuse, before any work, a cache destination that must not be written: an existing one without
    ``overwrite``, anything that is not a cache this project wrote, or the source checkpoint itself."""
    destination = Path(destination).absolute()
    if source is not None and Path(source).exists():
        origin = Path(source).absolute()
        if origin == destination or destination in origin.parents or origin in destination.parents:
            raise FileExistsError(f"{destination} is or holds the source checkpoint {origin}; fix: choose another directory for the cache")
    if destination.exists():
        if not overwrite:
            raise FileExistsError(f"{destination} already exists; fix: choose a new directory, or pass --force to replace a cache")
        if not is_cache(destination):
            raise FileExistsError(f"{destination} is not a cache written by circuits convert (no {MARKER}); --force only replaces "
                                  "those. Fix: choose a new directory")
    return destination


def save_cache(model: Transformer, destination: str | Path, *, overwrite: bool = False, source: str | Path | None = None,
               tokenizer=None) -> Path:
    """Write ``model`` to ``destination`` (a new directory, or with ``overwrite`` an existing cache), with
    ``tokenizer`` (a ``tokenizers.Tokenizer``, if the source has one) as its ``tokenizer.json``.

    The cache is written to a hidden sibling and swapped in: an old cache is renamed aside, the new one
    renamed into place, then the old one deleted, so an interrupt never leaves a half cache under the
    destination's name. Each array's checksum is recorded and checked on loading.
    """
    destination = check_destination(destination, overwrite=overwrite, source=source)
    remove_stale_partials(destination)
    staging = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        _, state = nnx.split(model)
        params = nnx.to_pure_dict(state)
        with ocp.StandardCheckpointer() as checkpointer:
            checkpointer.save(staging / "params", params)
            checkpointer.wait_until_finished()
        meta = {"format_version": FORMAT_VERSION, "dtype": str(model.dtype), "config": model.config.to_dict(),
                "checksums": _checksums(params)}
        (staging / MARKER).write_text(json.dumps(meta, indent=2))
        if tokenizer is not None:
            tokenizer.save(str(staging / "tokenizer.json"))
        swap_in(staging, destination, retired)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return destination


def cache_config(path: str | Path) -> ModelConfig:
    """The config a cache was written with (from its marker file; no array is read)."""
    return _read_marker(Path(path).absolute())[0]


def cache_dtype(path: str | Path) -> str:
    """The dtype a cache was written in (its marker file's ``dtype``)."""
    return str(_read_marker(Path(path).absolute())[1])


def _read_marker(path: Path) -> tuple[ModelConfig, jnp.dtype, dict]:
    """(config, stored dtype, marker dict) from a cache's marker file, every field's type checked."""
    again = "convert the source again"
    meta, problem = read_json_object(path / MARKER)
    if problem:
        raise CheckpointError(path, [problem], again)
    if meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(path, [f"cache format {meta.get('format_version')!r} is not {FORMAT_VERSION}"], again)
    if not isinstance(meta.get("config"), dict) or not isinstance(meta.get("dtype"), str):
        raise CheckpointError(path, [f"{MARKER} lacks a config object or a dtype name"], again)
    if "checksums" in meta and not (isinstance(meta["checksums"], dict) and all(isinstance(v, int) for v in meta["checksums"].values())):
        raise CheckpointError(path, [f"{MARKER} has checksums that are not numbers"], again)
    try:
        return ModelConfig.from_dict(meta["config"]), resolve_dtype(meta["dtype"], None), meta
    except (ConfigError, TypeError, ValueError, AttributeError) as err:
        raise CheckpointError(path, [f"{MARKER} config is invalid: {err}"], again) from err


def load_cache(path: str | Path, *, dtype=None, mesh: Mesh | None = None) -> Transformer:
    """Restore a model written by :func:`save_cache`, cast to ``dtype`` and sharded over ``mesh``."""
    path = Path(path).absolute()  # Orbax refuses relative paths
    config, stored_dtype, meta = _read_marker(path)
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
    except Exception as err:  # Orbax and TensorStore raise many types for damaged files
        message = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise CheckpointError(path, [f"orbax checkpoint is incomplete or corrupt: {message}"], "convert the source again") from err
    expected = meta.get("checksums")
    if expected is not None:
        damaged = sorted(name for name, value in _checksums(restored).items() if expected.get(name) != value)
        if damaged:
            raise CheckpointError(path, [f"checksum mismatch in {name}" for name in damaged], "convert the source again")
    if dtype != stored_dtype:
        restored = jax.tree.map(lambda x: x.astype(dtype), restored)
    nnx.replace_by_pure_dict(abstract_state, restored)
    return nnx.merge(graphdef, abstract_state)
