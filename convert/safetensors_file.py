"""Memory-mapped access to ``.safetensors`` files, tensor by tensor.

safetensors' own numpy backend cannot return bfloat16, and its flax backend reads each
tensor into a new array; here each tensor is a zero-copy view of a read-only memory map
(bf16 through ``ml_dtypes``), so only the pages actually read are brought into memory.
The file format (an 8-byte little-endian header length, a JSON header, then raw data)
is checked in full before any tensor is handed out, so a truncated file fails loudly.
"""

from __future__ import annotations

import json
import math
import mmap
from pathlib import Path

import numpy as np

from circuits.convert.dtypes import resolve_dtype
from circuits.convert.read_ahead import read_ahead
from circuits.models.config import is_whole_number

DTYPES = {"F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16"}
"""The floating-point dtypes weights may have, by their safetensors names (integer, boolean and 8-bit float
tensors are refused)."""

MAX_HEADER_BYTES = 100_000_000  # the reference implementation's limit


def _is_size(value) -> bool:
    return is_whole_number(value) and value >= 0


def _entry_problems(name: str, entry) -> list[str]:
    """What is wrong with one header entry's types (nothing when it has a dtype string, a shape of counts and
    two byte offsets)."""
    if not isinstance(entry, dict):
        return [f"tensor {name}: header entry is {type(entry).__name__}, not an object"]
    problems = []
    if set(entry) != {"dtype", "shape", "data_offsets"}:
        problems.append(f"tensor {name}: header entry has fields {sorted(entry)}, not dtype, shape and data_offsets")
    dtype, shape, offsets = entry.get("dtype"), entry.get("shape"), entry.get("data_offsets")
    if not isinstance(dtype, str):
        problems.append(f"tensor {name}: dtype {dtype!r} is not a string")
    elif dtype not in DTYPES:
        problems.append(f"tensor {name}: dtype {dtype} is not a floating-point weight type ({', '.join(DTYPES)})")
    if not isinstance(shape, list) or not all(_is_size(n) for n in shape):
        problems.append(f"tensor {name}: shape {shape!r} is not a list of non-negative integers")
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_size(n) for n in offsets) or offsets[0] > offsets[1]:
        problems.append(f"tensor {name}: data_offsets {offsets!r} is not [begin, end] with 0 <= begin <= end")
    return problems


class SafetensorsFile:
    """One ``.safetensors`` file. ``problems`` lists what is wrong with it (empty when sound)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.problems: list[str] = []
        self.entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        self._data: np.memmap | None = None
        self._read_header()

    def _read_header(self) -> None:
        """Validate the whole file as strictly as the reference implementation: a JSON object of typed entries
        whose byte ranges tile the data section exactly (no gap, overlap, reordering or trailing byte)."""
        size = self.path.stat().st_size
        with open(self.path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                self.problems.append(f"{self.path.name}: {size} bytes, too short for a safetensors header (truncated)")
                return
            header_len = int.from_bytes(prefix, "little")
            if header_len > MAX_HEADER_BYTES or 8 + header_len > size:
                self.problems.append(
                    f"{self.path.name}: header claims {header_len} bytes but the file has {size} (truncated or not safetensors)"
                )
                return
            try:
                header = json.loads(handle.read(header_len))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as err:
                self.problems.append(f"{self.path.name}: header is not valid JSON ({str(err)[:100]}); the file is corrupt")
                return
        if not isinstance(header, dict):
            self.problems.append(f"{self.path.name}: header is a JSON {type(header).__name__}, not an object; the file is corrupt")
            return
        metadata = header.pop("__metadata__", {})
        if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
            self.problems.append(f"{self.path.name}: __metadata__ is not a map of strings; the file is corrupt")
        problems = [problem for name, entry in header.items() for problem in _entry_problems(name, entry)]
        if problems:
            self.problems += [f"{self.path.name}: {problem}" for problem in problems]
            return
        data_start, data_size = 8 + header_len, size - 8 - header_len
        position = 0
        for name, entry in sorted(header.items(), key=lambda item: tuple(item[1]["data_offsets"])):
            dtype, shape = resolve_dtype(DTYPES[entry["dtype"]], None), tuple(entry["shape"])
            begin, end = entry["data_offsets"]
            if begin != position:
                self.problems.append(f"{self.path.name}: tensor {name} starts at byte {begin}, not {position} where the previous "
                                     "one ends (overlapping or missing data); the file is corrupt")
                break
            if end - begin != math.prod(shape) * dtype.itemsize:
                self.problems.append(
                    f"{self.path.name}: tensor {name} spans {end - begin} bytes but its shape {shape} needs "
                    f"{math.prod(shape) * dtype.itemsize}; the file is corrupt"
                )
                break
            self.entries[name] = (dtype, shape, data_start + begin, data_start + end)
            position = end
        else:
            if position < data_size:
                self.problems.append(f"{self.path.name}: {data_size - position} bytes after the last tensor; the file is corrupt")
            elif position > data_size:
                self.problems.append(
                    f"{self.path.name}: tensors need {data_start + position} bytes but the file has {size}: truncated (download it again)"
                )
        if self.problems:
            self.entries.clear()

    def shape(self, name: str) -> tuple[int, ...]:
        return self.entries[name][1]

    def dtype(self, name: str) -> np.dtype:
        return self.entries[name][0]

    def release_pages(self) -> None:
        """Drop this process's mapping of the pages read so far (they stay in the page cache and are
        faulted back in on demand), so streaming a large file does not accumulate resident memory."""
        if self._data is not None:
            self._data._mmap.madvise(mmap.MADV_DONTNEED)

    def _mapped(self) -> np.memmap:
        if self._data is None:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        return self._data

    def tensor(self, name: str) -> np.ndarray:
        """A read-only zero-copy view of tensor ``name``."""
        dtype, shape, begin, end = self.entries[name]
        return self._mapped()[begin:end].view(dtype).reshape(shape)

    def read_ahead(self, name: str) -> None:
        """Start reading tensor ``name``'s bytes in the background (:func:`~circuits.convert.read_ahead.read_ahead`)."""
        _, _, begin, end = self.entries[name]
        read_ahead(self._mapped()._mmap, begin, end)
