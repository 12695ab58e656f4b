"""Every canonical element comes from the right stored element (arange-filled weights expose permutations)."""

import jax.numpy as jnp
import numpy as np
import pytest
from helpers import arange_llama, write_hf_checkpoint

import circuits
from circuits.convert import HFCheckpoint


@pytest.mark.parametrize("tied", [False, True])
def test_canonical_elements_come_from_hf_elements(tmp_path, tied):
    tensors, config = arange_llama(tied=tied)
    write_hf_checkpoint(tmp_path, tensors, config)
    source = HFCheckpoint(tmp_path)
    c = source.config
    K, G, D, M = c.n_kv_heads, c.q_per_kv, c.head_dim, c.d_model
    for layer in range(c.n_layers):
        p = f"model.layers.{layer}."
        q, k, v, o = (tensors[p + f"self_attn.{n}_proj.weight"] for n in "qkvo")
        wq, wk, wv, wo = (source.tensor(n, layer) for n in ("wq", "wk", "wv", "wo"))
        for m in range(M):
            for kv in range(K):
                for d in range(D):
                    assert wk[m, kv, d] == k[kv * D + d, m]
                    assert wv[m, kv, d] == v[kv * D + d, m]
                    for g in range(G):
                        head = kv * G + g
                        assert wq[m, kv, g, d] == q[head * D + d, m]
                        assert wo[kv, g, d, m] == o[m, head * D + d]
        np.testing.assert_array_equal(source.tensor("w_gate", layer), tensors[p + "mlp.gate_proj.weight"].T)
        np.testing.assert_array_equal(source.tensor("w_down", layer), tensors[p + "mlp.down_proj.weight"].T)
        np.testing.assert_array_equal(source.tensor("attn_norm", layer), tensors[p + "input_layernorm.weight"])
        np.testing.assert_array_equal(source.tensor("mlp_norm", layer), tensors[p + "post_attention_layernorm.weight"])
    model = circuits.load(tmp_path, show_progress=False)
    np.testing.assert_array_equal(np.asarray(model.embed[...]), tensors["model.embed_tokens.weight"])
    expected_unembed = tensors["model.embed_tokens.weight" if tied else "lm_head.weight"].T
    np.testing.assert_array_equal(np.asarray(model.unembedding()), expected_unembed)
    assert (model.unembed is None) == tied
    np.testing.assert_array_equal(np.asarray(model.blocks.attn.wq[...][1]), source.tensor("wq", 1))


def test_stacked_layers_keep_their_order(tmp_path):
    tensors, config = arange_llama(n_layers=3)
    write_hf_checkpoint(tmp_path, tensors, config)
    model = circuits.load(tmp_path, show_progress=False)
    norms = np.asarray(model.blocks.attn_norm[...])
    for layer in range(3):
        np.testing.assert_array_equal(norms[layer], tensors[f"model.layers.{layer}.input_layernorm.weight"])
    assert model.blocks.attn.wo[...].shape == (3, 2, 3, 4, 8)


def test_dtype_argument_accepts_names_and_dtypes(tmp_path):
    tensors, config = arange_llama()
    write_hf_checkpoint(tmp_path, tensors, config)
    assert circuits.load(tmp_path, dtype="bfloat16", show_progress=False).dtype == jnp.bfloat16
    assert circuits.load(tmp_path, dtype=jnp.float16, show_progress=False).dtype == jnp.float16
    with pytest.raises(ValueError, match="unknown dtype"):
        circuits.load(tmp_path, dtype="float77", show_progress=False)
