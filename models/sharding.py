"""One table from logical axes to mesh axes, and the helpers that place parameters and tokens.

Mesh axes: ``data`` (batch) and ``model`` (KV heads, MLP width, vocabulary). The same
code runs with ``mesh=None`` on one device. Multi-host: call ``jax.distributed.initialize()``
first, then build the same mesh over ``jax.devices()``.
"""

from __future__ import annotations

from typing import Callable

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from circuits.models.layout import PARAM_AXES

LOGICAL_TO_MESH: dict[str, str | None] = {
    "batch": "data",
    "kv_heads": "model",
    "mlp": "model",
    "vocab": "model",
    "layers": None,
    "d_model": None,
    "q_per_kv": None,
    "head_dim": None,
}

class MeshError(ValueError):
    """A mesh that cannot hold this model (e.g. KV heads not divisible by the model axis)."""


def make_mesh(data: int = 1, model: int | None = None, devices=None) -> Mesh:
    """A ("data", "model") mesh; ``model`` defaults to all devices left after ``data``."""
    devices = list(jax.devices() if devices is None else devices)
    if model is None:
        model = len(devices) // data
    if data * model != len(devices) or data < 1 or model < 1:
        over = f" over {jax.process_count()} processes" if jax.process_count() > 1 else ""
        raise MeshError(
            f"a mesh of data={data} x model={model} needs {data * model} devices, but {len(devices)} are "
            f"available{over}; fix: choose sizes whose product is {len(devices)}"
        )
    auto = (jax.sharding.AxisType.Auto,) * 2  # XLA propagates shardings from the parameters
    return jax.make_mesh((data, model), ("data", "model"), devices=devices, axis_types=auto)


def parse_mesh(spec: str) -> Mesh:
    """Mesh from a CLI string such as ``"data=2,model=4"``."""
    sizes = {}
    for part in spec.split(","):
        name, _, value = part.partition("=")
        if name.strip() not in ("data", "model") or not value.strip().isdigit():
            raise MeshError(f"cannot read mesh {spec!r}; fix: write it as data=D,model=M (e.g. data=1,model=8)")
        sizes[name.strip()] = int(value)
    return make_mesh(sizes.get("data", 1), sizes.get("model"))


def check_mesh_fits(mesh: Mesh, n_kv_heads: int) -> None:
    """KV heads are split over the ``model`` axis: they must divide evenly."""
    model = mesh.shape["model"]
    if n_kv_heads % model:
        raise MeshError(
            f"the mesh's model axis has {model} devices but the model has {n_kv_heads} KV heads; "
            f"fix: use a model axis that divides {n_kv_heads} (e.g. model={np.gcd(n_kv_heads, model)})"
        )


def param_sharding(name: str, shape: tuple[int, ...], mesh: Mesh) -> NamedSharding:
    """NamedSharding of canonical parameter ``name``; an axis that does not divide evenly is replicated."""
    spec = []
    for logical, size in zip(PARAM_AXES[name], shape):
        axis = LOGICAL_TO_MESH[logical]
        spec.append(axis if axis is not None and size % mesh.shape[axis] == 0 else None)
    return NamedSharding(mesh, PartitionSpec(*spec))


def global_array(shape: tuple[int, ...], sharding: NamedSharding, read: Callable[[tuple[slice, ...]], np.ndarray]) -> jax.Array:
    """A ``jax.Array`` of ``shape`` laid out as ``sharding`` (over one process's devices or a multi-process mesh),
    each shard this process holds produced by ``read(index)``; an index held by several local devices (a
    replica) is read once. In a multi-process run each process so reads only its own shards."""
    blocks: dict[tuple, np.ndarray] = {}

    def shard(index: tuple[slice, ...]) -> np.ndarray:
        key = tuple((part.start, part.stop, part.step) if isinstance(part, slice) else part for part in index)
        if key not in blocks:
            blocks[key] = read(index)
        return blocks[key]

    return jax.make_array_from_callback(tuple(shape), sharding, shard)


def host_array(array) -> np.ndarray:
    """``array`` as a numpy array in this process, whole: gathered from the other processes when some of its
    shards live only there (a multi-process mesh); every process must call it (it is a collective then)."""
    if isinstance(array, jax.Array) and not (array.is_fully_addressable or array.is_fully_replicated):
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(array, tiled=True))
    return np.asarray(array)


def mesh_of(array: jax.Array) -> Mesh | None:
    """The mesh ``array`` is laid out on (None for an array on one device)."""
    sharding = getattr(array, "sharding", None)
    return sharding.mesh if isinstance(sharding, NamedSharding) else None


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Shard the leading (batch) axis over ``data``."""
    return NamedSharding(mesh, PartitionSpec(LOGICAL_TO_MESH["batch"], *([None] * (ndim - 1))))


def shard_tokens(tokens, mesh: Mesh | None) -> jax.Array:
    """Place int tokens [B, T] on the mesh, batch split over ``data`` (B must divide evenly)."""
    if mesh is None:
        return jax.numpy.asarray(tokens)
    if tokens.shape[0] % mesh.shape["data"]:
        raise MeshError(
            f"batch of {tokens.shape[0]} does not divide over the mesh's data axis of {mesh.shape['data']}"
        )
    tokens = np.asarray(tokens)
    return global_array(tokens.shape, batch_sharding(mesh, tokens.ndim), lambda index: tokens[index])
