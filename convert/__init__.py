"""The front door: load checkpoints (HF safetensors for Llama, InternLM2, Qwen2 and Gemma 3, GGUF, Orbax caches, named models)
into the canonical parameter layout, stream them for weight-only analysis, and build their tokenizers. Names are
imported on first use."""

from circuits.lazy import lazy_face

_PUBLIC = {
    "build_transformer": "build",
    "resolve_dtype": "dtypes",
    "CheckpointError": "errors",
    "GGUFCheckpoint": "gguf_checkpoint",
    "ARCHITECTURES": "hf_checkpoint",
    "HFCheckpoint": "hf_checkpoint",
    "register_architecture": "hf_checkpoint",
    "Checkpoint": "checkpoint",
    "open_checkpoint": "checkpoint",
    "load": "loading",
    "open_weights": "loading",
    "provenance": "loading",
    "NAMED_MODELS": "named_models",
    "is_cache": "cache_marker",
    "load_cache": "orbax_cache",
    "save_cache": "orbax_cache",
    "SafetensorsFile": "safetensors_file",
    "TokenizerError": "tokenizer",
    "load_tokenizer": "tokenizer",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_face(__name__, _PUBLIC)
