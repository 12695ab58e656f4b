"""Serialising results: JSON-ready dicts and all-or-nothing file writes."""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from circuits.analysis.induction import InductionPrediction

SCHEMA_VERSION = 2


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file in the same directory, then rename: never half-written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".partial")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_files(directory: str | Path, files: dict[str, str | bytes]) -> Path:
    """Write ``files`` {name: text or bytes} into ``directory``, all or nothing: rendered into a staging
    directory beside it first, then moved into place."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.partial-"))
    try:
        for name, content in files.items():
            if isinstance(content, bytes):
                (staging / name).write_bytes(content)
            else:
                (staging / name).write_text(content, encoding="utf-8")
        if not directory.exists():
            os.replace(staging, directory)
            return directory
        for name in files:
            os.replace(staging / name, directory / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return directory


def rounded_list(array: np.ndarray) -> list:
    """A float array as nested lists, NaN as 0, rounded to 6 decimals (JSON-ready)."""
    return np.round(np.nan_to_num(np.asarray(array, np.float64), nan=0.0), 6).tolist()


def prediction_to_dict(prediction: InductionPrediction, model_name: str) -> dict:
    """A versioned, JSON-ready summary of a weight-only induction prediction."""
    return {
        "schema_version": SCHEMA_VERSION,
        "model": model_name,
        "method": prediction.method,
        "settings": dataclasses.asdict(prediction.settings),
        "preprocessing": dataclasses.asdict(prediction.preprocessing),
        "ov_copying": rounded_list(prediction.ov_copying.scores),
        "predicted_induction": rounded_list(prediction.predicted_induction.scores),
        "source_heads": prediction.source_heads.tolist(),
        "k_composition_baseline": {
            "mean": prediction.k_composition.baseline_mean,
            "std": prediction.k_composition.baseline_std,
        },
        "edges": [dataclasses.asdict(edge) for edge in prediction.edges],
    }
