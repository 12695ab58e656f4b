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


def rewrite_header(path, edit) -> None:
    """Re-encode ``path``'s safetensors header after ``edit(header)``, keeping its data bytes."""
    data = path.read_bytes()
    length = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + length])
    text = edit(header)
    encoded = (text if isinstance(text, str) else json.dumps(header)).encode()
    path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data[8 + length :])


def first_two(header):
    names = sorted((n for n in header if n != "__metadata__"), key=lambda n: header[n]["data_offsets"][0])
    return header[names[0]], header[names[1]]


@pytest.mark.parametrize("case, edit, message", [
    ("negative offset", lambda h: first_two(h)[0].update(data_offsets=[-4, first_two(h)[0]["data_offsets"][1]]), "data_offsets"),
    ("overlap", lambda h: first_two(h)[1].update(data_offsets=[first_two(h)[1]["data_offsets"][0] - 4, first_two(h)[1]["data_offsets"][1] - 4]),
     "overlapping or missing"),
    ("integer dtype", lambda h: first_two(h)[0].update(dtype="I32"), "not a floating-point weight type"),
    ("fractional shape", lambda h: first_two(h)[0].update(shape=[64.7]), "not a list of non-negative integers"),
    ("shape 1e400", lambda h: json.dumps(h).replace('"shape": [', '"shape": [1e400, ', 1), "not a list of non-negative integers"),
    ("shape 10**400", lambda h: first_two(h)[0].update(shape=[10**400]), "the file is corrupt"),
    ("dtype as a list", lambda h: first_two(h)[0].update(dtype=["F32"]), "is not a string"),
    ("missing shape", lambda h: first_two(h)[0].pop("shape"), "not dtype, shape and data_offsets"),
    ("list header", lambda h: "[1, 2, 3]", "not an object"),
    ("null header", lambda h: "null", "not an object"),
    ("deep nesting", lambda h: "[" * 100000 + "]" * 100000, "not valid JSON"),
])
def test_safetensors_headers_are_validated_like_the_reference(tmp_path, case, edit, message):
    directory = broken(tmp_path)
    rewrite_header(directory / "model.safetensors", edit)
    assert message in str(load_error(directory)), case



def test_trailing_bytes_are_refused(tmp_path):
    path = broken(tmp_path) / "model.safetensors"
    path.write_bytes(path.read_bytes() + b"\0" * 16)
    assert "16 bytes after the last tensor" in str(load_error(tmp_path))


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_index_cannot_name_files_outside_the_checkpoint(tmp_path, shard):
    directory = broken(tmp_path / "model")
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"model.norm.weight": shard}}))
    error = str(load_error(directory))
    assert "outside the checkpoint directory" in error and "bytes" not in error


def test_symlinked_shard_leading_out_is_refused(tmp_path):
    directory = broken(tmp_path / "model")
    (tmp_path / "elsewhere.safetensors").write_bytes((directory / "model.safetensors").read_bytes())
    (directory / "model.safetensors").unlink()
    (directory / "model.safetensors").symlink_to(tmp_path / "elsewhere.safetensors")
    (directory / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"model.norm.weight": "model.safetensors"}}))
    assert "outside the checkpoint directory" in str(load_error(directory))


@pytest.mark.parametrize("index", ["[1, 2]", '{"weight_map": ["a"]}', '{"weight_map": {"x": 3}}', "{not json"])
def test_index_of_the_wrong_type_is_named(tmp_path, index):
    directory = broken(tmp_path)
    (directory / "model.safetensors.index.json").write_text(index)
    assert "model.safetensors.index.json" in str(load_error(directory))


@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_non_finite_weights_are_refused_with_the_tensor_name(tmp_path, value):
    def poison(tensors):
        tensors["model.layers.1.self_attn.k_proj.weight"][2, 3] = value

    directory = broken(tmp_path, poison)
    assert "tensor model.layers.1.self_attn.k_proj.weight holds 1 NaN or infinite values" in str(load_error(directory))
    with pytest.raises(CheckpointError, match="k_proj"):
        from circuits.analysis import predict_induction

        predict_induction(circuits.open_weights(directory))


@pytest.mark.parametrize("field, value, message", [
    ("num_attention_heads", 0, "n_heads must be positive"),
    ("num_attention_heads", 2.5, "whole number"),
    ("rms_norm_eps", 0.0, "rms_norm_eps must be a positive number"),
    ("rope_theta", -1.0, "rope_theta must be a positive number"),
    ("rope_scaling", {"rope_type": "linear", "factor": -2.0}, "invalid RoPE scaling"),
    ("vocab_size", "16", "whole number"),
    ("rope_scaling", ["linear"], "config.json is invalid"),
])
def test_impossible_config_values_are_named(tmp_path, field, value, message):
    directory = broken(tmp_path, config_edit=lambda config: config.update({field: value}))
    error = str(load_error(directory))
    assert message in error and "config.json" in error


def test_a_config_claiming_huge_layer_counts_is_refused_at_once(tmp_path):
    import time

    for layers in (10**3, 10**8):
        directory = broken(tmp_path / str(layers), config_edit=lambda config: config.update(num_hidden_layers=layers))
        start = time.perf_counter()
        error = str(load_error(directory))
        assert time.perf_counter() - start < 5 and f"claims {layers} layers" in error and len(error) < 1000


def test_config_json_of_the_wrong_type_is_named(tmp_path):
    directory = broken(tmp_path)
    (directory / "config.json").write_text("[1, 2]")
    assert "config.json holds a JSON list" in str(load_error(directory))


def test_a_broken_link_without_an_index_does_not_blame_an_index(tmp_path):
    directory = broken(tmp_path)
    (directory / "extra.safetensors").symlink_to(tmp_path / "gone.safetensors")
    error = str(load_error(directory))
    assert "shard extra.safetensors found in the directory is missing (a broken link)" in error and "index" not in error
