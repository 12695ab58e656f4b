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

import ml_dtypes
import numpy as np

DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype(np.float64),
    "F32": np.dtype(np.float32),
    "F16": np.dtype(np.float16),
    "BF16": np.dtype(ml_dtypes.bfloat16),
    "I64": np.dtype(np.int64),
    "I32": np.dtype(np.int32),
    "I16": np.dtype(np.int16),
    "I8": np.dtype(np.int8),
    "U8": np.dtype(np.uint8),
    "BOOL": np.dtype(np.bool_),
}


class SafetensorsFile:
    """One ``.safetensors`` file. ``problems`` lists what is wrong with it (empty when sound)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.problems: list[str] = []
        self.entries: dict[str, tuple[np.dtype, tuple[int, ...], int, int]] = {}
        self._data: np.memmap | None = None
        self._read_header()

    def _read_header(self) -> None:
        size = self.path.stat().st_size
        with open(self.path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                self.problems.append(f"{self.path.name}: {size} bytes, too short for a safetensors header (truncated)")
                return
            header_len = int.from_bytes(prefix, "little")
            if 8 + header_len > size:
                self.problems.append(
                    f"{self.path.name}: header claims {header_len} bytes but the file has {size} (truncated or not safetensors)"
                )
                return
            try:
                header = json.loads(handle.read(header_len))
            except (UnicodeDecodeError, json.JSONDecodeError) as err:
                self.problems.append(f"{self.path.name}: header is not valid JSON ({err}); the file is corrupt")
                return
        header.pop("__metadata__", None)
        data_start = 8 + header_len
        data_end = data_start
        for name, entry in header.items():
            dtype = DTYPES.get(entry.get("dtype"))
            if dtype is None:
                self.problems.append(f"{self.path.name}: tensor {name} has unsupported dtype {entry.get('dtype')}")
                continue
            shape = tuple(int(n) for n in entry["shape"])
            begin, end = (int(n) for n in entry["data_offsets"])
            if end - begin != math.prod(shape) * dtype.itemsize:
                self.problems.append(
                    f"{self.path.name}: tensor {name} spans {end - begin} bytes but its shape {shape} needs "
                    f"{math.prod(shape) * dtype.itemsize}; the file is corrupt"
                )
                continue
            self.entries[name] = (dtype, shape, data_start + begin, data_start + end)
            data_end = max(data_end, data_start + end)
        if data_end > size:
            self.problems.append(
                f"{self.path.name}: tensors need {data_end} bytes but the file has {size}: truncated (download it again)"
            )
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

    def tensor(self, name: str) -> np.ndarray:
        """A read-only zero-copy view of tensor ``name``."""
        if self._data is None:
            self._data = np.memmap(self.path, dtype=np.uint8, mode="r")
        dtype, shape, begin, end = self.entries[name]
        return self._data[begin:end].view(dtype).reshape(shape)
