"""A bounded walk over a GGUF file's structure before the ``gguf`` package parses it.

Every length the file claims (strings, arrays, tensor counts and dimensions, tensor data) is
checked against the bytes that are left before anything is allocated or looped over, so a
128-byte file that claims 2^62 array items is refused at once instead of growing without bound.
Little-endian files only (all that llama.cpp writes).
"""

from __future__ import annotations

import math
import mmap
import struct
from pathlib import Path

MAGIC = b"GGUF"
VERSIONS = (2, 3)
SCALAR_SIZES = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}  # value type -> bytes
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


def _skip_value(cursor: _Cursor, kind: int, what: str, depth: int = 0):
    """Walk one metadata value of type ``kind``; returns its value for scalars and strings (else None)."""
    if kind in SCALAR_SIZES:
        start = cursor.take(SCALAR_SIZES[kind], what)
        if kind in (4, 10):  # u32 / u64: the alignment, for instance
            return struct.unpack_from("<I" if kind == 4 else "<Q", cursor.data, start)[0]
        return None
    if kind == STRING:
        return cursor.string(what)
    if kind != ARRAY or depth > 1:
        raise GGUFStructureError(f"{what} has unknown value type {kind}" if kind != ARRAY else f"{what} nests arrays too deeply")
    item_kind = cursor.unpack("I", f"item type of {what}")
    count = cursor.unpack("Q", f"item count of {what}")
    if count > MAX_ARRAY_ITEMS:
        raise GGUFStructureError(f"{what} claims {count} items (at most {MAX_ARRAY_ITEMS} are accepted)")
    if item_kind in SCALAR_SIZES:
        cursor.take(count * SCALAR_SIZES[item_kind], what)
    elif item_kind == STRING:
        cursor.take(0, what)
        if count * 8 > cursor.size - cursor.offset:
            raise GGUFStructureError(f"{what} claims {count} strings but only {cursor.size - cursor.offset} bytes are left")
        for _ in range(count):
            cursor.string(f"an item of {what}")
    else:
        if count > cursor.size - cursor.offset:
            raise GGUFStructureError(f"{what} claims {count} items but only {cursor.size - cursor.offset} bytes are left")
        for _ in range(count):
            _skip_value(cursor, item_kind, f"an item of {what}", depth + 1)
    return None


def check_gguf_structure(path: str | Path, block_sizes: dict[int, tuple[int, int]]) -> None:
    """Walk the header, metadata and tensor table of ``path``; raise :class:`GGUFStructureError` at the first
    length that does not fit in the file. ``block_sizes``: {tensor type: (elements per block, bytes per block)}."""
    path = Path(path)
    size = path.stat().st_size
    if size < 24:
        raise GGUFStructureError(f"{size} bytes, too short for a GGUF header")
    with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        cursor = _Cursor(data, size)
        if data[:4] != MAGIC:
            raise GGUFStructureError("no GGUF magic at the start (not a GGUF file)")
        cursor.take(4, "magic")
        version = cursor.unpack("I", "version")
        if version not in VERSIONS:
            raise GGUFStructureError(f"GGUF version {version} (versions {', '.join(map(str, VERSIONS))} are read)")
        n_tensors = cursor.unpack("Q", "tensor count")
        n_fields = cursor.unpack("Q", "metadata count")
        if n_fields * 12 > size or n_tensors * 28 > size:  # every field and tensor entry takes at least that many bytes
            raise GGUFStructureError(f"the header claims {n_fields} metadata fields and {n_tensors} tensors, more than {size} bytes can hold")
        alignment = 32
        for index in range(n_fields):
            key = cursor.string(f"the key of metadata field {index}")
            name = key.decode("utf-8", errors="replace")
            value = _skip_value(cursor, cursor.unpack("I", f"the type of {name}"), f"metadata {name}")
            if name == ALIGNMENT_KEY and isinstance(value, int):
                alignment = value
        if alignment <= 0 or alignment & (alignment - 1):
            raise GGUFStructureError(f"{ALIGNMENT_KEY} = {alignment} is not a power of two")
        extents = []
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
            if elements % block:
                raise GGUFStructureError(f"tensor {name} has {elements} elements, not a multiple of its block size {block}")
            extents.append((name, offset, elements // block * block_bytes))
        data_start = -(-cursor.offset // alignment) * alignment
        for name, offset, length in extents:
            if data_start + offset + length > size:
                raise GGUFStructureError(f"tensor {name} needs bytes up to {data_start + offset + length} but the file has {size} (truncated)")
