"""Bad Qwen2 and Gemma 3 checkpoints: one clear error each, from the library and from the CLI, nothing written."""

import json

import pytest
from safetensors.numpy import load_file, save_file

import circuits
from circuits.cli import main
from circuits.convert import CheckpointError


def edit_config(directory, **changes):
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps(config))


def drop_tensor(directory, name):
    tensors = load_file(directory / "model.safetensors")
    del tensors[name]
    save_file(tensors, directory / "model.safetensors")


CASES = {
    "gemma3 layer_types too short": ("gemma3", lambda d: edit_config(d, layer_types=["sliding_attention"] * 5),
                                     "layer_types lists 5 layers, but the model has n_layers=6"),
    "gemma3 unknown layer type": ("gemma3", lambda d: edit_config(d, layer_types=["sliding_attention"] * 5 + ["chunked_attention"]),
                                  "unknown attention kinds ['chunked_attention']"),
    "gemma3 soft-capping": ("gemma3", lambda d: edit_config(d, final_logit_softcapping=30.0), "soft-capping"),
    "gemma3 no window": ("gemma3", lambda d: edit_config(d, sliding_window=None), "sliding_window is None"),
    "qwen2 missing bias": ("qwen2", lambda d: drop_tensor(d, "model.layers.1.self_attn.k_proj.bias"),
                           "missing tensor model.layers.1.self_attn.k_proj.bias"),
    "gemma3 missing qk-norm": ("gemma3", lambda d: drop_tensor(d, "model.layers.0.self_attn.q_norm.weight"),
                               "missing tensor model.layers.0.self_attn.q_norm.weight"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_one_clear_error_and_nothing_written(make_hf, tmp_path, capsys, case):
    family, damage, expected = CASES[case]
    directory, _ = make_hf(family)
    damage(directory)
    with pytest.raises(CheckpointError) as info:
        circuits.load(directory, show_progress=False)
    assert expected in str(info.value) and "fix:" in str(info.value) and "\n" not in str(info.value)
    capsys.readouterr()
    assert main(["convert", str(directory), str(tmp_path / "cache")]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and error.startswith("error:") and expected in error and "Traceback" not in error
    assert not (tmp_path / "cache").exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".cache")] == []
