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

from circuits.convert.build import abstract_model, leaf_name
from circuits.convert.cache_marker import FORMAT_VERSION, MARKER, is_cache, read_marker, rebuild_command
from circuits.convert.dtypes import resolve_dtype
from circuits.convert.errors import CheckpointError
from circuits.models.sharding import check_mesh_fits, param_sharding
from circuits.models.transformer import Transformer
from circuits.utils import remove_stale_partials, remove_written_tree, swap_in
from circuits.world_errors import check_room, library_noise_held, raise_as_write_error


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
    blocking = next((parent for parent in destination.parents if parent.exists() and not parent.is_dir()), None)
    if blocking is not None:
        raise FileExistsError(f"cannot write the cache {destination}: {blocking} is a file, not a directory; fix: choose a path "
                              "whose parents are directories")
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
    _, state = nnx.split(model)
    params = nnx.to_pure_dict(state)
    sizes = [leaf.nbytes for leaf in jax.tree.leaves(params)]
    check_room(destination.parent, sum(sizes), max(sizes), f"the cache {destination}")
    staging = destination.with_name(f".{destination.name}.partial-{os.getpid()}")
    retired = destination.with_name(f".{destination.name}.old-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        try:
            with library_noise_held(), ocp.StandardCheckpointer() as checkpointer:
                checkpointer.save(staging / "params", params)
                checkpointer.wait_until_finished()
        except Exception as err:  # Orbax and TensorStore report a full disk in their own words
            raise_as_write_error(err, f"the cache {destination}")
            raise
        meta = {"format_version": FORMAT_VERSION, "dtype": str(model.dtype), "config": model.config.to_dict(),
                "checksums": _checksums(params), "source": None if source is None else str(Path(source).absolute() if Path(source).exists() else source)}
        (staging / MARKER).write_text(json.dumps(meta, indent=2))
        if tokenizer is not None:
            tokenizer.save(str(staging / "tokenizer.json"))
        swap_in(staging, destination, retired)
    finally:
        remove_written_tree(staging)
    return destination


def _damaged_arrays(message: str, targets: dict) -> str:
    """Which arrays a TensorStore / Orbax error is about: those it names, else those whose shape matches the
    index it failed to read, else all of it."""
    import re

    names = [jax.tree_util.keystr(p, simple=True, separator=".") for p, _ in jax.tree_util.tree_flatten_with_path(targets)[0]]
    named = sorted({name for name in names if f"{name}/" in message})
    if not named:
        extents = tuple(int(stop) for stop in re.findall(r"slice\(0, (\d+), 1\)", message))
        shapes = {jax.tree_util.keystr(p, simple=True, separator="."): leaf.shape for p, leaf in jax.tree_util.tree_flatten_with_path(targets)[0]}
        named = sorted(name for name, shape in shapes.items() if extents and tuple(shape) == extents)
    reason = next((line for line in message.splitlines() if line.strip()), type(message).__name__)
    reason = reason.split(" See full TensorStore details")[0].split(" [tensorstore_spec")[0][:160]
    return f"({'array ' + ', '.join(named) if named else 'its array files'}: {reason})"


def load_cache(path: str | Path, *, dtype=None, mesh: Mesh | None = None) -> Transformer:
    """Restore a model written by :func:`save_cache`, cast to ``dtype`` and sharded over ``mesh``."""
    path = Path(path).absolute()  # Orbax refuses relative paths
    config, stored_dtype, meta = read_marker(path)
    dtype = resolve_dtype(dtype, stored_dtype)
    if mesh is not None:
        check_mesh_fits(mesh, config.n_kv_heads)
    graphdef, abstract_state = abstract_model(config, stored_dtype)

    def target(path_, leaf):
        sharding = param_sharding(leaf_name(path_), leaf.shape, mesh) if mesh is not None else None
        return jax.ShapeDtypeStruct(leaf.shape, stored_dtype, sharding=sharding)

    targets = jax.tree_util.tree_map_with_path(target, nnx.to_pure_dict(abstract_state))
    rebuild = rebuild_command(path, meta)
    try:
        with library_noise_held(), ocp.StandardCheckpointer() as checkpointer:
            restored = checkpointer.restore(path / "params", targets)
    except Exception as err:  # Orbax and TensorStore raise many types for damaged files
        raise CheckpointError(path, [f"the cache's data {_damaged_arrays(str(err), targets)} is damaged or missing"], rebuild) from err
    expected = meta.get("checksums")
    if expected is not None:
        damaged = sorted(name for name, value in _checksums(restored).items() if expected.get(name) != value)
        if damaged:
            raise CheckpointError(path, [f"checksum mismatch in {name}" for name in damaged], rebuild)
    if dtype != stored_dtype:
        restored = jax.tree.map(lambda x: x.astype(dtype), restored)
    nnx.replace_by_pure_dict(abstract_state, restored)
    return nnx.merge(graphdef, abstract_state)
