"""A checkpoint read through a name table: validation and canonical tensors, format-agnostic.

Subclasses (HF safetensors, GGUF) supply the config, the name table, the stored shapes
and a function that reads one stored tensor; this class checks that every expected
tensor is present with the right shape and nothing unexpected is there, then cuts
stored tensors into canonical ones on demand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from circuits.convert.errors import CheckpointError
from circuits.convert.layout import TensorRule
from circuits.models.config import ModelConfig
from circuits.models.layout import canonical_shape, expected_params


def _check_layer_count(source, config: ModelConfig, rules, stored_shapes: dict, problems: list[str], fix: str, config_name: str) -> None:
    """Refuse at once a config that claims more layers than the files can hold, before any per-layer name is
    listed (a config claiming 10^8 layers must cost nothing)."""
    per_layer = [r for r in rules if r.per_layer]
    if not per_layer or config.n_layers <= len(stored_shapes):
        return
    found = 0
    while found < len(stored_shapes) and per_layer[0].stored_name.format(i=found) in stored_shapes:
        found += 1
    raise CheckpointError(source, problems + [f"the {config_name} claims {config.n_layers} layers, but the files hold "
                                              f"{len(stored_shapes)} tensors (layers 0 to {found - 1} found)"], fix)


class TableCheckpoint:
    """Canonical tensors of a checkpoint whose stored tensors a name table describes.

    Construction validates names and shapes and raises one :class:`CheckpointError` listing
    every problem (together with ``problems`` found earlier by the subclass); no tensor data
    is read until :meth:`tensor`.
    """

    def __init__(
        self,
        source: str | Path,
        config: ModelConfig,
        rules: tuple[TensorRule, ...],
        stored_shapes: dict[str, tuple[int, ...]] | None,
        read: Callable[[str], np.ndarray],
        problems: list[str],
        fix: str,
        optional: tuple[str, ...] = (),
        config_name: str = "config",
    ):
        """``stored_shapes``: {stored name: shape}, or None when the files were too broken to list;
        ``optional``: stored names (or suffixes) that may be present and are not read by the table;
        ``config_name``: where the config came from, for messages (``config.json``, ``GGUF metadata``)."""
        self.description = str(source)
        self._source, self._fix = source, fix
        self.config = config
        self._config_name = config_name
        self._read = read
        self._last: tuple[str, dict[str, np.ndarray]] | None = None
        global_names, layer_names = expected_params(config)
        wanted = set(global_names) | set(layer_names)
        self._producer: dict[str, TensorRule] = {}
        if stored_shapes is not None:
            _check_layer_count(source, config, rules, stored_shapes, problems, fix, config_name)
        expected: dict[str, TensorRule] = {}
        unused: set[str] = set()
        for tensor_rule in rules:
            stored = [tensor_rule.stored_name.format(i=i) for i in range(config.n_layers)] if tensor_rule.per_layer else [tensor_rule.stored_name]
            if wanted & set(tensor_rule.outputs):
                for output in tensor_rule.outputs:
                    self._producer[output] = tensor_rule
                expected.update(dict.fromkeys(stored, tensor_rule))
            else:
                unused.update(stored)  # e.g. lm_head.weight beside tied embeddings: ignored
        if stored_shapes is not None:
            problems = problems + self._check_names_and_shapes(stored_shapes, expected, unused, optional)
        if problems:
            raise CheckpointError(source, problems, fix)

    def _check_names_and_shapes(self, stored_shapes, expected, unused, optional) -> list[str]:
        problems = []
        for name in sorted(set(expected) - set(stored_shapes)):
            problems.append(f"missing tensor {name}")
        for name in sorted(set(stored_shapes) - set(expected) - unused):
            if not name.endswith(optional):
                problems.append(f"unexpected tensor {name} (not part of a {self.config.architecture} model with this config)")
        for name, tensor_rule in expected.items():
            if name in stored_shapes:
                want = tuple(tensor_rule.stored_shape(self.config))
                if tuple(stored_shapes[name]) != want:
                    problems.append(f"tensor {name} has shape {list(stored_shapes[name])}, expected {list(want)} from the {self._config_name}")
        return problems

    def _checked(self, stored: str) -> np.ndarray:
        """Stored tensor ``stored``, refused if it holds NaN or infinite values (each tensor is checked as it is
        read, so a streaming pass pays one extra scan of memory it reads anyway)."""
        return self._finite(stored, self._read(stored))

    def _finite(self, stored: str, array: np.ndarray) -> np.ndarray:
        finite = np.isfinite(array)
        if not finite.all():
            bad = int(finite.size - np.count_nonzero(finite))
            raise CheckpointError(self._source, [f"tensor {stored} holds {bad} NaN or infinite values"],
                                  "re-download or re-export the checkpoint; these weights cannot give meaningful scores")
        return array

    def tensor_block(self, name: str, layer: int | None, index: tuple[slice, ...]) -> np.ndarray:
        """Block ``index`` of canonical tensor ``name`` (of ``layer``), a new array: a memory-mapped stored tensor is
        cut as a view before anything is copied, so only the block's pages are read (what one process of a
        multi-process load needs); checked for NaN and infinite values like :meth:`tensor`."""
        tensor_rule = self._producer[name]
        stored = tensor_rule.stored_name.format(i=layer)
        view = tensor_rule.split(self._read(stored), self.config)[name]
        return self._finite(stored, np.array(view[index]))

    def vocab_rows(self, name: str, rows: slice | np.ndarray) -> np.ndarray:
        """Rows ``rows`` (a slice or token ids) of the stored [V, M] matrix behind canonical ``embed`` or ``unembed``
        (every family stores both vocabulary-major), a new array [v, M] checked for NaN and infinite values; only
        those rows are read (and dequantised), so a pass over the vocabulary never holds the whole matrix."""
        stored = self._producer[name].stored_name
        return self._finite(stored, np.array(self._read_rows(stored, rows)))

    def _read_rows(self, stored: str, rows: slice | np.ndarray) -> np.ndarray:
        """Rows of stored tensor ``stored``: cut from a memory-mapped read before anything is copied."""
        return self._read(stored)[rows]

    def read_ahead(self, names: Iterable[str], layer: int | None = None) -> None:
        """Start reading the stored tensors behind canonical ``names`` (of ``layer``) in the background where the
        format allows (memory-mapped files: the OS reads them ahead); nothing is copied or checked yet. A streaming
        pass asks for the next layer's tensors while it computes this one."""
        for stored in dict.fromkeys(self._producer[name].stored_name.format(i=layer) for name in names if name in self._producer):
            self._read_ahead(stored)

    def _read_ahead(self, stored: str) -> None:
        """Start reading stored tensor ``stored`` in the background; formats without memory-mapped data read on demand."""

    def tensor(self, name: str, layer: int | None = None) -> np.ndarray:
        """Canonical tensor ``name`` (of ``layer`` for per-layer parameters)."""
        tensor_rule = self._producer[name]
        stored = tensor_rule.stored_name.format(i=layer)
        if self._last is None or self._last[0] != stored:  # a fused tensor is read once for its outputs
            self._last = (stored, tensor_rule.split(self._checked(stored), self.config))
        array = self._last[1][name]
        expected = canonical_shape(name, self.config)
        if tuple(array.shape) != expected:
            raise AssertionError(f"name table bug: {name} came out as {array.shape}, expected {expected}")
        return array
