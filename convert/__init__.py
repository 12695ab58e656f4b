"""Checkpoint readers (HF safetensors for Llama and InternLM2, GGUF, Orbax cache) into the canonical parameter layout."""

from circuits.convert.build import build_transformer, resolve_dtype
from circuits.convert.errors import CheckpointError
from circuits.convert.gguf_checkpoint import GGUFCheckpoint
from circuits.convert.hf_checkpoint import ARCHITECTURES, HFCheckpoint, register_architecture
from circuits.convert.orbax_cache import is_cache, load_cache, save_cache
from circuits.convert.safetensors_file import SafetensorsFile

__all__ = [
    "ARCHITECTURES",
    "CheckpointError",
    "GGUFCheckpoint",
    "HFCheckpoint",
    "SafetensorsFile",
    "build_transformer",
    "is_cache",
    "load_cache",
    "register_architecture",
    "resolve_dtype",
    "save_cache",
]
