"""Helpers shared by the tests: tiny random HF Llama models, token batches and greedy decoding."""

import numpy as np


def randomize_torch_model(model, seed: int = 0, scale: float = 0.15) -> None:
    """Give every parameter (norm gains included) random values, so a layout error cannot hide."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            noise = torch.randn(param.shape, generator=generator)
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * noise)
            else:
                param.copy_(scale * noise)


def tiny_llama_config(**overrides):
    from transformers import LlamaConfig

    settings = dict(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=1024,
        rms_norm_eps=1e-5,
        tie_word_embeddings=False,
    )
    settings.update(overrides)
    return LlamaConfig(**settings)


def torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return model(torch.as_tensor(tokens)).logits.float().numpy()


def random_tokens(batch: int, length: int, vocab: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab, (batch, length)).astype(np.int32)


def write_hf_checkpoint(directory, tensors: dict, config: dict) -> None:
    """Write ``tensors`` (name -> numpy array) as model.safetensors with ``config`` as config.json."""
    import json

    from safetensors.numpy import save_file

    directory.mkdir(parents=True, exist_ok=True)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(directory / "model.safetensors"))
    (directory / "config.json").write_text(json.dumps(config))


def arange_llama(n_heads=6, n_kv_heads=2, head_dim=4, d_model=8, d_mlp=12, vocab=16, n_layers=2, tied=False):
    """(HF tensors filled with distinct values, config dict): every element tells where it came from."""
    config = dict(
        architectures=["LlamaForCausalLM"],
        vocab_size=vocab,
        hidden_size=d_model,
        intermediate_size=d_mlp,
        num_hidden_layers=n_layers,
        num_attention_heads=n_heads,
        num_key_value_heads=n_kv_heads,
        head_dim=head_dim,
        tie_word_embeddings=tied,
    )
    shapes = {
        "model.embed_tokens.weight": (vocab, d_model),
        "model.norm.weight": (d_model,),
    }
    if not tied:
        shapes["lm_head.weight"] = (vocab, d_model)
    for i in range(n_layers):
        p = f"model.layers.{i}."
        shapes.update(
            {
                p + "input_layernorm.weight": (d_model,),
                p + "self_attn.q_proj.weight": (n_heads * head_dim, d_model),
                p + "self_attn.k_proj.weight": (n_kv_heads * head_dim, d_model),
                p + "self_attn.v_proj.weight": (n_kv_heads * head_dim, d_model),
                p + "self_attn.o_proj.weight": (d_model, n_heads * head_dim),
                p + "post_attention_layernorm.weight": (d_model,),
                p + "mlp.gate_proj.weight": (d_mlp, d_model),
                p + "mlp.up_proj.weight": (d_mlp, d_model),
                p + "mlp.down_proj.weight": (d_model, d_mlp),
            }
        )
    offset = 0
    tensors = {}
    for name, shape in shapes.items():
        size = int(np.prod(shape))
        tensors[name] = (offset + np.arange(size, dtype=np.float32)).reshape(shape)
        offset += size
    return tensors, config


def random_transformer(seed: int = 0, scale: float = 0.3, **overrides):
    """A small random Transformer (ours) with non-trivial norm gains; overrides go to ModelConfig."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from circuits.models import ModelConfig, Transformer

    settings = dict(vocab_size=40, d_model=24, n_layers=3, n_heads=6, n_kv_heads=2, head_dim=4, d_mlp=32)
    settings.update(overrides)
    model = Transformer(ModelConfig(**settings), rngs=nnx.Rngs(seed))
    keys = iter(jax.random.split(jax.random.key(seed + 1), 64))
    for path, variable in nnx.iter_graph(model):
        if isinstance(variable, nnx.Param):
            shape = variable[...].shape
            noise = jax.random.normal(next(keys), shape, jnp.float32)
            is_norm = str(path[-1]).endswith("norm")
            variable[...] = 1.0 + 0.3 * noise if is_norm else scale * noise
    return model


def brute_standins(model, ids: np.ndarray, with_rms: bool = False, normalise: bool = True):
    """float64 stand-ins per layer: embeddings (times the embedding scale) through the model's own MLP blocks only
    (pre- and post-norms with their offsets), RMS-normalised (unless not ``normalise``); with ``with_rms`` also each
    layer's median RMS of the residual before normalising."""
    import jax
    import jax.numpy as jnp

    c = model.config
    offset = c.block.norm_offset
    rms = lambda v: np.sqrt((v * v).mean(-1, keepdims=True))  # noqa: E731
    x = np.asarray(model.tensor("embed"), np.float64)[ids] * (np.sqrt(c.d_model) if c.block.embed_scale else 1.0)
    out, medians = [], []
    for layer in range(c.n_layers):
        out.append(x / rms(x) if normalise else x)
        medians.append(float(np.median(rms(x))))
        if c.attention_only:
            continue
        mlp = jax.tree.map(lambda p: p[layer], model.blocks.mlp)  # this layer's slice of the scanned MLP
        normed = x / np.sqrt(rms(x) ** 2 + c.rms_norm_eps) * (offset + np.asarray(model.tensor("mlp_norm", layer)))
        update = np.asarray(mlp(jnp.asarray(normed[None], jnp.float32))[0], np.float64)
        if c.block.post_norms:
            update = update / np.sqrt(rms(update) ** 2 + c.rms_norm_eps) * (offset + np.asarray(model.tensor("post_mlp_norm", layer)))
        x = x + update
    return (out, medians) if with_rms else out


def dense_heads(model, layer: int, fold: bool = True):
    """float64 per-head matrices (brute force): W_Q [N, M, D], W_K [N, M, D], W_V [N, M, D], W_O [N, D, M], with
    the input norm's gain (offset included) folded into W_Q, W_K, W_V and a post-attention norm's into W_O."""
    c = model.config
    offset = c.block.norm_offset
    gain = offset + np.asarray(model.tensor("attn_norm", layer), np.float64) if fold else np.ones(c.d_model)
    wq = np.asarray(model.tensor("wq", layer), np.float64) * gain[:, None, None, None]
    wk = np.asarray(model.tensor("wk", layer), np.float64) * gain[:, None, None]
    wv = np.asarray(model.tensor("wv", layer), np.float64) * gain[:, None, None]
    wo = np.asarray(model.tensor("wo", layer), np.float64)
    if fold and c.block.post_norms:
        wo = wo * (offset + np.asarray(model.tensor("post_attn_norm", layer), np.float64))
    heads = [(h // c.q_per_kv, h % c.q_per_kv) for h in range(c.n_heads)]
    return (
        np.stack([wq[:, k, g] for k, g in heads]),
        np.stack([wk[:, k] for k, g in heads]),
        np.stack([wv[:, k] for k, g in heads]),
        np.stack([wo[k, g] for k, g in heads]),
    )


def llama_cpp_permute(rows: np.ndarray, n_heads: int) -> np.ndarray:
    """What llama.cpp's converter does to q_proj / k_proj rows: half-split RoPE pairs -> interleaved."""
    out, columns = rows.shape
    return rows.reshape(n_heads, 2, out // n_heads // 2, columns).swapaxes(1, 2).reshape(out, columns)


HF_TO_GGUF = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GEMMA3_TO_GGUF = {
    **HF_TO_GGUF,
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "pre_feedforward_layernorm.weight": "ffn_norm.weight",
    "post_feedforward_layernorm.weight": "post_ffw_norm.weight",
}


def write_gguf(path, hf_model, qtype: str = "F32", arch: str = "llama", rope_freqs=None, drop=(), raw=None) -> None:
    """Write a transformers model as a llama.cpp-style GGUF file, the way llama.cpp's converter does: Q/K rows
    permuted for ``llama`` (not for the NEOX-rotation ``qwen2`` and ``gemma3``), Gemma's norm gains stored as
    ``1 + w``, 2-D weights in ``qtype``.

    ``raw``: a function (shape) -> uint8 blocks used instead of quantizing (for types gguf cannot quantize);
    ``drop``: GGUF tensor names to leave out; ``rope_freqs``: optional f32[D/2] factors.
    """
    import gguf

    c = hf_model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_block_count(c.num_hidden_layers)
    writer.add_context_length(c.max_position_embeddings)
    writer.add_embedding_length(c.hidden_size)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_attention_heads)
    writer.add_head_count_kv(c.num_key_value_heads)
    rope = c.rope_parameters.get("full_attention", c.rope_parameters) if getattr(c, "rope_parameters", None) else {"rope_theta": c.rope_theta}
    writer.add_rope_freq_base(float(rope["rope_theta"]))
    if rope.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_rope_dimension_count(head_dim)
    writer.add_vocab_size(c.vocab_size)
    writer.add_file_type(0)
    names = HF_TO_GGUF
    if arch == "gemma3":  # what llama.cpp writes for Gemma 3: the window and head size, not the layer pattern
        names = GEMMA3_TO_GGUF
        writer.add_sliding_window(c.sliding_window)
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    qt = gguf.GGMLQuantizationType[qtype]
    for name, tensor in hf_model.state_dict().items():
        array = tensor.float().numpy()
        if name == "lm_head.weight" and c.tie_word_embeddings:
            continue
        if name.startswith("model.layers."):
            layer, rest = name[len("model.layers."):].split(".", 1)
            gguf_name = f"blk.{layer}.{names[rest]}"
            if arch in ("llama", "internlm2") and rest == "self_attn.q_proj.weight":
                array = llama_cpp_permute(array, c.num_attention_heads)
            elif arch in ("llama", "internlm2") and rest == "self_attn.k_proj.weight":
                array = llama_cpp_permute(array, c.num_key_value_heads)
        else:
            gguf_name = names[name]
        if arch == "gemma3" and name.endswith("norm.weight"):
            array = array + 1.0
        if gguf_name in drop:
            continue
        if array.ndim == 1 or qt == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(gguf_name, np.ascontiguousarray(array, dtype=np.float32))
        else:
            data = raw(array.shape) if raw is not None else gguf.quants.quantize(np.ascontiguousarray(array), qt)
            writer.add_tensor(gguf_name, data, raw_shape=data.shape, raw_dtype=qt)
    if rope_freqs is not None:
        writer.add_tensor("rope_freqs.weight", np.asarray(rope_freqs, dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def tiny_qwen2_config(**overrides):
    from transformers import Qwen2Config

    settings = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=8,
                    num_key_value_heads=2, max_position_embeddings=1024, rms_norm_eps=1e-5, tie_word_embeddings=False,
                    rope_parameters=dict(rope_type="default", rope_theta=50000.0))
    settings.update(overrides)
    return Qwen2Config(**settings)


def tiny_gemma3_config(**overrides):
    """Six layers (five sliding, one full, as Gemma 3 alternates them), a window of 16, MQA, head_dim 24 != 64 / 4."""
    from transformers import Gemma3TextConfig

    settings = dict(vocab_size=256, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
                    num_key_value_heads=1, head_dim=24, query_pre_attn_scalar=20, sliding_window=16, max_position_embeddings=1024,
                    rms_norm_eps=1e-6,
                    rope_parameters={"full_attention": dict(rope_type="linear", rope_theta=1e6, factor=2.0),
                                     "sliding_attention": dict(rope_type="default", rope_theta=1e4)})
    settings.update(overrides)
    return Gemma3TextConfig(**settings)


def greedy_continuation(model, prompt: list[int], max_new_tokens: int, stop: int | None = None) -> list[int]:
    """Token ids that greedy decoding appends to ``prompt`` (at most ``max_new_tokens``, ending at ``stop``).

    Every step runs the full causal forward on a fixed-length buffer, so the program
    compiles once; positions after the current one are padding that causal attention
    never reads. No KV cache: meant for short checks, not serving.
    """
    buffer = np.zeros((1, len(prompt) + max_new_tokens), dtype=np.int32)
    buffer[0, : len(prompt)] = prompt
    new: list[int] = []
    for position in range(len(prompt), buffer.shape[1]):
        logits = model(buffer)
        token = int(np.argmax(np.asarray(logits[0, position - 1])))
        buffer[0, position] = token
        new.append(token)
        if token == stop:
            break
    return new


def _block_overrides():
    from circuits.models.layout import FAMILY_BLOCKS

    qwen = dict(block=FAMILY_BLOCKS["qwen2"], architecture="qwen2")
    gemma = dict(block=FAMILY_BLOCKS["gemma3"], architecture="gemma3", query_pre_attn_scalar=6.0, sliding_window=5,
                 layer_types=("sliding_attention", "full_attention", "sliding_attention"), local_rope_theta=100.0)
    return qwen, gemma


QWEN_LIKE, GEMMA_LIKE = _block_overrides()
""":func:`random_transformer` overrides for a 3-layer Qwen2-like block (q/k/v biases) and Gemma-3-like block (QK-norm,
post-norms, norm offset, GeGLU, embedding scale, sliding and full layers)."""
