"""Hugging Face InternLM2 checkpoints (``InternLM2ForCausalLM``): config and tensor name table.

InternLM2 fuses the query, key and value projections into one ``wqkv`` weight whose
rows are grouped per KV head: for KV head k, the G query heads that read it, then k's
key, then k's value, each ``D`` rows. A reshape to ``[K, G + 2, D, M]`` and a split give
the explicit-GQA layout directly.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from circuits.convert.layout import TensorRule, linear_transpose, output_columns, rule
from circuits.convert.llama import activation_problems, llama_like_config
from circuits.models.config import ModelConfig


def internlm2_config(hf: dict[str, Any]) -> tuple[ModelConfig, list[str]]:
    """(ModelConfig, problems) from an InternLM2 ``config.json`` dict (head_dim is always hidden / heads)."""
    problems = []
    if hf.get("bias", False):
        problems.append("bias is true; InternLM2 with biased projections is not supported (only bias: false)")
    return llama_like_config(hf, "internlm2", None), problems + activation_problems(hf)


def split_wqkv(array: np.ndarray, config: ModelConfig) -> dict[str, np.ndarray]:
    """Fused wqkv [(N + 2K) * D, M] -> {wq [M, K, G, D], wk [M, K, D], wv [M, K, D]}."""
    k, g, d = config.n_kv_heads, config.q_per_kv, config.head_dim
    grouped = array.reshape(k, g + 2, d, config.d_model)  # [K, G+2, D, M]
    return {
        "wq": grouped[:, :g].transpose(3, 0, 1, 2),
        "wk": grouped[:, g].transpose(2, 0, 1),
        "wv": grouped[:, g + 1].transpose(2, 0, 1),
    }


def _wqkv_shape(c: ModelConfig) -> tuple[int, int]:
    return ((c.n_heads + 2 * c.n_kv_heads) * c.head_dim, c.d_model)


INTERNLM2_RULES = (
    rule("model.tok_embeddings.weight", lambda c: (c.vocab_size, c.d_model), "embed"),
    rule("model.norm.weight", lambda c: (c.d_model,), "final_norm"),
    rule("output.weight", lambda c: (c.vocab_size, c.d_model), "unembed", linear_transpose),
    rule("model.layers.{i}.attention_norm.weight", lambda c: (c.d_model,), "attn_norm"),
    TensorRule("model.layers.{i}.attention.wqkv.weight", ("wq", "wk", "wv"), _wqkv_shape, split_wqkv),
    rule("model.layers.{i}.attention.wo.weight", lambda c: (c.d_model, c.n_heads * c.head_dim), "wo", output_columns),
    rule("model.layers.{i}.ffn_norm.weight", lambda c: (c.d_model,), "mlp_norm"),
    rule("model.layers.{i}.feed_forward.w1.weight", lambda c: (c.d_mlp, c.d_model), "w_gate", linear_transpose),
    rule("model.layers.{i}.feed_forward.w3.weight", lambda c: (c.d_mlp, c.d_model), "w_up", linear_transpose),
    rule("model.layers.{i}.feed_forward.w2.weight", lambda c: (c.d_model, c.d_mlp), "w_down", linear_transpose),
)
