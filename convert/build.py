"""Assemble a :class:`Transformer` from any canonical tensor source, one parameter at a time.

Peak memory is the model plus one stacked parameter ([L, ...] of a single kind): the
model is never held twice, and nothing is randomly initialised first.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh

from circuits.convert.dtypes import resolve_dtype
from circuits.models.config import ModelConfig
from circuits.models.layout import GLOBAL_PARAMS, TensorSource
from circuits.models.sharding import check_mesh_fits, global_array, param_sharding
from circuits.models.transformer import Transformer
from circuits.utils import progress


def cast_model(model: Transformer, dtype) -> Transformer:
    """The same model with every parameter cast to ``dtype``."""
    graphdef, state = nnx.split(model)
    return nnx.merge(graphdef, jax.tree.map(lambda x: x.astype(dtype), state))


def abstract_model(config: ModelConfig, dtype: jnp.dtype) -> tuple[nnx.GraphDef, nnx.State]:
    """(graphdef, state of ShapeDtypeStructs): the model's structure, no memory allocated."""
    return nnx.split(nnx.eval_shape(lambda: Transformer(config, dtype=dtype, rngs=nnx.Rngs(0))))


def leaf_name(path) -> str:
    """Canonical parameter name of a state leaf (its last dict key, e.g. ``wq``)."""
    keys = [getattr(entry, "key", None) for entry in path]
    return [k for k in keys if isinstance(k, str) and k != "value"][-1]


def tensor_block(source: TensorSource, name: str, layer: int | None, index: tuple[slice, ...]) -> np.ndarray:
    """Block ``index`` of canonical tensor ``name`` (of ``layer``): read alone where the source can
    (``tensor_block`` of a memory-mapped checkpoint), else cut from the whole tensor."""
    if hasattr(source, "tensor_block"):
        return source.tensor_block(name, layer, index)
    return np.asarray(source.tensor(name, layer))[index]


def build_transformer(
    source: TensorSource, *, dtype=None, mesh: Mesh | None = None, show_progress: bool = True
) -> Transformer:
    """Read every canonical parameter from ``source`` into a new model (sharded over ``mesh`` if given)."""
    config = source.config
    dtype = resolve_dtype(dtype, source.dtype)
    if mesh is not None:
        check_mesh_fits(mesh, config.n_kv_heads)
    graphdef, state = abstract_model(config, dtype)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(state)

    def load(path, leaf) -> jax.Array:
        name = leaf_name(path)
        if mesh is not None:  # each process reads only the blocks its devices hold
            return global_array(leaf.shape, param_sharding(name, leaf.shape, mesh), lambda index: read_block(name, index))
        array = np.empty(leaf.shape, dtype=dtype)
        if name in GLOBAL_PARAMS:
            array[...] = source.tensor(name)
        else:
            for layer in range(config.n_layers):
                array[layer] = source.tensor(name, layer)
        return jax.device_put(array)

    def read_block(name: str, index: tuple[slice, ...]) -> np.ndarray:
        if name in GLOBAL_PARAMS:
            return tensor_block(source, name, None, index).astype(dtype)
        layers = range(config.n_layers)[index[0]]
        return np.stack([tensor_block(source, name, layer, index[1:]) for layer in layers]).astype(dtype)

    loaded = [load(path, leaf) for path, leaf in progress(leaves, f"loading {source.description}", enabled=show_progress)]
    return nnx.merge(graphdef, jax.tree_util.tree_unflatten(treedef, loaded))
