"""GGUF files: dequantization, llama.cpp's Q/K permutation, tied output, rope_freqs, errors.

The reference is transformers' own GGUF loader (which dequantizes with ``gguf`` and undoes
the permutation its own way) and, for unquantized files, the original torch model.
"""

import struct

import gguf
import numpy as np
import pytest
import torch
from helpers import random_tokens, randomize_torch_model, tiny_llama_config, torch_logits, write_gguf

import circuits
from circuits.convert import CheckpointError

# Rows of 256 values so the K-quants (256-value super-blocks) apply to every matrix.
SHAPES = dict(hidden_size=256, intermediate_size=256, num_attention_heads=4, num_key_value_heads=2, vocab_size=256)
QUANTIZED = ["F16", "BF16", "Q8_0", "Q4_0", "Q4_1"]
K_QUANTS = {"Q4_K": (144, [0, 2]), "Q5_K": (176, [0, 2]), "Q6_K": (210, [208])}
"""block bytes and the byte offsets of its float16 scales, which get small finite values."""


def hf_model(seed=0, **overrides):
    from transformers import LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(tiny_llama_config(**{**SHAPES, **overrides})).eval()
    randomize_torch_model(model, seed, scale=0.05)
    return model


def random_k_blocks(qtype: str, seed: int = 0):
    block_bytes, scale_offsets = K_QUANTS[qtype]

    def raw(shape):
        rows, columns = shape
        blocks = np.random.default_rng(seed).integers(0, 256, (rows, columns // 256, block_bytes), dtype=np.uint8)
        for offset in scale_offsets:
            blocks[..., offset : offset + 2] = np.frombuffer(np.float16(2e-4).tobytes(), np.uint8)
        return blocks.reshape(rows, -1)

    return raw


def transformers_gguf_logits(path, tokens):
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()
    return torch_logits(reference, tokens)


@pytest.mark.parametrize("tied", [False, True])
def test_f32_gguf_equals_the_original_model(tmp_path, tied):
    original = hf_model(tie_word_embeddings=tied)
    write_gguf(tmp_path / "m.gguf", original)
    model = circuits.load(tmp_path / "m.gguf", show_progress=False)
    assert model.config.tie_embeddings == tied and model.config.n_kv_heads == 2
    tokens = random_tokens(2, 40, 256, seed=3)
    np.testing.assert_allclose(np.asarray(model(tokens)), torch_logits(original, tokens), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("qtype", QUANTIZED + sorted(K_QUANTS))
def test_dequantized_logits_match_transformers(tmp_path, qtype):
    path = tmp_path / f"m-{qtype}.gguf"
    write_gguf(path, hf_model(), qtype, raw=random_k_blocks(qtype) if qtype in K_QUANTS else None)
    expected_dtype = {"F16": np.float16, "BF16": "bfloat16"}.get(qtype, np.float32)
    assert circuits.open_weights(path).dtype == np.dtype(expected_dtype)
    model = circuits.load(path, dtype="float32", show_progress=False)
    tokens = random_tokens(2, 24, 256, seed=4)
    expected = transformers_gguf_logits(path, tokens)
    assert np.abs(expected).max() > 0.1  # the check below is not vacuous
    np.testing.assert_allclose(np.asarray(model(tokens)), expected, atol=2e-4 * np.abs(expected).max(), rtol=1e-3)


def test_quantized_file_stays_close_to_the_original(tmp_path):
    original = hf_model()
    write_gguf(tmp_path / "q8.gguf", original, "Q8_0")
    tokens = random_tokens(1, 24, 256, seed=5)
    ours = np.asarray(circuits.load(tmp_path / "q8.gguf", show_progress=False)(tokens))
    assert np.abs(ours - torch_logits(original, tokens)).max() < 0.05 * np.abs(ours).max()


def test_rope_freqs_tensor_reproduces_llama3_scaling(tmp_path):
    rope = dict(rope_type="llama3", rope_theta=10000.0, factor=8.0, low_freq_factor=1.0, high_freq_factor=4.0,
                original_max_position_embeddings=64)
    original = hf_model(rope_parameters=rope)
    head_dim = SHAPES["hidden_size"] // SHAPES["num_attention_heads"]
    base = 1.0 / 10000.0 ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    scaled = original.model.rotary_emb.inv_freq.double().numpy()
    write_gguf(tmp_path / "l3.gguf", original, rope_freqs=base / scaled)  # as llama.cpp's converter stores it
    model = circuits.load(tmp_path / "l3.gguf", show_progress=False)
    assert model.config.rope_freq_factors is not None and max(model.config.rope_freq_factors) > 7
    tokens = random_tokens(1, 200, 256, seed=6)
    np.testing.assert_allclose(np.asarray(model(tokens)), torch_logits(original, tokens), atol=2e-4, rtol=1e-4)


def test_internlm2_gguf_reads_like_llama(tmp_path):
    original = hf_model()
    write_gguf(tmp_path / "llama.gguf", original)
    write_gguf(tmp_path / "internlm2.gguf", original, arch="internlm2")
    tokens = random_tokens(1, 16, 256, seed=7)
    llama = circuits.load(tmp_path / "llama.gguf", show_progress=False)
    internlm2 = circuits.load(tmp_path / "internlm2.gguf", show_progress=False)
    assert internlm2.config.architecture == "internlm2"
    np.testing.assert_array_equal(np.asarray(internlm2(tokens)), np.asarray(llama(tokens)))


def load_error(path) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        circuits.load(path, show_progress=False)
    return info.value


def test_unknown_gguf_architecture(tmp_path):
    write_gguf(tmp_path / "g.gguf", hf_model(), arch="gpt2")
    error = load_error(tmp_path / "g.gguf")
    assert "unknown GGUF architecture 'gpt2'" in str(error) and "llama, internlm2" in str(error)


def test_missing_tensor_is_named(tmp_path):
    write_gguf(tmp_path / "m.gguf", hf_model(), drop=("blk.1.attn_k.weight",))
    assert load_error(tmp_path / "m.gguf").problems == ["missing tensor blk.1.attn_k.weight"]


def test_truncated_and_foreign_files(tmp_path):
    write_gguf(tmp_path / "m.gguf", hf_model())
    data = (tmp_path / "m.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    assert "not a readable GGUF file" in str(load_error(tmp_path / "cut.gguf"))
    (tmp_path / "noise.gguf").write_bytes(np.random.default_rng(0).bytes(4096))
    assert "not a readable GGUF file" in str(load_error(tmp_path / "noise.gguf"))


def gguf_bytes(*fields: bytes, n_tensors: int = 0) -> bytes:
    """A GGUF v3 header with the given raw metadata fields (and no tensor table)."""
    return b"GGUF" + struct.pack("<IQQ", 3, n_tensors, len(fields)) + b"".join(fields)


def string(text: str) -> bytes:
    return struct.pack("<Q", len(text)) + text.encode()


def test_a_tiny_file_claiming_huge_arrays_is_refused_at_once(tmp_path):
    import time

    claims = {
        "array.gguf": gguf_bytes(string("tokenizer.ggml.tokens") + struct.pack("<IIQ", 9, 8, 2**62)),
        "scalars.gguf": gguf_bytes(string("x") + struct.pack("<IIQ", 9, 10, 2**40)),
        "key.gguf": gguf_bytes(struct.pack("<Q", 2**60)),
        "fields.gguf": b"GGUF" + struct.pack("<IQQ", 3, 2**50, 2**50),
    }
    for name, blob in claims.items():
        path = tmp_path / name
        path.write_bytes(blob + b"\0" * (128 - len(blob)))
        start = time.perf_counter()
        error = load_error(path)
        assert time.perf_counter() - start < 2 and "not a readable GGUF file" in str(error), name


@pytest.mark.parametrize("field, value, message", [
    ("attention.head_count", 0, "is not a positive whole number"),
    ("block_count", 2.5, "is not a positive whole number"),
    ("attention.layer_norm_rms_epsilon", -1.0, "is not a positive number"),
    ("rope.freq_base", 0.0, "is not a positive number"),
])
def test_impossible_gguf_metadata_is_named(tmp_path, field, value, message, monkeypatch):
    import gguf

    original = gguf.GGUFWriter.add_key_value

    def replace(self, key, val, vtype, *args, **kwargs):
        if key == f"llama.{field}":
            val, vtype = value, (gguf.GGUFValueType.FLOAT32 if isinstance(value, float) else gguf.GGUFValueType.UINT32)
        return original(self, key, val, vtype, *args, **kwargs)

    monkeypatch.setattr(gguf.GGUFWriter, "add_key_value", replace)
    write_gguf(tmp_path / "m.gguf", hf_model())
    monkeypatch.undo()
    error = str(load_error(tmp_path / "m.gguf"))
    assert f"llama.{field}" in error and message in error


def test_an_8_mb_vocabulary_with_broken_metadata_is_refused_in_seconds(tmp_path):
    import time

    path = tmp_path / "big.gguf"
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_array("tokenizer.ggml.tokens", ["a"] * 900_000)  # 8 MB of metadata, no model keys
    writer.add_tensor("x", np.zeros(4, np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    start = time.perf_counter()
    assert "metadata keys missing" in str(load_error(path))
    assert time.perf_counter() - start < 5  # the vocabulary is located, never decoded


@pytest.mark.parametrize("qtype, storage", [("F32", "GGUF, F32"), ("Q8_0", "GGUF, Q8_0, dequantised to float32 on reading")])
def test_provenance_names_the_format_and_one_handle_opens_the_file_once(tmp_path, qtype, storage, monkeypatch):
    from circuits.convert import gguf_checkpoint, open_checkpoint, provenance

    path = tmp_path / "m.gguf"
    write_gguf(path, hf_model(), qtype)
    facts = provenance(path)
    assert facts == {"source": str(path), "file": str(path), "format": storage}
    opened = []
    monkeypatch.setattr(gguf_checkpoint, "open_gguf", lambda p, real=gguf_checkpoint.open_gguf: opened.append(p) or real(p))
    checkpoint = open_checkpoint(path)
    assert checkpoint.provenance() == facts
    assert checkpoint.weights() is checkpoint.reader()  # streamed until a model is loaded ...
    model = checkpoint.load(show_progress=False)
    assert checkpoint.weights() is model  # ... which then serves the weight-only analysis (dequantised once)
    assert checkpoint.config == model.config
    assert len(opened) == 1


@pytest.mark.parametrize("qtype", ["Q8_0", "Q4_K"])
def test_vocabulary_rows_are_dequantised_alone(tmp_path, qtype, monkeypatch):
    """A pass over the vocabulary reads (and dequantises) only the rows it asks for: they equal the same rows of the
    whole dequantised matrix, for the embedding and the unembedding, by slice and by token ids."""
    from circuits.analysis.weights import WeightReader
    from circuits.convert import open_weights

    raw = random_k_blocks(qtype) if qtype in K_QUANTS else None
    write_gguf(tmp_path / "m.gguf", hf_model(), qtype, raw=raw)
    source = open_weights(tmp_path / "m.gguf", show_progress=False)
    ids = np.array([3, 17, 200, 255])
    embed, unembed = np.asarray(source.tensor("embed")), np.asarray(source.tensor("unembed"))
    whole_read = source._read

    def refuse_whole_vocabulary(stored):
        assert stored not in ("token_embd.weight", "output.weight"), f"{stored} dequantised whole"
        return whole_read(stored)

    monkeypatch.setattr(source, "_read", refuse_whole_vocabulary)
    np.testing.assert_array_equal(source.vocab_rows("embed", slice(16, 80)), embed[16:80])
    np.testing.assert_array_equal(source.vocab_rows("embed", ids), embed[ids])
    np.testing.assert_array_equal(source.vocab_rows("unembed", slice(16, 80)), unembed[:, 16:80].T)
    streamed = WeightReader(source).unembed_embed_product()
    loaded = WeightReader(circuits.load(tmp_path / "m.gguf", show_progress=False)).unembed_embed_product()
    np.testing.assert_allclose(np.asarray(streamed), np.asarray(loaded), rtol=1e-5, atol=1e-6)
