"""Flax NNX models: config, the canonical parameter layout, RoPE, GQA attention, MLP, decoder, interventions,
sharding rules and the planted demo model. Imports nothing else of the project; names are imported on first use."""

from circuits.lazy import lazy_face

_PUBLIC = {
    "ConfigError": "config",
    "ModelConfig": "config",
    "RopeScaling": "config",
    "CAPTURE_NAMES": "interventions",
    "Interventions": "interventions",
    "PARAM_AXES": "layout",
    "TensorSource": "layout",
    "canonical_shape": "layout",
    "parameter_count": "layout",
    "MeshError": "sharding",
    "make_mesh": "sharding",
    "parse_mesh": "sharding",
    "shard_tokens": "sharding",
    "DecoderBlock": "transformer",
    "Transformer": "transformer",
}
__all__ = sorted(_PUBLIC)
__getattr__, __dir__ = lazy_face(__name__, _PUBLIC)
