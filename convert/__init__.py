"""The front door: load checkpoints (HF safetensors for Llama, InternLM2, Qwen2 and Gemma 3, GGUF, Orbax caches, named models)
into the canonical parameter layout, stream them for weight-only analysis, and build their tokenizers."""

from circuits.convert.build import build_transformer, resolve_dtype
from circuits.convert.errors import CheckpointError
from circuits.convert.gguf_checkpoint import GGUFCheckpoint
from circuits.convert.hf_checkpoint import ARCHITECTURES, HFCheckpoint, register_architecture
from circuits.convert.loading import Checkpoint, load, open_checkpoint, open_weights, provenance
from circuits.convert.named_models import NAMED_MODELS
from circuits.convert.orbax_cache import is_cache, load_cache, save_cache
from circuits.convert.safetensors_file import SafetensorsFile
from circuits.convert.tokenizer import TokenizerError, load_tokenizer

__all__ = [
    "ARCHITECTURES",
    "Checkpoint",
    "CheckpointError",
    "GGUFCheckpoint",
    "HFCheckpoint",
    "NAMED_MODELS",
    "SafetensorsFile",
    "TokenizerError",
    "build_transformer",
    "is_cache",
    "load",
    "load_cache",
    "load_tokenizer",
    "open_checkpoint",
    "open_weights",
    "provenance",
    "register_architecture",
    "resolve_dtype",
    "save_cache",
]
