"""The marker file of a ``circuits convert`` cache: what says a directory is one, and its config and dtype,
read without touching the arrays (nor importing Orbax or JAX)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from circuits.convert.dtypes import resolve_dtype
from circuits.convert.errors import CheckpointError, read_json_object
from circuits.models.config import ConfigError, ModelConfig

MARKER = "circuits_cache.json"
FORMAT_VERSION = 2
"""2: odd checksum weights (every single-value change is caught) and the block description in the config."""


def is_cache(path: str | Path) -> bool:
    return (Path(path) / MARKER).is_file()


def cache_config(path: str | Path) -> ModelConfig:
    """The config a cache was written with (from its marker file; no array is read)."""
    return read_marker(Path(path).absolute())[0]


def cache_dtype(path: str | Path) -> str:
    """The dtype a cache was written in (its marker file's ``dtype``)."""
    return str(read_marker(Path(path).absolute())[1])


def read_marker(path: Path) -> tuple[ModelConfig, np.dtype, dict]:
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


def rebuild_command(path: Path, meta: dict) -> str:
    """The fix for a damaged cache: the exact command that rebuilds it (from the source recorded at conversion)."""
    source = meta.get("source")
    return f"rebuild it with: circuits convert {source if isinstance(source, str) else 'SOURCE'} {path} --force"
