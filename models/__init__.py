"""Flax NNX models: config, RoPE, GQA attention, MLP, decoder, interventions, sharding rules."""

from circuits.models.config import ConfigError, ModelConfig, RopeScaling
from circuits.models.interventions import CAPTURE_NAMES, Interventions
from circuits.models.sharding import MeshError, make_mesh, parse_mesh, shard_tokens
from circuits.models.transformer import DecoderBlock, Transformer

__all__ = [
    "CAPTURE_NAMES",
    "ConfigError",
    "DecoderBlock",
    "Interventions",
    "MeshError",
    "ModelConfig",
    "RopeScaling",
    "Transformer",
    "make_mesh",
    "parse_mesh",
    "shard_tokens",
]
