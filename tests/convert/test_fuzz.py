"""Property-based fuzzing of checkpoint readers: every mutated file either loads or raises the project's own
error with a one-line message, quickly. Byte-level mutations (flips, cuts, insertions) and field-aware ones
(JSON values of the safetensors header, config.json and index.json replaced; GGUF header bytes).

``CIRCUITS_FUZZ_EXAMPLES`` sets the examples per target (default 150 in the suite); ``scripts/fuzz.py``
runs a long campaign under a 4 GB memory limit.
"""

import json
import os
import time
from pathlib import Path

import gguf
import numpy as np
from helpers import arange_llama, write_hf_checkpoint
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import circuits
from circuits.convert import CheckpointError
from circuits.models.config import ConfigError
from circuits.models.layout import expected_params

EXAMPLES = int(os.environ.get("CIRCUITS_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="CIRCUITS_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large])
SECONDS = 20

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)


FAMILY_CONFIGS = {
    "qwen2": dict(architectures=["Qwen2ForCausalLM"], vocab_size=16, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, use_sliding_window=True, sliding_window=3, max_window_layers=1,
                  rope_parameters={"rope_type": "default", "rope_theta": 1e6}),
    "gemma3": dict(architectures=["Gemma3ForCausalLM"], vocab_size=16, hidden_size=8, intermediate_size=12, num_hidden_layers=2,
                   num_attention_heads=2, num_key_value_heads=1, head_dim=4, query_pre_attn_scalar=4, sliding_window=3,
                   layer_types=["sliding_attention", "full_attention"],
                   rope_parameters={"full_attention": {"rope_type": "linear", "factor": 8.0, "rope_theta": 1e6},
                                    "sliding_attention": {"rope_type": "default", "rope_theta": 1e4}}),
}


def seed_checkpoint(directory: Path, sharded: bool = False, family: str = "llama") -> Path:
    """A tiny valid checkpoint of ``family`` (optionally with an index.json naming its one shard); Qwen2 and
    Gemma 3 tensors are named and shaped by the family's own name table, filled with distinct values."""
    from circuits.convert.hf_checkpoint import ARCHITECTURES

    if family == "llama":
        tensors, config = arange_llama(n_layers=2)
    else:
        config = FAMILY_CONFIGS[family]
        parser, rules = ARCHITECTURES[config["architectures"][0]]
        parsed, _ = parser(config)
        names = {r.stored_name.format(i=i): r.stored_shape(parsed) for r in rules for i in range(parsed.n_layers)
                 if set(r.outputs) & set(sum(expected_params(parsed), ()))}
        tensors = {name: np.arange(np.prod(shape), dtype=np.float32).reshape(shape) / 100 for name, shape in names.items()}
    write_hf_checkpoint(directory, tensors, config)
    if sharded:
        (directory / "model.safetensors").rename(directory / "model-00001-of-00001.safetensors")
        index = {"metadata": {}, "weight_map": {name: "model-00001-of-00001.safetensors" for name in tensors}}
        (directory / "model.safetensors.index.json").write_text(json.dumps(index))
    return directory


def seed_gguf(path: Path) -> Path:
    """A tiny valid llama GGUF file (arange weights, every required metadata key)."""
    tensors, config = arange_llama(n_layers=2)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_block_count(2)
    writer.add_context_length(64)
    writer.add_embedding_length(config["hidden_size"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(config["num_attention_heads"])
    writer.add_head_count_kv(config["num_key_value_heads"])
    writer.add_key_length(config["head_dim"])
    writer.add_value_length(config["head_dim"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(config["vocab_size"])
    names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    per_layer = {"input_layernorm": "attn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k", "self_attn.v_proj": "attn_v",
                 "self_attn.o_proj": "attn_output", "post_attention_layernorm": "ffn_norm", "mlp.gate_proj": "ffn_gate",
                 "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for name, array in tensors.items():
        if name.startswith("model.layers."):
            layer, rest = name[len("model.layers."):].split(".", 1)
            name = f"blk.{layer}.{per_layer[rest.removesuffix('.weight')]}.weight"
        else:
            name = names[name]
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def assert_loads_or_refuses_clearly(path: Path) -> None:
    """The property: reading every tensor either works or raises the project's own one-line error, in time."""
    start = time.perf_counter()
    try:
        source = circuits.open_weights(path, show_progress=False)
        config = source.config
        global_names, layer_names = expected_params(config)
        for name in global_names:
            assert np.isfinite(source.tensor(name)).all()
        for layer in range(config.n_layers):
            for name in layer_names:
                assert np.isfinite(source.tensor(name, layer)).all()
        event("loaded")
    except (CheckpointError, ConfigError) as err:
        event("refused")
        message = str(err)
        assert message and "\n" not in message and "fix" in message.lower(), message
    assert time.perf_counter() - start < SECONDS


def mutate_bytes(blob: bytes, edits: list[tuple[int, int]], cut: int | None, insert: tuple[int, bytes] | None) -> bytes:
    data = bytearray(blob)
    for position, value in edits:
        data[position % len(data)] = value
    if insert is not None:
        data[insert[0] % len(data) : insert[0] % len(data)] = insert[1]
    if cut is not None:
        data = data[: cut % (len(data) + 1)]
    return bytes(data)


byte_edits = st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=6)
cuts = st.none() | st.integers(0, 2**20)
inserts = st.none() | st.tuples(st.integers(0, 2**16), st.binary(min_size=1, max_size=16))


@FUZZ
@given(edits=byte_edits, cut=cuts, insert=inserts, header_only=st.booleans())
def test_fuzzed_safetensors_bytes(tmp_path_factory, edits, cut, insert, header_only):
    directory = seed_checkpoint(tmp_path_factory.mktemp("st"))
    path = directory / "model.safetensors"
    blob = path.read_bytes()
    if header_only:  # aim at the 8-byte length and the JSON header, where structure lives
        header_end = 8 + int.from_bytes(blob[:8], "little")
        edits = [(position % header_end, value) for position, value in edits]
    path.write_bytes(mutate_bytes(blob, edits, cut, insert))
    assert_loads_or_refuses_clearly(directory)


@FUZZ
@given(target=st.sampled_from(["header", "config", "index"]), choice=st.integers(0, 10**6), value=json_values,
       delete=st.booleans(), family=st.sampled_from(["llama", "qwen2", "gemma3"]))
def test_fuzzed_json_fields(tmp_path_factory, target, choice, value, delete, family):
    directory = seed_checkpoint(tmp_path_factory.mktemp("json"), sharded=target == "index", family=family)
    if target == "header":
        path = directory / "model.safetensors"
        blob = path.read_bytes()
        length = int.from_bytes(blob[:8], "little")
        document, data = json.loads(blob[8 : 8 + length]), blob[8 + length :]
    else:
        path = directory / ("config.json" if target == "config" else "model.safetensors.index.json")
        document = json.loads(path.read_text())
    # pick one place in the document (a top-level key, or a field one level down) and replace or delete it
    places = [(key, None) for key in document] + [(key, sub) for key, item in document.items() if isinstance(item, (dict, list))
                                                  for sub in (item if isinstance(item, dict) else range(len(item)))]
    key, sub = places[choice % len(places)]
    holder, field = (document, key) if sub is None else (document[key], sub)
    if delete and isinstance(holder, dict):
        del holder[field]
    else:
        holder[field] = value
    text = json.dumps(document)
    if target == "header":
        encoded = text.encode()
        path.write_bytes(len(encoded).to_bytes(8, "little") + encoded + data)
    else:
        path.write_text(text)
    assert_loads_or_refuses_clearly(directory)


@FUZZ
@given(edits=byte_edits, cut=cuts, insert=inserts, header_only=st.booleans())
def test_fuzzed_gguf_bytes(tmp_path_factory, edits, cut, insert, header_only):
    path = seed_gguf(tmp_path_factory.mktemp("gguf") / "m.gguf")
    blob = path.read_bytes()
    if header_only:  # metadata and tensor table: the first bytes up to the first tensor name's end
        end = blob.find(b"blk.1.ffn_down.weight") + 40
        edits = [(position % end, value) for position, value in edits]
    path.write_bytes(mutate_bytes(blob, edits, cut, insert))
    assert_loads_or_refuses_clearly(path)


def test_seeds_are_valid():
    """The mutations start from files that load (so a refusal is the mutation's doing)."""
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        assert circuits.open_weights(seed_checkpoint(Path(scratch) / "a")).config.n_layers == 2
        assert circuits.open_weights(seed_checkpoint(Path(scratch) / "b", sharded=True)).config.n_layers == 2
        for family in FAMILY_CONFIGS:
            assert circuits.open_weights(seed_checkpoint(Path(scratch) / family, family=family)).config.architecture == family
        assert circuits.open_weights(seed_gguf(Path(scratch) / "m.gguf")).config.n_layers == 2
