"""Flax NNX models: config, the canonical parameter layout, RoPE, GQA attention, MLP, decoder, interventions,
sharding rules and the planted demo model. Imports nothing else of the project."""

from circuits.models.config import ConfigError, ModelConfig, RopeScaling
from circuits.models.interventions import CAPTURE_NAMES, Interventions
from circuits.models.layout import PARAM_AXES, TensorSource, canonical_shape, parameter_count
from circuits.models.sharding import MeshError, make_mesh, parse_mesh, shard_tokens
from circuits.models.transformer import DecoderBlock, Transformer

__all__ = [
    "CAPTURE_NAMES",
    "ConfigError",
    "DecoderBlock",
    "Interventions",
    "MeshError",
    "PARAM_AXES",
    "ModelConfig",
    "RopeScaling",
    "TensorSource",
    "Transformer",
    "canonical_shape",
    "make_mesh",
    "parameter_count",
    "parse_mesh",
    "shard_tokens",
]
