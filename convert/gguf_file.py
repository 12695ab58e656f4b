"""A GGUF file read in one bounded pass: metadata, tensor table, and memory-mapped tensor data.

Every length the file claims (strings, arrays, tensor counts and dimensions, tensor data) is
checked against the bytes that are left before anything is allocated or looped over, so a
128-byte file that claims 2^62 array items is refused at once instead of growing without bound.
Scalars and strings are decoded while walking; arrays are only located, and decoded when asked
for (a tokenizer's vocabulary is never touched by weight loading). Dequantisation and the
tensor-type tables come from the ``gguf`` package. Little-endian files only (all llama.cpp writes).
"""

from __future__ import annotations

import dataclasses
import math
import mmap
import struct
from pathlib import Path

import numpy as np

from circuits.convert.read_ahead import read_ahead

MAGIC = b"GGUF"
VERSIONS = (2, 3)
SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}  # value type -> struct code
SCALAR_SIZES = {kind: struct.calcsize("<" + code) for kind, code in SCALAR_FORMATS.items()}
STRING, ARRAY = 8, 9
MAX_ARRAY_ITEMS = 4_000_000  # a vocabulary or merge list is at most a few hundred thousand entries
MAX_DIMS = 8
ALIGNMENT_KEY = "general.alignment"


class GGUFStructureError(ValueError):
    """A GGUF file whose structure is damaged; the message says where."""


class _Cursor:
    def __init__(self, data, size: int):
        self.data, self.size, self.offset = data, size, 0

    def take(self, count: int, what: str) -> int:
        """Advance over ``count`` bytes of ``what``; refuse a claim beyond the end of the file."""
        if count < 0 or count > self.size - self.offset:
            raise GGUFStructureError(f"{what} at byte {self.offset} claims {count} bytes but only {self.size - self.offset} are left")
        start = self.offset
        self.offset += count
        return start

    def unpack(self, fmt: str, what: str):
        start = self.take(struct.calcsize(fmt), what)
        return struct.unpack_from("<" + fmt, self.data, start)[0]

    def string(self, what: str) -> bytes:
        length = self.unpack("Q", f"length of {what}")
        start = self.take(length, what)
        return bytes(self.data[start : start + length])


@dataclasses.dataclass(frozen=True)
class ArrayField:
    """A metadata array, located: ``count`` items of value type ``item_type`` starting at byte ``offset``."""

    item_type: int
    count: int
    offset: int


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor: numpy-order ``shape``, GGML ``kind``, and its data's absolute byte range."""

    shape: tuple[int, ...]
    kind: int
    offset: int
    n_bytes: int


def _read_value(cursor: _Cursor, kind: int, what: str, depth: int = 0):
    """Walk one metadata value of type ``kind``: scalars and strings are returned decoded, arrays located."""
    if kind in SCALAR_SIZES:
        return cursor.unpack(SCALAR_FORMATS[kind], what)
    if kind == STRING:
        return cursor.string(what).decode("utf-8", errors="replace")
    if kind != ARRAY or depth > 1:
        raise GGUFStructureError(f"{what} has unknown value type {kind}" if kind != ARRAY else f"{what} nests arrays too deeply")
    item_kind = cursor.unpack("I", f"item type of {what}")
    count = cursor.unpack("Q", f"item count of {what}")
    if count > MAX_ARRAY_ITEMS:
        raise GGUFStructureError(f"{what} claims {count} items (at most {MAX_ARRAY_ITEMS} are accepted)")
    start = cursor.offset
    if item_kind in SCALAR_SIZES:
        cursor.take(count * SCALAR_SIZES[item_kind], what)
    elif item_kind == STRING:
        if count * 8 > cursor.size - cursor.offset:
            raise GGUFStructureError(f"{what} claims {count} strings but only {cursor.size - cursor.offset} bytes are left")
        for _ in range(count):
            cursor.take(cursor.unpack("Q", f"length of an item of {what}"), f"an item of {what}")
    else:
        if count > cursor.size - cursor.offset:
            raise GGUFStructureError(f"{what} claims {count} items but only {cursor.size - cursor.offset} bytes are left")
        for _ in range(count):
            _read_value(cursor, item_kind, f"an item of {what}", depth + 1)
    return ArrayField(item_kind, count, start)


class GGUFFile:
    """A GGUF file's metadata (``metadata``: scalars and strings decoded, arrays as :class:`ArrayField`),
    tensor table (``tensors``) and memory-mapped data; raises :class:`GGUFStructureError` for damage."""

    def __init__(self, path: str | Path, block_sizes: dict[int, tuple[int, int]]):
        self.path = Path(path)
        size = self.path.stat().st_size
        if size < 24:
            raise GGUFStructureError(f"{size} bytes, too short for a GGUF header")
        with open(self.path, "rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        cursor = _Cursor(self._map, size)
        if self._map[:4] != MAGIC:
            raise GGUFStructureError("no GGUF magic at the start (not a GGUF file)")
        cursor.take(4, "magic")
        version = cursor.unpack("I", "version")
        if version not in VERSIONS:
            raise GGUFStructureError(f"GGUF version {version} (versions {', '.join(map(str, VERSIONS))} are read)")
        n_tensors = cursor.unpack("Q", "tensor count")
        n_fields = cursor.unpack("Q", "metadata count")
        if n_fields * 12 > size or n_tensors * 28 > size:  # every field and tensor entry takes at least that many bytes
            raise GGUFStructureError(f"the header claims {n_fields} metadata fields and {n_tensors} tensors, more than {size} bytes can hold")
        self.metadata: dict[str, object] = {}
        for index in range(n_fields):
            name = cursor.string(f"the key of metadata field {index}").decode("utf-8", errors="replace")
            if name in self.metadata:
                raise GGUFStructureError(f"metadata {name} appears twice")
            self.metadata[name] = _read_value(cursor, cursor.unpack("I", f"the type of {name}"), f"metadata {name}")
        alignment = self.metadata.get(ALIGNMENT_KEY, 32)
        if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
            raise GGUFStructureError(f"{ALIGNMENT_KEY} = {alignment} is not a power of two")
        table = []
        for index in range(n_tensors):
            name = cursor.string(f"the name of tensor {index}").decode("utf-8", errors="replace")
            n_dims = cursor.unpack("I", f"the rank of tensor {name}")
            if n_dims > MAX_DIMS:
                raise GGUFStructureError(f"tensor {name} claims {n_dims} dimensions")
            dims = [cursor.unpack("Q", f"a dimension of tensor {name}") for _ in range(n_dims)]
            kind = cursor.unpack("I", f"the type of tensor {name}")
            offset = cursor.unpack("Q", f"the data offset of tensor {name}")
            if kind not in block_sizes:
                raise GGUFStructureError(f"tensor {name} has unknown type {kind}")
            block, block_bytes = block_sizes[kind]
            elements = math.prod(dims)
            if dims and dims[0] % block:
                raise GGUFStructureError(f"tensor {name} has rows of {dims[0]} elements, not a multiple of its block size {block}")
            table.append((name, tuple(reversed(dims)), kind, offset, elements // block * block_bytes))
        data_start = -(-cursor.offset // alignment) * alignment
        self.tensors: dict[str, TensorInfo] = {}
        for name, shape, kind, offset, n_bytes in table:
            if name in self.tensors:
                raise GGUFStructureError(f"tensor {name} appears twice")
            if data_start + offset + n_bytes > size:
                raise GGUFStructureError(f"tensor {name} needs bytes up to {data_start + offset + n_bytes} but the file has {size} (truncated)")
            self.tensors[name] = TensorInfo(shape, kind, data_start + offset, n_bytes)

    def array(self, key: str) -> list | None:
        """Metadata array ``key`` decoded (strings as ``str``, numbers as Python numbers), or None if absent."""
        field = self.metadata.get(key)
        if not isinstance(field, ArrayField):
            return None
        if field.item_type in SCALAR_FORMATS:
            return np.frombuffer(self._map, "<" + SCALAR_FORMATS[field.item_type], field.count, field.offset).tolist()
        if field.item_type != STRING:
            raise GGUFStructureError(f"metadata {key} is an array of arrays")
        cursor = _Cursor(self._map, len(self._map))
        cursor.offset = field.offset
        return [cursor.string(f"an item of {key}").decode("utf-8", errors="replace") for _ in range(field.count)]

    def read_ahead(self, name: str) -> None:
        """Start reading tensor ``name``'s bytes in the background (:func:`~circuits.convert.read_ahead.read_ahead`)."""
        info = self.tensors[name]
        read_ahead(self._map, info.offset, info.offset + info.n_bytes)

    def raw(self, name: str, byte_shape) -> np.ndarray:
        """Tensor ``name``'s bytes as a read-only uint8 array in rows of its stored blocks (``byte_shape`` maps
        the numpy-order shape and type to that byte shape), as the ``gguf`` package's dequantisers take them."""
        info = self.tensors[name]
        return np.frombuffer(self._map, np.uint8, info.n_bytes, info.offset).reshape(byte_shape(info.shape, info.kind))
