"""Helpers shared by the tests: tiny random HF Llama models and token batches."""

import numpy as np
import pytest


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


@pytest.fixture
def make_llama(tmp_path):
    """make_llama(name, dtype=torch.float32, max_shard_size=None, **config) -> (directory, torch model in eval mode)."""
    import torch
    from transformers import LlamaForCausalLM

    def make(name: str = "llama", dtype=torch.float32, max_shard_size=None, seed: int = 0, **overrides):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(tiny_llama_config(**overrides)).eval()
        randomize_torch_model(model, seed)
        model = model.to(dtype)
        directory = tmp_path / name
        kwargs = {"max_shard_size": max_shard_size} if max_shard_size else {}
        model.save_pretrained(directory, **kwargs)
        return directory, model

    return make


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
            is_norm = path[-1] in ("attn_norm", "mlp_norm", "final_norm")
            variable[...] = 1.0 + 0.3 * noise if is_norm else scale * noise
    return model


def dense_heads(model, layer: int, fold: bool = True):
    """float64 per-head matrices (brute force): W_Q [N, M, D], W_K [N, M, D], W_V [N, M, D], W_O [N, D, M]."""
    c = model.config
    gain = np.asarray(model.tensor("attn_norm", layer), np.float64) if fold else np.ones(c.d_model)
    wq = np.asarray(model.tensor("wq", layer), np.float64) * gain[:, None, None, None]
    wk = np.asarray(model.tensor("wk", layer), np.float64) * gain[:, None, None]
    wv = np.asarray(model.tensor("wv", layer), np.float64) * gain[:, None, None]
    wo = np.asarray(model.tensor("wo", layer), np.float64)
    heads = [(h // c.q_per_kv, h % c.q_per_kv) for h in range(c.n_heads)]
    return (
        np.stack([wq[:, k, g] for k, g in heads]),
        np.stack([wk[:, k] for k, g in heads]),
        np.stack([wv[:, k] for k, g in heads]),
        np.stack([wo[k, g] for k, g in heads]),
    )
