"""Qwen2 and Gemma 3 against transformers' own classes on tiny random configs, from safetensors and from GGUF."""

import numpy as np
import pytest
from helpers import random_tokens, torch_logits, write_gguf

import circuits

QWEN2_CASES = {
    "qwen2-gqa-untied": dict(num_attention_heads=8, num_key_value_heads=2),
    "qwen2-gqa-tied": dict(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2-mha-sliding": dict(num_attention_heads=4, num_key_value_heads=4, num_hidden_layers=3, use_sliding_window=True,
                              sliding_window=12, max_window_layers=1),
}
GEMMA3_CASES = {
    "gemma3-mqa": dict(),  # 6 layers: 5 sliding (window 16) and 1 full, MQA, head_dim 24 != 64 / 4, scale 20 ** -0.5
    "gemma3-gqa-untied": dict(num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                              layer_types=["sliding_attention", "full_attention"] * 3),
}


def relative_error(ours: np.ndarray, reference: np.ndarray) -> float:
    return float(np.abs(ours - reference).max() / np.abs(reference).max())


@pytest.mark.parametrize("family, case", [("qwen2", c) for c in sorted(QWEN2_CASES)] + [("gemma3", c) for c in sorted(GEMMA3_CASES)])
def test_fp32_logits_match_transformers(make_hf, family, case):
    overrides = (QWEN2_CASES | GEMMA3_CASES)[case]
    directory, reference = make_hf(family, case, **overrides)
    tokens = random_tokens(2, 40, 256, seed=1)  # longer than every sliding window above
    model = circuits.load(directory, show_progress=False)
    assert model.config.architecture == family
    expected = torch_logits(reference, tokens)
    assert relative_error(np.asarray(model(tokens)), expected) < 1e-4


def test_qwen2_biases_matter(make_hf):
    """The parity above only covers biases if they change the answer."""
    directory, reference = make_hf("qwen2")
    model = circuits.load(directory, show_progress=False)
    assert float(np.abs(np.asarray(model.tensor("bk", 1))).max()) > 0.05
    tokens = random_tokens(1, 24, 256)
    graphdef_state = model.blocks.attn
    for name in ("bq", "bk", "bv"):
        getattr(graphdef_state, name)[...] = 0.0 * getattr(graphdef_state, name)[...]
    assert relative_error(np.asarray(model(tokens)), torch_logits(reference, tokens)) > 1e-2


def test_gemma3_window_and_layer_kinds_matter(make_hf):
    """With every layer full, or a window as long as the sequence, the logits move: the window and the per-kind RoPE are tested."""
    _, reference = make_hf("gemma3")
    tokens = random_tokens(1, 40, 256)
    expected = torch_logits(reference, tokens)
    for changed in (dict(layer_types=["full_attention"] * 6), dict(sliding_window=64)):
        directory, _ = make_hf("gemma3", "changed", **changed)  # same seed: same weights, other geometry
        assert relative_error(np.asarray(circuits.load(directory, show_progress=False)(tokens)), expected) > 1e-3


@pytest.mark.parametrize("family, overrides", [
    ("qwen2", dict(num_attention_heads=8, num_key_value_heads=2)),
    ("qwen2", dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True)),
    ("gemma3", dict(query_pre_attn_scalar=24)),  # llama.cpp keeps no attention scale: Gemma 3's default, head_dim
])
def test_gguf_written_by_gguf_loads_to_the_same_logits(make_hf, tmp_path, family, overrides):
    _, reference = make_hf(family, **overrides)
    path = tmp_path / f"{family}.gguf"
    write_gguf(path, reference, arch=family)
    tokens = random_tokens(2, 40, 256, seed=2)
    model = circuits.load(path, show_progress=False)
    assert relative_error(np.asarray(model(tokens)), torch_logits(reference, tokens)) < 1e-4


def test_gemma3_gguf_records_the_defaults_it_filled_in(make_hf, tmp_path):
    _, reference = make_hf("gemma3", query_pre_attn_scalar=24)
    write_gguf(tmp_path / "g.gguf", reference, arch="gemma3")
    facts = circuits.provenance(tmp_path / "g.gguf")
    assert "gemma3.attention.sliding_window_pattern=6" in facts["defaults"]
    assert "gemma3.rope.freq_base_swa=10000.0" in facts["defaults"]
    assert "gemma3.attention.query_pre_attn_scalar=24" in facts["defaults"]
    assert "gemma3.attention.sliding_window=" not in facts["defaults"]  # stored in the file


@pytest.mark.parametrize("family", ["qwen2", "gemma3"])
def test_bf16_is_as_accurate_as_transformers_bf16(make_hf, family):
    import torch

    directory, reference = make_hf(family, hidden_size=128, intermediate_size=256)
    tokens = random_tokens(2, 64, 256)
    exact = torch_logits(reference, tokens)
    theirs = torch_logits(reference.to(torch.bfloat16), tokens)
    ours = np.asarray(circuits.load(directory, dtype="bfloat16", show_progress=False)(tokens), np.float32)
    rms = lambda error: float(np.sqrt(np.mean(np.square(error))))  # noqa: E731
    assert rms(ours - exact) <= 1.25 * rms(theirs - exact), (rms(ours - exact), rms(theirs - exact))
