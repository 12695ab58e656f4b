"""GGUF (llama.cpp) files of the ``llama``, ``internlm2``, ``qwen2`` and ``gemma3`` architectures as a tensor source.

The file is memory-mapped by the ``gguf`` package and each tensor is dequantized to
float32 only when read, so a quantized 8B file is streamed layer by layer like a
safetensors checkpoint. What differs between architectures is data, in :data:`GGUF_FAMILIES`:

- llama.cpp stores the query and key rows of ``llama`` / ``internlm2`` heads with RoPE pairs interleaved
  (``(i, i + D/2)`` -> adjacent rows); they are put back in HF's half-split order here. ``qwen2`` and
  ``gemma3`` use llama.cpp's NEOX rotation and are stored half-split already;
- llama.cpp bakes Gemma's ``1 + w`` norm offset into the stored gains; it is taken out again, so GGUF and HF
  checkpoints give the same canonical weights;
- hyper-parameters a GGUF file may leave out take the architecture's documented default, and every value so
  filled in is recorded (:attr:`GGUFCheckpoint.defaults`, shown in the provenance).
"""

from __future__ import annotations

import collections
import dataclasses
from pathlib import Path
from typing import Any, Callable

import numpy as np

from circuits.convert.dtypes import resolve_dtype
from circuits.convert.errors import CheckpointError
from circuits.convert.gguf_file import ArrayField, GGUFFile, GGUFStructureError
from circuits.convert.layout import (
    bias_rows,
    kv_bias_rows,
    kv_rows,
    linear_transpose,
    output_columns,
    query_rows,
    rule,
)
from circuits.convert.table_checkpoint import TableCheckpoint
from circuits.models.config import ConfigError, ModelConfig, RopeScaling, is_positive_number, is_whole_number
from circuits.models.layout import FAMILY_BLOCKS

ROPE_FREQS = "rope_freqs.weight"
FIX = "re-download the GGUF file or re-create it with llama.cpp's convert_hf_to_gguf.py"


def _gemma3_extras(key: Callable[[str], Any], n_layers: int, head_dim: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """(ModelConfig fields, the ones filled from defaults) for Gemma 3: llama.cpp stores the window but not the
    layer pattern, the sliding layers' RoPE base or the attention scale, whose documented defaults are a full
    layer every 6th, base 10000 and ``query_pre_attn_scalar = head_dim``."""
    defaults = {}

    def value(name: str, default, valid: Callable[[Any], bool], what: str):
        found = key(name)
        if found is None:
            defaults[name] = default
            return default
        if not valid(found):
            raise ConfigError(f"metadata gemma3.{name} = {found!r} is not {what}")
        return found

    whole = lambda v: is_whole_number(v) and v > 0  # noqa: E731
    pattern = value("attention.sliding_window_pattern", 6, whole, "a positive whole number")
    fields = {
        "layer_types": tuple("sliding_attention" if (i + 1) % pattern else "full_attention" for i in range(n_layers)),
        "sliding_window": value("attention.sliding_window", 4096, whole, "a positive whole number"),
        "local_rope_theta": float(value("rope.freq_base_swa", 10000.0, is_positive_number, "a positive number")),
        "query_pre_attn_scalar": float(value("attention.query_pre_attn_scalar", head_dim, is_positive_number, "a positive number")),
    }
    return fields, defaults


def _no_extras(key, n_layers: int, head_dim: int) -> tuple[dict[str, Any], dict[str, Any]]:
    return {}, {}


@dataclasses.dataclass(frozen=True)
class GGUFFamily:
    """What one GGUF architecture needs beyond the shared metadata keys and tensor names.

    ``interleaved_rope``: llama.cpp permuted the Q/K rows (its NORM rotation); ``extras``: (metadata lookup,
    n_layers, head_dim) -> (further ModelConfig fields, {metadata name: default used}).
    """

    interleaved_rope: bool
    extras: Callable[..., tuple[dict[str, Any], dict[str, Any]]] = _no_extras


GGUF_FAMILIES: dict[str, GGUFFamily] = {
    "llama": GGUFFamily(interleaved_rope=True),
    "internlm2": GGUFFamily(interleaved_rope=True),  # wqkv is split at conversion
    "qwen2": GGUFFamily(interleaved_rope=False),
    "gemma3": GGUFFamily(interleaved_rope=False, extras=_gemma3_extras),
}
ARCHITECTURES = tuple(GGUF_FAMILIES)


def unpermute_rope_rows(array: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's Q/K row permutation: [H*D, M] with pairs interleaved -> HF half-split rows."""
    rows, columns = array.shape
    head_dim = rows // n_heads
    return array.reshape(n_heads, head_dim // 2, 2, columns).swapaxes(1, 2).reshape(rows, columns)


def _stored_gain(array: np.ndarray, config: ModelConfig) -> np.ndarray:
    """A gain as llama.cpp stores it (the ``1 + w`` of Gemma already added) -> the canonical, HF-convention w."""
    return array - np.float32(config.block.norm_offset)


def gguf_rules(family: GGUFFamily) -> tuple:
    """llama.cpp's tensor names for ``family``: one table serves every architecture, since a rule is only
    expected when the block has its part (biases for qwen2, QK-norm and post-norms for gemma3)."""
    if family.interleaved_rope:
        query = lambda array, c: query_rows(unpermute_rope_rows(array, c.n_heads), c)  # noqa: E731
        key = lambda array, c: kv_rows(unpermute_rope_rows(array, c.n_kv_heads), c)  # noqa: E731
    else:
        query, key = query_rows, kv_rows
    d_model = lambda c: (c.d_model,)  # noqa: E731
    return (
        rule("token_embd.weight", lambda c: (c.vocab_size, c.d_model), "embed"),
        rule("output_norm.weight", d_model, "final_norm", _stored_gain),
        rule("output.weight", lambda c: (c.vocab_size, c.d_model), "unembed", linear_transpose),
        rule("blk.{i}.attn_norm.weight", d_model, "attn_norm", _stored_gain),
        rule("blk.{i}.attn_q.weight", lambda c: (c.n_heads * c.head_dim, c.d_model), "wq", query),
        rule("blk.{i}.attn_k.weight", lambda c: (c.n_kv_heads * c.head_dim, c.d_model), "wk", key),
        rule("blk.{i}.attn_v.weight", lambda c: (c.n_kv_heads * c.head_dim, c.d_model), "wv", kv_rows),
        rule("blk.{i}.attn_q.bias", lambda c: (c.n_heads * c.head_dim,), "bq", bias_rows),
        rule("blk.{i}.attn_k.bias", lambda c: (c.n_kv_heads * c.head_dim,), "bk", kv_bias_rows),
        rule("blk.{i}.attn_v.bias", lambda c: (c.n_kv_heads * c.head_dim,), "bv", kv_bias_rows),
        rule("blk.{i}.attn_q_norm.weight", lambda c: (c.head_dim,), "q_norm", _stored_gain),
        rule("blk.{i}.attn_k_norm.weight", lambda c: (c.head_dim,), "k_norm", _stored_gain),
        rule("blk.{i}.attn_output.weight", lambda c: (c.d_model, c.n_heads * c.head_dim), "wo", output_columns),
        rule("blk.{i}.post_attention_norm.weight", d_model, "post_attn_norm", _stored_gain),
        rule("blk.{i}.ffn_norm.weight", d_model, "mlp_norm", _stored_gain),
        rule("blk.{i}.ffn_gate.weight", lambda c: (c.d_mlp, c.d_model), "w_gate", linear_transpose),
        rule("blk.{i}.ffn_up.weight", lambda c: (c.d_mlp, c.d_model), "w_up", linear_transpose),
        rule("blk.{i}.ffn_down.weight", lambda c: (c.d_model, c.d_mlp), "w_down", linear_transpose),
        rule("blk.{i}.post_ffw_norm.weight", d_model, "post_mlp_norm", _stored_gain),
    )


def open_gguf(path: Path) -> GGUFFile:
    """The GGUF file at ``path``, walked and checked (:class:`GGUFFile`); damage raises :class:`CheckpointError`."""
    import gguf

    try:
        return GGUFFile(path, {int(kind): sizes for kind, sizes in gguf.GGML_QUANT_SIZES.items()})
    except GGUFStructureError as err:
        raise CheckpointError(path, [f"not a readable GGUF file: {err}"], FIX) from err
    except (OSError, ValueError) as err:  # unreadable, or empty (mmap refuses a zero-length file)
        raise CheckpointError(path, [f"cannot read the file ({getattr(err, 'strerror', None) or err})"],
                              "check the path and its permissions") from err


def scalar_metadata(file: GGUFFile) -> dict[str, Any]:
    """GGUF metadata fields that are single values (strings, numbers); arrays such as the
    tokenizer's vocabulary are left in the file, to be decoded only when needed."""
    return {name: value for name, value in file.metadata.items() if not isinstance(value, ArrayField)}


def gguf_config(
    meta: dict[str, Any], tensor_shapes: dict[str, tuple[int, ...]], rope_freqs: np.ndarray | None = None
) -> tuple[ModelConfig, list[str], dict[str, Any]]:
    """(ModelConfig, problems, {metadata name: default used}) from GGUF metadata, the stored tensor shapes and
    the optional ``rope_freqs`` tensor; raises :class:`ConfigError` when metadata keys are missing."""
    arch = meta.get("general.architecture")
    if arch not in GGUF_FAMILIES:
        raise ConfigError(f"unknown GGUF architecture {arch!r}; this tool reads {', '.join(ARCHITECTURES)} GGUF files")
    required = ("block_count", "embedding_length", "feed_forward_length", "attention.head_count", "attention.layer_norm_rms_epsilon")
    missing = [f"{arch}.{key}" for key in required if f"{arch}.{key}" not in meta]
    if missing:
        raise ConfigError(f"metadata keys missing: {', '.join(missing)}")
    problems = []
    key = lambda name, default=None: meta.get(f"{arch}.{name}", default)  # noqa: E731

    def count(name: str, default=None) -> int:
        value = key(name, default)
        if not (is_whole_number(value) and value > 0):
            raise ConfigError(f"metadata {arch}.{name} = {value!r} is not a positive whole number")
        return value

    def number(name: str, default=None) -> float:
        value = key(name, default)
        if not is_positive_number(value):
            raise ConfigError(f"metadata {arch}.{name} = {value!r} is not a positive number")
        return float(value)

    d_model, n_heads, n_layers = count("embedding_length"), count("attention.head_count"), count("block_count")
    head_dim = count("attention.key_length", d_model // n_heads)
    if int(key("rope.dimension_count", head_dim)) != head_dim:
        problems.append(f"partial rotary embeddings ({key('rope.dimension_count')} of {head_dim} dims) are not supported")
    scaling_kind = key("rope.scaling.type", "none")
    if scaling_kind not in ("none", "linear"):
        problems.append(f"RoPE scaling {scaling_kind!r} is not supported in GGUF files (only none and linear)")
    scaling = RopeScaling("linear", number("rope.scaling.factor", 1.0)) if scaling_kind == "linear" else RopeScaling()
    vocab = key("vocab_size") or tensor_shapes.get("token_embd.weight", (0,))[0]
    if rope_freqs is not None and rope_freqs.shape != (head_dim // 2,):
        problems.append(f"tensor {ROPE_FREQS} has shape {list(rope_freqs.shape)}, expected [{head_dim // 2}]")
        rope_freqs = None
    extras, defaults = GGUF_FAMILIES[arch].extras(key, n_layers, head_dim)
    config = ModelConfig(
        vocab_size=vocab,
        d_model=d_model,
        n_layers=n_layers,
        n_heads=n_heads,
        n_kv_heads=count("attention.head_count_kv", n_heads),
        head_dim=head_dim,
        d_mlp=count("feed_forward_length"),
        rms_norm_eps=number("attention.layer_norm_rms_epsilon"),
        rope_theta=number("rope.freq_base", 10000.0),
        rope_scaling=scaling,
        max_position_embeddings=count("context_length", 2048),
        tie_embeddings="output.weight" not in tensor_shapes,
        architecture=arch,
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id") if is_whole_number(meta.get("tokenizer.ggml.bos_token_id")) else None,
        rope_freq_factors=None if rope_freqs is None else tuple(float(x) for x in rope_freqs),
        block=FAMILY_BLOCKS[arch],
        **extras,
    )
    return config, problems, {f"{arch}.{name}": value for name, value in defaults.items()}


class GGUFCheckpoint(TableCheckpoint):
    """Canonical tensors of a GGUF file, dequantized to float32 one tensor at a time.

    Any quantization the ``gguf`` package can dequantize is read (F32, F16, BF16, Q8_0,
    Q4_0, Q4_1, Q5_0, Q5_1 and the K-quants among them). ``metadata`` holds the single-valued
    fields; ``file`` (a :class:`GGUFFile`) the rest, such as the tokenizer's vocabulary.
    """

    def __init__(self, path: str | Path):
        path = Path(path)
        self.file = open_gguf(path)
        self._tensors = self.file.tensors
        shapes = {name: info.shape for name, info in self._tensors.items()}
        self.metadata = scalar_metadata(self.file)
        rope_freqs = self._read(ROPE_FREQS) if ROPE_FREQS in self._tensors else None
        try:
            config, problems, self.defaults = gguf_config(self.metadata, shapes, rope_freqs)
        except ConfigError as err:
            raise CheckpointError(path, [str(err)], FIX if "missing" in str(err) else
                                  f"convert the model to a GGUF or safetensors file of a family this tool reads ({', '.join(ARCHITECTURES)})") from err
        rules = gguf_rules(GGUF_FAMILIES[config.architecture])
        super().__init__(path, config, rules, shapes, self._read, problems, FIX, optional=(ROPE_FREQS,), config_name="GGUF metadata")

    def _read(self, name: str) -> np.ndarray:
        """Stored tensor ``name`` dequantized to float32, in numpy order ([out, in] for matrices)."""
        import gguf

        info = self._tensors[name]
        kind = gguf.GGMLQuantizationType(info.kind)
        try:
            array = gguf.quants.dequantize(self.file.raw(name, gguf.quants.quant_shape_to_byte_shape), kind)
        except NotImplementedError as err:
            raise CheckpointError(self.file.path, [f"tensor {name} is stored as {kind.name}, which cannot be dequantized here"],
                                  "convert the model to F16, BF16, Q8_0 or a K-quant GGUF") from err
        return np.asarray(array, dtype=np.float32).reshape(info.shape)

    def _read_ahead(self, stored: str) -> None:
        self.file.read_ahead(stored)

    def _read_rows(self, name: str, rows: slice | np.ndarray) -> np.ndarray:
        """Rows of matrix ``name`` dequantized to float32: only their blocks (a quantised row is whole blocks)."""
        import gguf

        info = self._tensors[name]
        kind = gguf.GGMLQuantizationType(info.kind)
        packed = self.file.raw(name, gguf.quants.quant_shape_to_byte_shape)[rows]
        return np.asarray(gguf.quants.dequantize(packed, kind), dtype=np.float32).reshape(-1, info.shape[-1])

    def _kind(self, name: str) -> str:
        import gguf

        return gguf.GGMLQuantizationType(self._tensors[name].kind).name

    @property
    def storage(self) -> str:
        """How the weights are stored, e.g. ``GGUF, Q4_1`` (the most common type of its matrices), noting dequantisation."""
        counts = collections.Counter(self._kind(name) for name, info in self._tensors.items() if len(info.shape) > 1)
        kind = counts.most_common(1)[0][0] if counts else "no matrices"
        return f"GGUF, {kind}" + ("" if kind in ("F32", "F16", "BF16") else ", dequantised to float32 on reading")

    @property
    def dtype(self) -> np.dtype:
        """float32 (dequantized), or the file's own float16 / bfloat16 when the embedding is stored so."""
        kind = self._kind("token_embd.weight") if "token_embd.weight" in self._tensors else "F32"
        return resolve_dtype({"F16": "float16", "BF16": "bfloat16"}.get(kind, "float32"), None)
