"""Every broken checkpoint gives one CheckpointError that lists all of its problems and a fix."""

import json

import numpy as np
import pytest
from helpers import arange_llama, write_hf_checkpoint

import circuits
from circuits.convert import CheckpointError


def broken(tmp_path, edit=None, config_edit=None):
    tensors, config = arange_llama()
    if edit:
        edit(tensors)
    if config_edit:
        config_edit(config)
    write_hf_checkpoint(tmp_path, tensors, config)
    return tmp_path


def load_error(path) -> CheckpointError:
    with pytest.raises(CheckpointError) as info:
        circuits.load(path, show_progress=False)
    assert "fix:" in str(info.value)
    return info.value


def test_missing_unexpected_and_misshapen_tensors_are_all_listed(tmp_path):
    def edit(t):
        del t["model.layers.1.self_attn.k_proj.weight"]
        t["model.layers.0.self_attn.q_norm.weight"] = np.ones(4, np.float32)
        t["model.layers.0.mlp.up_proj.weight"] = np.ones((11, 8), np.float32)

    error = load_error(broken(tmp_path, edit))
    text = str(error)
    assert "missing tensor model.layers.1.self_attn.k_proj.weight" in text
    assert "unexpected tensor model.layers.0.self_attn.q_norm.weight" in text
    assert "model.layers.0.mlp.up_proj.weight has shape [11, 8], expected [12, 8]" in text
    assert len(error.problems) == 3


def test_untied_config_without_lm_head_is_missing_a_tensor(tmp_path):
    error = load_error(broken(tmp_path, lambda t: t.pop("lm_head.weight")))
    assert error.problems == ["missing tensor lm_head.weight"]


def test_unknown_architecture(tmp_path):
    error = load_error(broken(tmp_path, config_edit=lambda c: c.update(architectures=["GPT2LMHeadModel"])))
    assert "unknown architecture ['GPT2LMHeadModel']" in str(error)
    assert "LlamaForCausalLM" in error.fix


def test_config_that_disagrees_with_weights(tmp_path):
    error = load_error(broken(tmp_path, config_edit=lambda c: c.update(hidden_size=10)))
    assert any("expected" in p and "config.json" in p for p in error.problems)


def test_truncated_file(tmp_path):
    path = broken(tmp_path) / "model.safetensors"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 100])
    error = load_error(tmp_path)
    assert "truncated" in str(error)


def test_corrupt_header(tmp_path):
    path = broken(tmp_path) / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[8:20] = b"\xff" * 12
    path.write_bytes(bytes(data))
    assert "not valid JSON" in str(load_error(tmp_path))


def test_missing_shard_named_by_index(tmp_path):
    directory = broken(tmp_path)
    (directory / "model.safetensors").rename(directory / "model-00001-of-00002.safetensors")
    weight_map = {"model.norm.weight": "model-00001-of-00002.safetensors", "lm_head.weight": "model-00002-of-00002.safetensors"}
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    assert "shard model-00002-of-00002.safetensors named in model.safetensors.index.json is missing" in str(load_error(directory))


def test_no_config(tmp_path):
    directory = broken(tmp_path)
    (directory / "config.json").unlink()
    assert "no config.json" in str(load_error(directory))


def test_biased_llama_is_refused(tmp_path):
    assert "attention_bias" in str(load_error(broken(tmp_path, config_edit=lambda c: c.update(attention_bias=True))))


def test_unknown_rope_type(tmp_path):
    error = load_error(broken(tmp_path, config_edit=lambda c: c.update(rope_parameters={"rope_type": "yarn", "factor": 2.0})))
    assert "yarn" in str(error)


def test_missing_path_and_unknown_format(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file"):
        circuits.load(tmp_path / "nowhere")
    odd = tmp_path / "weights.bin"
    odd.write_bytes(b"0")
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        circuits.load(odd)
