"""Streaming passes read the next layer ahead: the byte ranges asked of the OS are those of the requested layer's
stored tensors (HF safetensors and GGUF), and the passes ask for each layer before they read it."""

import numpy as np
import pytest
from helpers import write_gguf

import circuits
from circuits.analysis.induction import predict_induction
from circuits.analysis.weights import WeightReader


def _recorded(monkeypatch, module) -> list[tuple[int, int]]:
    calls = []
    real = module.read_ahead
    monkeypatch.setattr(module, "read_ahead", lambda mapping, begin, end: (calls.append((begin, end)), real(mapping, begin, end)))
    return calls


def test_safetensors_read_ahead_asks_for_the_layers_own_bytes(make_llama, monkeypatch):
    from circuits.convert import safetensors_file

    directory, _ = make_llama("ahead", max_shard_size="40KB")  # sharded: tensors of one layer may sit in different files
    source = circuits.open_weights(directory, show_progress=False)
    calls = _recorded(monkeypatch, safetensors_file)
    WeightReader(source).read_ahead(1, attention=False, mlp=True)
    stored = [f"model.layers.1.mlp.{name}_proj.weight" for name in ("gate", "up", "down")]
    expected = sorted(source._where[name].entries[name][2:] for name in stored)
    assert sorted(calls) == expected
    calls.clear()
    WeightReader(source).read_ahead(source.config.n_layers)  # past the last layer: nothing
    assert calls == []
    np.testing.assert_array_equal(source.tensor("w_up", 1), source._where[stored[1]].tensor(stored[1]).T)  # reads are unchanged


def test_gguf_read_ahead_asks_for_the_layers_own_bytes(make_llama, tmp_path, monkeypatch):
    from circuits.convert import gguf_file

    _, model = make_llama("gguf")
    write_gguf(tmp_path / "m.gguf", model, "Q8_0")
    source = circuits.open_weights(tmp_path / "m.gguf", show_progress=False)
    calls = _recorded(monkeypatch, gguf_file)
    WeightReader(source).read_ahead(0)
    info = [source.file.tensors[f"blk.0.attn_{name}.weight"] for name in ("q", "k", "v", "output")]
    assert sorted(calls) == sorted((i.offset, i.offset + i.n_bytes) for i in info)


@pytest.mark.parametrize("method", ["prefix-share", "kcomp-token-zgain"])
def test_the_streaming_pass_asks_for_each_layer_before_reading_it(make_llama, monkeypatch, method):
    directory, _ = make_llama("pass", num_hidden_layers=3)
    events = []
    ahead, attention, mlp = WeightReader.read_ahead, WeightReader.attention, WeightReader.mlp

    def record_ahead(self, layer, *, attention=True, mlp=False):
        events.extend([("ahead attention", layer)] * attention + [("ahead mlp", layer)] * mlp)
        return ahead(self, layer, attention=attention, mlp=mlp)

    monkeypatch.setattr(WeightReader, "read_ahead", record_ahead)
    monkeypatch.setattr(WeightReader, "attention", lambda self, layer: (events.append(("attention", layer)), attention(self, layer))[1])
    monkeypatch.setattr(WeightReader, "mlp", lambda self, layer, *a, **k: (events.append(("mlp", layer)), mlp(self, layer, *a, **k))[1])
    predict_induction(circuits.open_weights(directory, show_progress=False), method=method, n_tokens=32, show_progress=False)
    for layer in range(3):
        reads = [i for i, event in enumerate(events) if event == ("mlp", layer)]
        assert reads and events.index(("ahead mlp", layer)) < reads[0]
        if layer:
            assert events.index(("ahead attention", layer)) < events.index(("attention", layer))
