"""Logits of our Transformer against transformers' LlamaForCausalLM on the same saved weights."""

import numpy as np
import pytest
import torch
from helpers import random_tokens, torch_logits

import circuits

LONG_PROMPT = 520  # >= 512 tokens, past the dynamic / llama3 context thresholds below

CASES = {
    "mha-untied": dict(num_attention_heads=4, num_key_value_heads=4),
    "gqa4-untied": dict(num_attention_heads=8, num_key_value_heads=2),
    "mqa-tied": dict(num_attention_heads=4, num_key_value_heads=1, tie_word_embeddings=True),
    "gqa4-tied": dict(num_attention_heads=8, num_key_value_heads=2, tie_word_embeddings=True),
    "llama3-rope": dict(
        rope_parameters=dict(
            rope_type="llama3",
            rope_theta=10000.0,
            factor=8.0,
            low_freq_factor=1.0,
            high_freq_factor=4.0,
            original_max_position_embeddings=64,
        )
    ),
    "linear-rope": dict(rope_parameters=dict(rope_type="linear", rope_theta=10000.0, factor=4.0)),
    "dynamic-rope": dict(
        max_position_embeddings=256, rope_parameters=dict(rope_type="dynamic", rope_theta=10000.0, factor=2.0)
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fp32_logits_match_transformers(make_llama, case):
    directory, reference = make_llama(case, **CASES[case])
    tokens = random_tokens(2, LONG_PROMPT, 256, seed=1)
    model = circuits.load(directory, show_progress=False)
    assert model.dtype == np.float32
    ours = np.asarray(model(tokens))
    assert ours.shape == (2, LONG_PROMPT, 256)
    np.testing.assert_allclose(ours, torch_logits(reference, tokens), atol=1e-4, rtol=0)


def test_rope_scaling_changes_logits(make_llama):
    """The long-context cases above only test something if scaling changes the answer."""
    plain_dir, _ = make_llama("plain")
    scaled_dir, _ = make_llama("scaled", **CASES["llama3-rope"])
    tokens = random_tokens(1, LONG_PROMPT, 256)
    plain = np.asarray(circuits.load(plain_dir, show_progress=False)(tokens))
    scaled = np.asarray(circuits.load(scaled_dir, show_progress=False)(tokens))
    assert np.abs(plain - scaled).max() > 1e-2


def test_sharded_checkpoint_matches_single_file(make_llama):
    directory, reference = make_llama("sharded", max_shard_size="40KB")
    assert (directory / "model.safetensors.index.json").is_file()
    assert len(list(directory.glob("*.safetensors"))) > 2
    tokens = random_tokens(2, 64, 256)
    for entry in (directory, directory / "model.safetensors.index.json"):
        model = circuits.load(entry, show_progress=False)
        np.testing.assert_allclose(np.asarray(model(tokens)), torch_logits(reference, tokens), atol=1e-4, rtol=0)


def test_bf16_checkpoint_keeps_its_dtype_and_upcasts_exactly(make_llama):
    from transformers import LlamaForCausalLM

    directory, _ = make_llama("bf16", dtype=torch.bfloat16)
    reference = LlamaForCausalLM.from_pretrained(directory, dtype=torch.float32).eval()  # RoPE buffers in f32
    tokens = random_tokens(2, 48, 256)
    native = circuits.load(directory, show_progress=False)
    assert native.dtype == "bfloat16"
    assert native.blocks.attn.wq[...].dtype == "bfloat16"
    upcast = circuits.load(directory, dtype="float32", show_progress=False)
    expected = torch_logits(reference, tokens)
    np.testing.assert_allclose(np.asarray(upcast(tokens)), expected, atol=1e-4, rtol=0)
    bf16_logits = np.asarray(native(tokens))
    assert np.abs(bf16_logits - expected).max() < 0.1 * np.abs(expected).max()


def test_numpy_and_jax_tokens_give_same_logits(make_llama):
    import jax.numpy as jnp

    directory, _ = make_llama()
    model = circuits.load(directory, show_progress=False)
    tokens = random_tokens(1, 16, 256)
    np.testing.assert_array_equal(np.asarray(model(tokens)), np.asarray(model(jnp.asarray(tokens))))


@pytest.mark.parametrize(
    "tokens, message",
    [
        (np.zeros((4,), np.int32), "shape"),
        (np.zeros((1, 4), np.float32), "integers"),
        (np.full((1, 4), 999, np.int32), "token ids"),
    ],
)
def test_bad_tokens_are_refused(make_llama, tokens, message):
    directory, _ = make_llama()
    model = circuits.load(directory, show_progress=False)
    with pytest.raises((ValueError, TypeError), match=message):
        model(tokens)


def test_bf16_is_as_accurate_as_transformers_bf16(make_llama):
    """Same random GQA weights, 2 x 320 tokens: the error of our bf16 logits against the float32 reference is at
    most 1.25x that of transformers' own bf16 forward (RMS over all logits)."""
    directory, reference = make_llama("gqa", hidden_size=128, intermediate_size=256, num_hidden_layers=4,
                                      num_attention_heads=8, num_key_value_heads=2)
    tokens = random_tokens(2, 320, 256)
    exact = torch_logits(reference, tokens)
    theirs = torch_logits(reference.to(torch.bfloat16), tokens)
    ours = np.asarray(circuits.load(directory, dtype="bfloat16", show_progress=False)(tokens), np.float32)
    rms = lambda error: float(np.sqrt(np.mean(np.square(error))))  # noqa: E731
    ours_error, theirs_error = rms(ours - exact), rms(theirs - exact)
    print(f"bf16 logits RMS error vs float32: ours {ours_error:.4g}, transformers {theirs_error:.4g} ({ours_error / theirs_error:.2f}x)")
    assert ours_error <= 1.25 * theirs_error, (ours_error, theirs_error)
