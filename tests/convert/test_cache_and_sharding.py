"""Orbax convert-once cache, sharded forward on 8 fake CPU devices, and the CLI around them."""

import jax
import numpy as np
import pytest
from helpers import random_tokens

import circuits
from circuits.cli import main
from circuits.models import Interventions, MeshError, make_mesh, parse_mesh, shard_tokens


def test_eight_fake_devices_are_available():
    assert jax.device_count() == 8


def test_cache_round_trip_via_cli(make_llama, tmp_path):
    directory, _ = make_llama("src", num_attention_heads=8, num_key_value_heads=4)
    cache = tmp_path / "cache"
    assert main(["convert", str(directory), str(cache)]) == 0
    original = circuits.load(directory, show_progress=False)
    restored = circuits.load(cache)
    tokens = random_tokens(2, 32, 256)
    np.testing.assert_array_equal(np.asarray(restored(tokens)), np.asarray(original(tokens)))
    assert restored.config == original.config
    assert not list(tmp_path.glob(".cache.partial-*"))
    assert circuits.load(cache, dtype="bfloat16").dtype == "bfloat16"


def test_convert_refuses_to_overwrite(make_llama, tmp_path, capsys):
    directory, _ = make_llama("src")
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "keep.txt").write_text("mine")
    assert main(["convert", str(directory), str(cache)]) == 2
    assert "already exists" in capsys.readouterr().err
    assert (cache / "keep.txt").read_text() == "mine"


def test_sharded_logits_equal_unsharded(make_llama, tmp_path):
    directory, _ = make_llama("src", num_attention_heads=8, num_key_value_heads=4, vocab_size=256)
    tokens = random_tokens(4, 40, 256)
    expected = np.asarray(circuits.load(directory, show_progress=False)(tokens))
    mesh = make_mesh(data=2, model=4)
    model = circuits.load(directory, mesh=mesh, show_progress=False)
    wq = model.blocks.attn.wq[...]
    assert wq.sharding.spec[2] == "model"  # KV heads split over the model axis
    assert len(wq.addressable_shards) == 8
    logits = model(shard_tokens(tokens, mesh))
    np.testing.assert_allclose(np.asarray(logits), expected, atol=1e-5, rtol=0)
    ablate = np.zeros((2, 4, 2), bool)
    ablate[1, 2, 1] = True
    interventions = Interventions.none(model.config).ablate(ablate)
    plain = circuits.load(directory, show_progress=False)
    np.testing.assert_allclose(
        np.asarray(model(shard_tokens(tokens, mesh), interventions)),
        np.asarray(plain(tokens, interventions)),
        atol=1e-5,
        rtol=0,
    )


def test_cache_restores_onto_a_mesh(make_llama, tmp_path):
    directory, _ = make_llama("src", num_attention_heads=8, num_key_value_heads=4)
    cache = tmp_path / "cache"
    assert main(["convert", str(directory), str(cache)]) == 0
    mesh = make_mesh(data=1, model=4, devices=jax.devices()[:4])
    model = circuits.load(cache, mesh=mesh)
    assert model.blocks.attn.wk[...].sharding.spec[2] == "model"
    tokens = random_tokens(1, 16, 256)
    np.testing.assert_allclose(
        np.asarray(model(tokens)), np.asarray(circuits.load(directory, show_progress=False)(tokens)), atol=1e-5
    )


def test_mesh_that_does_not_divide_kv_heads(make_llama, capsys):
    directory, _ = make_llama("src", num_attention_heads=8, num_key_value_heads=2)
    with pytest.raises(MeshError, match="2 KV heads"):
        circuits.load(directory, mesh=make_mesh(data=1, model=8), show_progress=False)
    assert main(["info", str(directory), "--mesh", "data=1,model=8"]) == 2
    assert "KV heads" in capsys.readouterr().err


def test_mesh_specs():
    assert parse_mesh("data=2,model=4").shape == {"data": 2, "model": 4}
    with pytest.raises(MeshError, match="needs 9 devices"):
        make_mesh(data=3, model=3)
    with pytest.raises(MeshError, match="write it as"):
        parse_mesh("rows=8")


def test_info_prints_config(make_llama, capsys):
    directory, _ = make_llama("src")
    assert main(["info", str(directory)]) == 0
    out = capsys.readouterr().out
    assert "n_kv_heads: 2" in out and "float32" in out
