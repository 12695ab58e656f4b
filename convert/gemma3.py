"""Hugging Face Gemma 3 text checkpoints (``Gemma3ForCausalLM``): config and tensor name table.

The Gemma 3 block (``FAMILY_BLOCKS["gemma3"]``): QK-norm, post-attention and post-MLP norms, ``1 + w`` norm
gains (stored as ``w``, as HF stores them), GeGLU, embeddings times sqrt(d_model). Layers alternate sliding
and full attention (``layer_types``, or every ``sliding_window_pattern``-th layer full), each kind with its
own RoPE (``rope_parameters`` per layer type, or the older ``rope_theta`` / ``rope_scaling`` /
``rope_local_base_freq``). Defaults are those of transformers' ``Gemma3TextConfig``.
"""

from __future__ import annotations

from typing import Any

from circuits.convert.layout import kv_rows, linear_transpose, output_columns, query_rows, rule
from circuits.convert.llama import llama_like_config
from circuits.models.config import ModelConfig, rope_from_hf

GLOBAL_THETA, LOCAL_THETA = 1_000_000.0, 10_000.0
ACTIVATIONS = ("gelu_pytorch_tanh", "gelu_tanh")  # HF's names of tanh-approximated GELU


def _rope_settings(hf: dict[str, Any]) -> dict[str, Any]:
    """ModelConfig RoPE fields of full layers (rope_theta, rope_scaling) and sliding ones (local_*)."""
    params = hf.get("rope_parameters")
    if isinstance(params, dict) and ("full_attention" in params or "sliding_attention" in params):
        full, local = dict(params.get("full_attention") or {}), dict(params.get("sliding_attention") or {})
    else:
        full = {**(params or {}), **(hf.get("rope_scaling") or {})}
        full.setdefault("rope_theta", hf.get("rope_theta", GLOBAL_THETA))
        local = {"rope_theta": hf.get("rope_local_base_freq", LOCAL_THETA)}
    context = {"max_position_embeddings": hf.get("max_position_embeddings", 131_072)}
    theta, scaling = rope_from_hf({**context, "rope_parameters": {"rope_theta": GLOBAL_THETA, **full}})
    local_theta, local_scaling = rope_from_hf({**context, "rope_parameters": {"rope_theta": LOCAL_THETA, **local}})
    return {"rope_theta": theta, "rope_scaling": scaling, "local_rope_theta": local_theta, "local_rope_scaling": local_scaling}


def gemma3_config(hf: dict[str, Any]) -> tuple[ModelConfig, list[str]]:
    """(ModelConfig, problems) from a Gemma 3 text ``config.json`` dict."""
    problems = []
    activation = hf.get("hidden_activation", hf.get("hidden_act", "gelu_pytorch_tanh"))
    if activation not in ACTIVATIONS:
        problems.append(f"hidden_activation {activation!r} is not supported (only gelu_pytorch_tanh / GeGLU)")
    for name in ("final_logit_softcapping", "attn_logit_softcapping"):
        if hf.get(name) is not None:
            problems.append(f"{name} is {hf[name]!r}; logit soft-capping (Gemma 2) is not supported, only Gemma 3's None")
    if hf.get("use_bidirectional_attention"):
        problems.append("use_bidirectional_attention is set; only causal Gemma 3 models are supported")
    n_layers = hf["num_hidden_layers"]
    layer_types = hf.get("layer_types")
    if layer_types is None:
        pattern = hf.get("sliding_window_pattern", 6)
        layer_types = ["sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)]
    config = llama_like_config(
        hf,
        "gemma3",
        hf.get("head_dim", 256),
        rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
        max_position_embeddings=hf.get("max_position_embeddings", 131_072),
        tie_embeddings=bool(hf.get("tie_word_embeddings", True)),
        bos_token_id=hf.get("bos_token_id", 2) if isinstance(hf.get("bos_token_id", 2), int) else None,
        query_pre_attn_scalar=hf.get("query_pre_attn_scalar", 256),
        layer_types=tuple(layer_types) if isinstance(layer_types, list) else layer_types,
        sliding_window=hf.get("sliding_window", 4096),
        **_rope_settings(hf),
    )
    return config, problems


def _d_model(c: ModelConfig) -> tuple[int]:
    return (c.d_model,)


def _head_dim(c: ModelConfig) -> tuple[int]:
    return (c.head_dim,)


GEMMA3_RULES = (
    rule("model.embed_tokens.weight", lambda c: (c.vocab_size, c.d_model), "embed"),
    rule("model.norm.weight", _d_model, "final_norm"),
    rule("lm_head.weight", lambda c: (c.vocab_size, c.d_model), "unembed", linear_transpose),
    rule("model.layers.{i}.input_layernorm.weight", _d_model, "attn_norm"),
    rule("model.layers.{i}.self_attn.q_proj.weight", lambda c: (c.n_heads * c.head_dim, c.d_model), "wq", query_rows),
    rule("model.layers.{i}.self_attn.k_proj.weight", lambda c: (c.n_kv_heads * c.head_dim, c.d_model), "wk", kv_rows),
    rule("model.layers.{i}.self_attn.v_proj.weight", lambda c: (c.n_kv_heads * c.head_dim, c.d_model), "wv", kv_rows),
    rule("model.layers.{i}.self_attn.q_norm.weight", _head_dim, "q_norm"),
    rule("model.layers.{i}.self_attn.k_norm.weight", _head_dim, "k_norm"),
    rule("model.layers.{i}.self_attn.o_proj.weight", lambda c: (c.d_model, c.n_heads * c.head_dim), "wo", output_columns),
    rule("model.layers.{i}.post_attention_layernorm.weight", _d_model, "post_attn_norm"),
    rule("model.layers.{i}.pre_feedforward_layernorm.weight", _d_model, "mlp_norm"),
    rule("model.layers.{i}.mlp.gate_proj.weight", lambda c: (c.d_mlp, c.d_model), "w_gate", linear_transpose),
    rule("model.layers.{i}.mlp.up_proj.weight", lambda c: (c.d_mlp, c.d_model), "w_up", linear_transpose),
    rule("model.layers.{i}.mlp.down_proj.weight", lambda c: (c.d_model, c.d_mlp), "w_down", linear_transpose),
    rule("model.layers.{i}.post_feedforward_layernorm.weight", _d_model, "post_mlp_norm"),
)
