"""Hugging Face Llama checkpoints (``LlamaForCausalLM``): config and tensor name table."""

from __future__ import annotations

from typing import Any

from circuits.convert.layout import kv_rows, linear_transpose, output_columns, query_rows, rule
from circuits.models.config import ModelConfig, is_whole_number, rope_from_hf
from circuits.models.layout import FAMILY_BLOCKS


def llama_config(hf: dict[str, Any]) -> tuple[ModelConfig, list[str]]:
    """(ModelConfig, problems) from a Llama ``config.json`` dict."""
    problems = []
    if hf.get("attention_bias") or hf.get("mlp_bias"):
        problems.append("attention_bias / mlp_bias are set; biased Llama variants are not supported")
    return llama_like_config(hf, "llama", hf.get("head_dim")), problems + activation_problems(hf)


def activation_problems(hf: dict[str, Any]) -> list[str]:
    """Problems with the MLP activation: only SiLU (SwiGLU) is supported."""
    if hf.get("hidden_act", "silu") != "silu":
        return [f"hidden_act {hf.get('hidden_act')!r} is not supported (only silu / SwiGLU)"]
    return []


def llama_like_config(hf: dict[str, Any], architecture: str, head_dim: int | None, **fields) -> ModelConfig:
    """ModelConfig from the config.json keys that Llama-layout families share (head_dim: hidden / heads if None),
    the block of ``architecture`` (:data:`~circuits.models.layout.FAMILY_BLOCKS`) and further ModelConfig ``fields``
    (which override the shared ones)."""
    n_heads, hidden = hf["num_attention_heads"], hf["hidden_size"]
    if head_dim is None:  # hidden / heads, once both are known to be positive whole numbers (else ModelConfig says why)
        head_dim = hidden // n_heads if all(is_whole_number(v) and v > 0 for v in (hidden, n_heads)) else 0
    theta, scaling = rope_from_hf(hf)
    shared = dict(
        vocab_size=hf["vocab_size"],
        d_model=hidden,
        n_layers=hf["num_hidden_layers"],
        n_heads=n_heads,
        n_kv_heads=hf.get("num_key_value_heads") or n_heads,
        head_dim=head_dim,
        d_mlp=hf["intermediate_size"],
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        rope_theta=theta,
        rope_scaling=scaling,
        max_position_embeddings=hf.get("max_position_embeddings", 2048),
        tie_embeddings=bool(hf.get("tie_word_embeddings", False)),
        architecture=architecture,
        bos_token_id=hf.get("bos_token_id") if isinstance(hf.get("bos_token_id"), int) else None,
        block=FAMILY_BLOCKS[architecture],
    )
    return ModelConfig(**{**shared, **fields})


def _q_rows(c: ModelConfig) -> int:
    return c.n_heads * c.head_dim


def _kv_rows(c: ModelConfig) -> int:
    return c.n_kv_heads * c.head_dim


LLAMA_RULES = (
    rule("model.embed_tokens.weight", lambda c: (c.vocab_size, c.d_model), "embed"),
    rule("model.norm.weight", lambda c: (c.d_model,), "final_norm"),
    rule("lm_head.weight", lambda c: (c.vocab_size, c.d_model), "unembed", linear_transpose),
    rule("model.layers.{i}.input_layernorm.weight", lambda c: (c.d_model,), "attn_norm"),
    rule("model.layers.{i}.self_attn.q_proj.weight", lambda c: (_q_rows(c), c.d_model), "wq", query_rows),
    rule("model.layers.{i}.self_attn.k_proj.weight", lambda c: (_kv_rows(c), c.d_model), "wk", kv_rows),
    rule("model.layers.{i}.self_attn.v_proj.weight", lambda c: (_kv_rows(c), c.d_model), "wv", kv_rows),
    rule("model.layers.{i}.self_attn.o_proj.weight", lambda c: (c.d_model, _q_rows(c)), "wo", output_columns),
    rule("model.layers.{i}.post_attention_layernorm.weight", lambda c: (c.d_model,), "mlp_norm"),
    rule("model.layers.{i}.mlp.gate_proj.weight", lambda c: (c.d_mlp, c.d_model), "w_gate", linear_transpose),
    rule("model.layers.{i}.mlp.up_proj.weight", lambda c: (c.d_mlp, c.d_model), "w_up", linear_transpose),
    rule("model.layers.{i}.mlp.down_proj.weight", lambda c: (c.d_model, c.d_mlp), "w_down", linear_transpose),
)

IGNORED_SUFFIXES = ("rotary_emb.inv_freq",)
"""Buffers some older checkpoints store; recomputed from the config, never read."""
