"""Hugging Face Qwen2 / Qwen2.5 checkpoints (``Qwen2ForCausalLM``): config and tensor name table.

A Qwen2 block is a Llama block whose q / k / v projections carry biases (``BlockSpec.qkv_bias``). Sliding
windows apply only with ``use_sliding_window``, to the layers from ``max_window_layers`` on (or as
``layer_types`` says).
"""

from __future__ import annotations

from typing import Any

from circuits.convert.layout import bias_rows, kv_bias_rows, rule
from circuits.convert.llama import LLAMA_RULES, activation_problems, llama_like_config
from circuits.models.config import ModelConfig


def _layer_types(hf: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig fields of Qwen2's attention kinds: all full unless ``use_sliding_window``."""
    if not hf.get("use_sliding_window", False):
        return {}
    layer_types = hf.get("layer_types")
    if layer_types is None:
        first_sliding = hf.get("max_window_layers", 28)
        layer_types = ["sliding_attention" if i >= first_sliding else "full_attention" for i in range(hf["num_hidden_layers"])]
    return {"layer_types": tuple(layer_types) if isinstance(layer_types, list) else layer_types,
            "sliding_window": hf.get("sliding_window", 4096)}


def qwen2_config(hf: dict[str, Any]) -> tuple[ModelConfig, list[str]]:
    """(ModelConfig, problems) from a Qwen2 ``config.json`` dict."""
    return llama_like_config(hf, "qwen2", hf.get("head_dim"), **_layer_types(hf)), activation_problems(hf)


QWEN2_RULES = LLAMA_RULES + (
    rule("model.layers.{i}.self_attn.q_proj.bias", lambda c: (c.n_heads * c.head_dim,), "bq", bias_rows),
    rule("model.layers.{i}.self_attn.k_proj.bias", lambda c: (c.n_kv_heads * c.head_dim,), "bk", kv_bias_rows),
    rule("model.layers.{i}.self_attn.v_proj.bias", lambda c: (c.n_kv_heads * c.head_dim,), "bv", kv_bias_rows),
)
