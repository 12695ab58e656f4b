"""InternLM2 checkpoints: the fused wqkv unpacks into explicit GQA exactly as InternLM2 packs it."""

import json

import numpy as np
import pytest
from helpers import random_tokens, torch_logits, write_hf_checkpoint

import circuits
from circuits.convert import CheckpointError

LLAMA_TO_INTERNLM2 = {
    "model.embed_tokens.weight": "model.tok_embeddings.weight",
    "model.norm.weight": "model.norm.weight",
    "lm_head.weight": "output.weight",
    "input_layernorm.weight": "attention_norm.weight",
    "self_attn.o_proj.weight": "attention.wo.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "feed_forward.w1.weight",
    "mlp.up_proj.weight": "feed_forward.w3.weight",
    "mlp.down_proj.weight": "feed_forward.w2.weight",
}


def pack_wqkv(q: np.ndarray, k: np.ndarray, v: np.ndarray, n_kv_heads: int) -> np.ndarray:
    """InternLM2's packing: per KV head, its G query heads' rows, then its key rows, then its value rows."""
    d_model = q.shape[1]
    q = q.reshape(n_kv_heads, -1, k.shape[0] // n_kv_heads, d_model)  # [K, G, D, M]
    k = k.reshape(n_kv_heads, 1, -1, d_model)
    v = v.reshape(n_kv_heads, 1, -1, d_model)
    return np.concatenate([q, k, v], axis=1).reshape(-1, d_model)


def internlm2_from_llama(llama_dir, directory, **config_overrides):
    """Write the Llama checkpoint in ``llama_dir`` again in InternLM2's layout."""
    from safetensors.numpy import load_file

    hf = json.loads((llama_dir / "config.json").read_text())
    tensors = load_file(str(llama_dir / "model.safetensors"))
    out = {}
    for name, array in tensors.items():
        if name.startswith("model.layers."):
            layer, rest = name[len("model.layers."):].split(".", 1)
            if rest in LLAMA_TO_INTERNLM2:
                out[f"model.layers.{layer}.{LLAMA_TO_INTERNLM2[rest]}"] = array
        else:
            out[LLAMA_TO_INTERNLM2[name]] = array
    for i in range(hf["num_hidden_layers"]):
        attn = f"model.layers.{i}.self_attn."
        out[f"model.layers.{i}.attention.wqkv.weight"] = pack_wqkv(
            tensors[attn + "q_proj.weight"], tensors[attn + "k_proj.weight"], tensors[attn + "v_proj.weight"],
            hf["num_key_value_heads"],
        )
    config = {
        "architectures": ["InternLM2ForCausalLM"],
        "vocab_size": hf["vocab_size"],
        "hidden_size": hf["hidden_size"],
        "intermediate_size": hf["intermediate_size"],
        "num_hidden_layers": hf["num_hidden_layers"],
        "num_attention_heads": hf["num_attention_heads"],
        "num_key_value_heads": hf["num_key_value_heads"],
        "rms_norm_eps": hf["rms_norm_eps"],
        "rope_theta": 10000.0,
        "rope_scaling": {"type": "dynamic", "factor": 2.0},
        "max_position_embeddings": hf["max_position_embeddings"],
        "bias": False,
        "tie_word_embeddings": hf["tie_word_embeddings"],
    }
    config.update(config_overrides)
    write_hf_checkpoint(directory, out, config)
    return directory


@pytest.mark.parametrize("heads", [(8, 2), (4, 4), (4, 1)])
def test_internlm2_packed_from_llama_gives_llama_logits(make_llama, tmp_path, heads):
    n_heads, n_kv = heads
    llama_dir, reference = make_llama(num_attention_heads=n_heads, num_key_value_heads=n_kv)
    internlm2_dir = internlm2_from_llama(llama_dir, tmp_path / "internlm2")
    model = circuits.load(internlm2_dir, show_progress=False)
    assert model.config.architecture == "internlm2" and model.config.rope_scaling.kind == "dynamic"
    tokens = random_tokens(2, 64, 256, seed=2)  # below max_position_embeddings: dynamic NTK is a no-op
    np.testing.assert_allclose(np.asarray(model(tokens)), torch_logits(reference, tokens), atol=1e-4, rtol=1e-4)


def rotate(x: np.ndarray, positions: np.ndarray, theta: float = 10000.0) -> np.ndarray:
    """Half-split RoPE of x [T, D] (float64)."""
    half = x.shape[-1] // 2
    angles = positions[:, None] * theta ** (-np.arange(half) / half)[None, :]
    cos, sin = np.cos(angles), np.sin(angles)
    return np.concatenate([x[:, :half] * cos - x[:, half:] * sin, x[:, half:] * cos + x[:, :half] * sin], axis=-1)


def test_hand_computed_attention_from_wqkv(tmp_path):
    """One attention layer from a wqkv with distinct Q, K and V: pattern and head outputs by hand."""
    n_kv, g, d, m, vocab, t = 2, 2, 4, 16, 12, 6
    rng = np.random.default_rng(0)
    wq, wk, wv = (rng.normal(size=shape).astype(np.float32) for shape in [(n_kv * g * d, m), (n_kv * d, m), (n_kv * d, m)])
    embed = rng.normal(size=(vocab, m)).astype(np.float32)
    tensors = {
        "model.tok_embeddings.weight": embed,
        "model.norm.weight": np.ones(m, np.float32),
        "output.weight": rng.normal(size=(vocab, m)).astype(np.float32),
        "model.layers.0.attention_norm.weight": np.ones(m, np.float32),
        "model.layers.0.attention.wqkv.weight": pack_wqkv(wq, wk, wv, n_kv),
        "model.layers.0.attention.wo.weight": rng.normal(size=(m, n_kv * g * d)).astype(np.float32),
        "model.layers.0.ffn_norm.weight": np.ones(m, np.float32),
        "model.layers.0.feed_forward.w1.weight": np.zeros((16, m), np.float32),
        "model.layers.0.feed_forward.w3.weight": np.zeros((16, m), np.float32),
        "model.layers.0.feed_forward.w2.weight": np.zeros((m, 16), np.float32),
    }
    config = dict(architectures=["InternLM2ForCausalLM"], vocab_size=vocab, hidden_size=m, intermediate_size=16,
                  num_hidden_layers=1, num_attention_heads=n_kv * g, num_key_value_heads=n_kv, rms_norm_eps=1e-6,
                  rope_theta=10000.0, bias=False)
    write_hf_checkpoint(tmp_path / "one", tensors, config)
    model = circuits.load(tmp_path / "one", show_progress=False)
    tokens = rng.integers(0, vocab, (1, t)).astype(np.int32)
    _, captured = model.run_with_capture(tokens, ("attn_pattern", "z"))

    x = embed[tokens[0]].astype(np.float64)
    x = x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-6)
    positions = np.arange(t, dtype=np.float64)
    for h in range(n_kv * g):
        kv = h // g
        q = rotate(x @ wq[h * d : (h + 1) * d].T, positions)
        k = rotate(x @ wk[kv * d : (kv + 1) * d].T, positions)
        v = x @ wv[kv * d : (kv + 1) * d].T
        logits = q @ k.T / np.sqrt(d) + np.triu(np.full((t, t), -np.inf), 1)
        pattern = np.exp(logits - logits.max(-1, keepdims=True))
        pattern /= pattern.sum(-1, keepdims=True)
        np.testing.assert_allclose(np.asarray(captured["attn_pattern"][0, 0, kv, h % g]), pattern, atol=1e-5)
        np.testing.assert_allclose(np.asarray(captured["z"][0, 0, :, kv, h % g]), pattern @ v, atol=1e-4)


def test_biased_internlm2_is_refused(make_llama, tmp_path):
    llama_dir, _ = make_llama()
    directory = internlm2_from_llama(llama_dir, tmp_path / "biased", bias=True)
    with pytest.raises(CheckpointError) as info:
        circuits.load(directory, show_progress=False)
    assert any("bias is true" in problem for problem in info.value.problems)
