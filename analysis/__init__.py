"""Weight-only circuit scores (OV, QK, composition, predicted induction circuits) and forward-pass scores.

The names a notebook reaches for first, imported lazily (``circuits.analysis.predict_induction``)::

    predict_induction, ov_copying_scores, composition_scores, composition_tensors,
    prefix_matching_scores, previous_token_scores, duplicate_token_scores, attention_scores,
    copying_scores, sweep_losses, one_head_each, repeated_random_tokens, rope_average
"""

from __future__ import annotations

import importlib

_PUBLIC = {
    "predict_induction": "induction",
    "InductionPrediction": "induction",
    "ov_copying_scores": "ov",
    "composition_scores": "composition",
    "composition_tensors": "composition",
    "attention_scores": "attention_scores",
    "prefix_matching_scores": "attention_scores",
    "previous_token_scores": "attention_scores",
    "duplicate_token_scores": "attention_scores",
    "copying_scores": "attention_scores",
    "sweep_losses": "ablation",
    "one_head_each": "ablation",
    "repeated_random_tokens": "repeated_tokens",
    "rope_average": "rope_average",
}

__all__ = sorted(_PUBLIC)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(f"circuits.analysis.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module 'circuits.analysis' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_PUBLIC))
